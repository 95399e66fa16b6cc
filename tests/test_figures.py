"""`bench figure maps|strength|attention-degree` and the example maps the runner saves (issue #28)."""
import numpy as np
import pytest

from robustad.bench.cli import build_parser, cmd_attention_degree, main
from robustad.bench.results.example_maps import load_examples
from robustad.bench.report.strength_figure import strength_points
from tests.report_records import TINY, crafted, write_records

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tiny_run(tiny_report_run):
    return tiny_report_run


def test_runner_saves_two_anomalous_and_two_normal_examples_inside_the_threat_model(tiny_run):
    results, records = tiny_run
    for record in records:
        assert record.examples == f"examples/{record.cell_id}.npz"
        arrays = load_examples(results / record.examples)
        assert arrays["labels"].tolist() == [1, 1, 0, 0]
        assert arrays["images"].dtype == np.uint8 and arrays["images"].shape == (4, 32, 32, 3)
        assert arrays["clean_maps"].dtype == np.float16 and arrays["clean_maps"].shape == (4, 32, 32)
        assert arrays["masks"][:2].any(axis=(1, 2)).all() and not arrays["masks"][2:].any()
        change = np.abs(arrays["adversarial_images"].astype(int) - arrays["images"].astype(int))
        assert change.max() <= 8 + 1  # ε = 8/255, plus the uint8 rounding
        assert change.max() >= 4  # the attack moved the pixels
        assert not np.array_equal(arrays["clean_maps"], arrays["adversarial_maps"])


def test_examples_of_one_model_are_the_same_images_whatever_the_attack(tiny_run):
    results, records = tiny_run
    alpha = [load_examples(results / r.examples) for r in records if r.category == "alpha"]
    for arrays in alpha[1:]:
        assert np.array_equal(arrays["images"], alpha[0]["images"])
        assert np.array_equal(arrays["clean_maps"], alpha[0]["clean_maps"])


def test_figure_maps_writes_png_and_pdf(tiny_run, tmp_path, capsys):
    results, _ = tiny_run
    code = main(["figure", "maps", "--method", TINY, "--dataset", "mvtec", "--category", "beta", "--attack", "pgd",
                 "--steps", "3", "--results", str(results), "--out", str(tmp_path / "fig1")])
    assert code == 0
    assert (tmp_path / "fig1.png").read_bytes().startswith(PNG)
    assert (tmp_path / "fig1.pdf").read_bytes().startswith(b"%PDF")
    assert str(tmp_path / "fig1.png") in capsys.readouterr().out


def test_figure_maps_says_what_is_missing(tiny_run, tmp_path, capsys):
    results, records = tiny_run
    assert main(["figure", "maps", "--method", TINY, "--dataset", "mvtec", "--category", "gamma", "--attack", "pgd",
                 "--results", str(results)]) == 2
    assert "no done record matches" in capsys.readouterr().err
    old = write_records(tmp_path, [crafted(records[0], suffix="-old", examples=None)])
    assert main(["figure", "maps", "--method", TINY, "--dataset", "mvtec", "--category", "alpha", "--attack", "fgsm",
                 "--results", str(old)]) == 2
    assert "name no example maps" in capsys.readouterr().err


def test_strength_points_are_the_category_means_of_the_records(tiny_run):
    _, records = tiny_run
    lines = strength_points(records, "al", "steps")
    assert len(lines) == 1  # PGD at 1 and 3 steps; FGSM has no step count
    (label, points), = lines.items()
    assert "PGD" in label and [p[0] for p in points] == [1, 3]
    for steps, mean, count in points:
        values = [r.adversarial.pixel_auroc for r in records if r.attack == "pgd" and r.steps == steps]
        assert count == 2 and mean == pytest.approx(sum(values) / 2)
    assert strength_points(records, "al", "eps") == {}  # one ε only: no trend to draw


def test_figure_strength_writes_png_and_pdf_or_says_why_not(tiny_run, tmp_path, capsys):
    results, records = tiny_run
    assert main(["figure", "strength", "--results", str(results), "--task", "al", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s.png").read_bytes().startswith(PNG) and (tmp_path / "s.pdf").stat().st_size > 0
    assert main(["figure", "strength", "--results", str(results), "--attack", "fgsm"]) == 2
    assert "two or more step counts or budgets" in capsys.readouterr().err


def test_attention_degree_is_also_a_figure():
    parser = build_parser()
    old = parser.parse_args(["attention-degree", "--dataset", "mvtec", "--layer", "-2"])
    new = parser.parse_args(["figure", "attention-degree", "--dataset", "mvtec", "--layer", "-2"])
    assert old.func is new.func is cmd_attention_degree
    assert {k: v for k, v in vars(old).items() if k != "command"} == \
        {k: v for k, v in vars(new).items() if k not in ("command", "figure_command")}
