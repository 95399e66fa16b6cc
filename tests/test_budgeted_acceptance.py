"""benchmarks/budgeted_acceptance.py: the epochs it chooses so that every variant trains and is evaluated in time."""
import pytest

from tests.benchmark_scripts import load_benchmark

TIMING = {"pseudo_s": 0.05, "attack_s": 0.32, "step_s": 0.4, "update_s": 0.08}  # seconds per optimizer step


def plan(budget_s, variants=("adv", "clean"), max_epochs=300):
    script = load_benchmark("budgeted_acceptance")
    return script.plan_epochs(TIMING, budget_s, list(variants), [20, 100], max_epochs, train_steps=10)


def test_a_large_budget_keeps_the_profiles_epochs():
    assert plan(1e6)["epochs"] == 300


def test_the_chosen_epochs_fit_the_budget_and_one_more_would_not():
    result = plan(500)
    assert 0 < result["epochs"] < 300
    evaluation = 2 * result["eval_s_per_variant"]
    assert result["epochs"] * result["epoch_s"] + evaluation <= 500
    assert (result["epochs"] + 1) * result["epoch_s"] + evaluation > 500


def test_the_clean_variant_costs_epochs_and_a_cheaper_step_than_the_adversarial_one():
    both, adversarial = plan(500), plan(500, variants=("adv",))
    assert adversarial["epochs"] > both["epochs"]
    clean_epoch = both["epoch_s"] - adversarial["epoch_s"]
    assert 0 < clean_epoch < adversarial["epoch_s"]


def test_a_budget_below_the_evaluations_gives_no_epochs():
    assert plan(10)["epochs"] == 0


def test_epochs_in_the_overrides_are_refused(tmp_path, monkeypatch, capsys):
    script = load_benchmark("budgeted_acceptance")
    monkeypatch.setattr("sys.argv", ["budgeted_acceptance.py", "--budget-s", "60", "--out", str(tmp_path),
                                     "--set", "epochs=5"])
    with pytest.raises(SystemExit):
        script.main()
    assert "--set epochs" in capsys.readouterr().err
