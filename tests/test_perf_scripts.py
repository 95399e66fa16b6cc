"""The performance scripts of issue #30: the scaling fit recovers known exponents, and the GPU check
script runs end to end in its tiny CPU mode, writing every step's JSON."""
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
