"""End-to-end runner tests on the tiny detector and a generated MVTec-layout tree."""
import json

import pytest

from robustad.attacks import ATTACKS, Attack, ThreatModelViolation, register_attack
from robustad.bench.cli import main
from robustad.bench.results.records import Record, read_record
from robustad.bench.runner import CellSpec, run_cell, run_cells

TINY = "tests.tiny_detector:TinyDetector"


class CheatingAttack(Attack):
    """Leaves the ε-ball on purpose (the runner must catch it)."""

    name = "test-cheat"

    def perturb(self, objective, images):
        return (images + 3 * self.threat.eps).clamp(0, 1)


@pytest.fixture
def cheating_attack():
    """Registered for one test only, so it never joins other tests' parametrization over ATTACKS."""
    register_attack("test-cheat")(CheatingAttack)
    yield "test-cheat"
    ATTACKS.unregister("test-cheat")


def spec(root, category="alpha", attack="pgd", **kw):
    return CellSpec(method=TINY, dataset="mvtec", category=category, attack=attack, root=str(root),
                    steps=kw.pop("steps", 5), **kw)


def test_bench_run_writes_one_record(mvtec_root, tmp_path, capsys):
    code = main(["run", "--method", TINY, "--dataset", "mvtec", "--root", str(mvtec_root), "--category", "alpha",
                 "--attack", "pgd", "--steps", "10", "--results", str(tmp_path)])
    assert code == 0
    files = list((tmp_path / "records").glob("*.json"))
    assert len(files) == 1
    record = Record.from_json(json.loads(files[0].read_text()))
    assert record.error is None
    assert record.method == TINY and record.category == "alpha" and record.steps == 10
    assert record.n_test == record.n_test_normal + record.n_test_anomalous == 12
    for block in ("clean", "adversarial"):
        metrics = vars(getattr(record, block))
        assert {"image_auroc", "pixel_auroc", "pixel_aupro"} <= set(metrics)
        assert all(value is None for key, value in metrics.items() if key.endswith(("_std", "_worst", "evaluations")))
    assert record.clean.pixel_auroc > 75
    assert record.adversarial.pixel_auroc < record.clean.pixel_auroc - 15
    assert len(record.checkpoint_sha256) == 64
    assert record.checks["inside_threat_model"] is True
    assert "torch" in record.versions
    assert "pixel" in capsys.readouterr().out.lower()


def test_long_profile_falls_back_to_the_quick_preset_and_is_recorded(mvtec_root, tmp_path):
    from robustad.methods import create_method

    # the tiny detector has quick and paper presets only: long uses quick's, and the record says long
    assert create_method(TINY, profile="long").config == create_method(TINY, profile="quick").config
    record = run_cell(spec(mvtec_root, profile="long"), results=tmp_path)
    assert record.error is None and record.profile == "long"
    assert record.config == run_cell(spec(mvtec_root, profile="quick"), results=tmp_path).config
    with pytest.raises(ValueError, match="profile 'longer'; expected one of: paper, quick, long"):
        run_cell(spec(mvtec_root, profile="longer"), results=tmp_path)


def test_rerun_skips_done_cells_and_reuses_checkpoint(mvtec_root, tmp_path):
    first = run_cell(spec(mvtec_root), results=tmp_path)
    again = run_cell(spec(mvtec_root), results=tmp_path)
    assert again.created == first.created  # skipped, not recomputed
    forced = run_cell(spec(mvtec_root), results=tmp_path, force=True)
    assert forced.created != first.created
    assert forced.seconds["checkpoint_reused"] is True
    assert forced.checkpoint_sha256 == first.checkpoint_sha256
    assert forced.clean == first.clean


def test_interrupted_grid_resumes_without_loss_or_duplicates(mvtec_root, tmp_path):
    specs = [spec(mvtec_root, "alpha"), spec(mvtec_root, "beta")]

    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cells(specs, results=tmp_path, on_record=interrupt)
    done = list((tmp_path / "records").glob("*.json"))
    assert len(done) == 1
    kept = read_record(done[0])
    seen = []
    run_cells(specs, results=tmp_path, log=seen.append)
    files = sorted((tmp_path / "records").iterdir())
    assert len(files) == 2 and all(f.suffix == ".json" for f in files)  # no temp files left
    assert read_record(done[0]).created == kept.created
    assert any("skipping" in line for line in seen)


def test_cheating_attack_fails_the_cell_loudly_and_grid_goes_on(mvtec_root, tmp_path, cheating_attack):
    with pytest.raises(ThreatModelViolation):
        run_cell(spec(mvtec_root, attack="test-cheat"), results=tmp_path)
    records = run_cells([spec(mvtec_root, attack="test-cheat"), spec(mvtec_root)], results=tmp_path)
    assert "ThreatModelViolation" in records[0].error
    assert records[1].error is None
    stored = read_record(tmp_path / "records" / f"{records[0].cell_id}.json")
    assert stored.error and stored.adversarial is None


def test_unknown_config_key_lists_valid_fields(mvtec_root, tmp_path, capsys):
    code = main(["run", "--method", TINY, "--dataset", "mvtec", "--root", str(mvtec_root), "--category", "alpha",
                 "--results", str(tmp_path), "--config", "no_such_field=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no_such_field" in err and "width" in err
    assert not (tmp_path / "records").exists()  # failed before any work


def test_config_override_changes_checkpoint_and_record(mvtec_root, tmp_path):
    record = run_cell(spec(mvtec_root, config=(("width", "8"),)), results=tmp_path)
    assert record.config["width"] == 8 and record.config_overrides == {"width": 8}
    base = run_cell(spec(mvtec_root), results=tmp_path)
    assert base.checkpoint_sha256 != record.checkpoint_sha256


@pytest.mark.parametrize("bad", ["-1", "abc", "1/0"])
def test_bad_eps_is_rejected(bad, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--method", TINY, "--dataset", "mvtec", "--eps", bad])
    assert "--eps" in capsys.readouterr().err


def test_unknown_names_list_valid_ones(mvtec_root, capsys):
    base = ["--root", str(mvtec_root), "--category", "alpha"]
    assert main(["run", "--method", "nope", "--dataset", "mvtec", *base]) == 2
    assert "valid methods" in capsys.readouterr().err
    assert main(["run", "--method", TINY, "--dataset", "mvtec", "--attack", "nope", *base]) == 2
    assert "valid attacks: " in capsys.readouterr().err
    assert main(["run", "--method", TINY, "--dataset", "nope"]) == 2
    assert "valid datasets" in capsys.readouterr().err


def test_missing_root_names_path_and_layout(tmp_path, capsys):
    assert main(["run", "--method", TINY, "--dataset", "mvtec", "--root", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "absent") in err and "ground_truth" in err


def test_profile_steps_apply_to_gradient_attacks_only():
    def steps(attack, profile="quick", **kw):
        return CellSpec(method=TINY, dataset="mvtec", category="alpha", attack=attack, profile=profile, **kw).resolved_steps()

    assert steps("pgd") == 20 and steps("pgd", "paper") == 1000 and steps("sea", "paper") == 1000
    assert steps("pgd", "long") == 20  # long evaluates as quick does
    assert steps("pgd-50") is None and steps("fgsm") is None
    assert steps("simba") is None and steps("square", "paper") is None  # their own query budgets
    assert steps("simba", steps=300) == 300
