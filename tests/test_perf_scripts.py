"""The performance scripts of issue #30: the scaling fit recovers known exponents, the FLOP count
includes the CPU's attention kernels, and the GPU check script runs end to end in its tiny CPU
mode, writing every step's JSON."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmark_scripts import BENCHMARKS, load_benchmark


@pytest.fixture(scope="module")
def scaling():
    return load_benchmark("attack_scaling")


def test_fit_recovers_the_exponents_of_a_power_law(scaling):
    points = [{"images": n, "steps": s, "pixels": side**2, "seconds": 0.01 * n**0.9 * s**1.0 * (side**2)**1.2}
              for n, s, side in scaling.sweep_points([1, 2, 4, 8], [2, 4, 8], [16, 32, 64], (2, 4, 32))]
    fit = scaling.fit_exponents(points, "seconds")
    assert fit["a"] == pytest.approx(0.9) and fit["b"] == pytest.approx(1.0) and fit["c"] == pytest.approx(1.2)
    assert fit["r2"] == pytest.approx(1.0)
    base = {"images": 2, "steps": 4, "pixels": 32**2}
    slopes = scaling.local_slopes(points, "images", base, "seconds")
    assert [s["slope"] for s in slopes] == pytest.approx([0.9] * 3)


def test_a_factor_that_never_varies_has_no_exponent(scaling):
    points = [{"images": n, "steps": 5, "pixels": 64, "peak": 3.0 * n} for n in (1, 2, 4)]
    fit = scaling.fit_exponents(points, "peak")
    assert fit["a"] == pytest.approx(1.0) and fit["b"] is None and fit["c"] is None


def test_sweep_points_hold_the_other_factors_at_the_base(scaling):
    points = scaling.sweep_points([1, 4], [2, 8], [16, 32], (4, 2, 16))
    assert points == [(1, 2, 16), (4, 2, 16), (4, 8, 16), (4, 2, 32)]


def test_flop_count_includes_the_cpu_attention_kernels():
    import torch
    import torch.nn.functional as F

    throughput = load_benchmark("attack_throughput")
    b, heads, n, d = 2, 3, 16, 8
    q, k, v = (torch.randn(b, heads, n, d, requires_grad=True) for _ in range(3))
    forward = throughput.count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    both = throughput.count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    assert forward == 2 * (2 * b * heads * n * n * d)  # q·kᵀ and p·v
    assert both == forward + 5 * (2 * b * heads * n * n * d)  # the backward recomputes q·kᵀ: five matmuls


def test_step_bound_accounts_for_the_step(capsys):
    bound = load_benchmark("attack_step_bound")
    s = bound.main(["--profile", "quick", "--rounds", "1", "--matmul-repeats", "1", "--levers", "math_attention",
                    "--json"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(s))  # the printed object is the result
    flops = s["flops_gflop"]
    assert flops["ours"]["attention"] > 0 and flops["ours"]["linear"] > 0
    assert flops["official"]["linear"] > flops["ours"]["linear"]  # parameter gradients
    assert flops["official"]["attention"] == pytest.approx(flops["ours"]["attention"])
    assert s["equal_efficiency_ceiling"] == pytest.approx(flops["official"]["total"] / flops["ours"]["total"])
    assert sum(s["ours_profile_shares"].values()) == pytest.approx(1.0)
    assert sum(s["ours_profile_s"].values()) == pytest.approx(s["ours_s"])
    assert s["floor_s"] == pytest.approx(s["linear_matmuls_alone_s"] + s["attention_at_peak_s"])
    assert s["peak_ceiling"] == pytest.approx(s["official_s"] / s["floor_s"])
    assert sum(shape["count"] for shape in s["linear_shapes"]) > 0
    assert 0 <= s["levers"]["math_attention"]["gradient_signs_equal"] <= 1


def test_step_bound_refuses_an_unknown_lever(capsys):
    bound = load_benchmark("attack_step_bound")
    with pytest.raises(SystemExit):
        bound.parse_args(["--levers", "warp"])
    assert "--levers: unknown ['warp']" in capsys.readouterr().err


def test_gpu_check_tiny_mode_writes_every_measurement(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), str(tmp_path), "--tiny"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tiny"] is True and summary["device"] == "cpu"
    assert all(step["rc"] == 0 for name, step in summary["steps"].items() if name != "cuda_graph_tests")
    memory = json.loads((tmp_path / "memory_flat.json").read_text())
    assert set(memory["variants"]) == {"fp32_eager", "bf16_eager"}
    assert memory["max_growth_mib"] <= 0.01  # nothing left behind per batch
    pgd = json.loads((tmp_path / "pgd_category.json").read_text())
    assert set(pgd["variants"]) == {"fp32", "bf16"} and pgd["variants"]["fp32"]["pixel_auroc_delta"] == 0
    assert 0 <= pgd["variants"]["bf16"]["differing_pixels"] <= 1
    assert all(0 <= v["pixel_auroc"] <= 100 for v in pgd["variants"].values())  # AUROC in points
    train = json.loads((tmp_path / "train_precision.json").read_text())
    assert set(train["curve_differences"]) == {"bf16"} and train["bf16_speedup"] > 0
    curves = json.loads((tmp_path / "train_precision" / "train_precision.json").read_text())
    assert len(curves["runs"]["fp32"]["losses"]) == len(curves["runs"]["bf16"]["losses"]) == 7
    scaling = json.loads((tmp_path / "attack_scaling" / "attack_scaling.json").read_text())
    assert scaling["fit_time"]["a"] is not None and (tmp_path / "attack_scaling" / "attack_scaling.png").stat().st_size
    assert Path(tmp_path / "train_precision" / "train_precision.png").exists()
