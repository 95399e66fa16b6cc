"""benchmarks/budgeted_acceptance.py: the epochs it chooses so that every variant trains and is evaluated in time."""
import json

import pytest

from tests.benchmark_scripts import load_benchmark

TIMING = {"pseudo_s": 0.05, "attack_s": 0.32, "step_s": 0.4, "update_s": 0.08}  # seconds per optimizer step


def plan(budget_s, variants=("adv", "clean"), max_epochs=300, **options):
    script = load_benchmark("budgeted_acceptance")
    return script.plan_epochs(TIMING, budget_s, list(variants), [20, 100], max_epochs, train_steps=10, **options)


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


@pytest.mark.parametrize("option, named", [(["--set", "epochs=5"], "--set epochs"),
                                           (["--max-epochs", "-5"], "--max-epochs -5")])
def test_epochs_in_the_overrides_or_a_negative_cap_are_refused(tmp_path, monkeypatch, capsys, option, named):
    script = load_benchmark("budgeted_acceptance")
    monkeypatch.setattr("sys.argv", ["budgeted_acceptance.py", "--budget-s", "60", "--out", str(tmp_path), *option])
    with pytest.raises(SystemExit):
        script.main()
    assert named in capsys.readouterr().err


def test_max_epochs_replaces_the_profiles_cap_and_each_variant_runs_with_the_plan(tmp_path, monkeypatch):
    script = load_benchmark("budgeted_acceptance")
    commands = []

    def run_json(command, log):  # no subprocess: fit_time's timing, then one result per variant
        commands.append(command)
        if command[1].endswith("fit_time.py"):
            return [{"modes": {"none": TIMING}}]
        return [{"variant": command[command.index("--variants") + 1]}]

    monkeypatch.setattr(script, "run_json", run_json)
    monkeypatch.setattr(script, "preset", lambda profile, overrides: {"epochs": 300, "train_steps": 10,
                                                                       "batch_size": 16})
    monkeypatch.setattr("sys.argv", ["budgeted_acceptance.py", "--budget-s", "1e7", "--out", str(tmp_path),
                                     "--max-epochs", "1500", "--set", "train_precision=bf16"])
    script.main()
    assert commands[1][-2:] == ["train_precision=bf16", "epochs=1500"]
    assert [c[c.index("--variants") + 1] for c in commands[1:]] == ["adv", "clean"]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["variant"] for line in lines] == ["adv", "clean"]
    assert json.loads((tmp_path / "plan.json").read_text())["epochs"] == 1500



def test_each_seed_is_a_run_of_every_variant_and_the_reserve_is_kept_for_each_run():
    one, three = plan(2000), plan(2000, seeds=3)
    assert three["epoch_s"] == pytest.approx(3 * one["epoch_s"])
    assert three["runs"] == 6 and three["epochs"] < one["epochs"]
    reserved = plan(2000, seeds=3, reserve_s=100)
    evaluation = 6 * (reserved["eval_s_per_variant"] + 100)
    assert reserved["epochs"] * reserved["epoch_s"] + evaluation <= 2000
    assert (reserved["epochs"] + 1) * reserved["epoch_s"] + evaluation > 2000


def test_every_seed_runs_every_variant_with_the_attacks_passed_on(tmp_path, monkeypatch):
    script = load_benchmark("budgeted_acceptance")
    commands = []

    def run_json(command, log):
        commands.append(command)
        if command[1].endswith("fit_time.py"):
            return [{"modes": {"none": TIMING}}]
        return [{"seed": int(command[command.index("--seed") + 1])}]

    monkeypatch.setattr(script, "run_json", run_json)
    monkeypatch.setattr(script, "preset", lambda profile, overrides: {"epochs": 300, "train_steps": 10,
                                                                       "batch_size": 16})
    monkeypatch.setattr("sys.argv", ["budgeted_acceptance.py", "--budget-s", "1e7", "--out", str(tmp_path),
                                     "--seeds", "0,2", "--variants", "adv,clean", "--attacks", "fgsm,pgd-5"])
    script.main()
    runs = [(c[c.index("--seed") + 1], c[c.index("--variants") + 1], c[c.index("--attacks") + 1])
            for c in commands[1:]]
    assert runs == [("0", "adv", "fgsm,pgd-5"), ("0", "clean", "fgsm,pgd-5"),
                    ("2", "adv", "fgsm,pgd-5"), ("2", "clean", "fgsm,pgd-5")]
    assert json.loads((tmp_path / "plan.json").read_text())["runs"] == 4


@pytest.mark.parametrize("option, named", [(["--seeds", "0,one"], "--seeds 0,one"),
                                           (["--attacks", "squar-100"], "--attacks 'squar-100'"),
                                           (["--reserve-s", "-1"], "--reserve-s -1")])
def test_bad_seeds_attacks_or_reserve_are_refused_before_any_timing(tmp_path, monkeypatch, capsys, option, named):
    script = load_benchmark("budgeted_acceptance")
    monkeypatch.setattr(script, "run_json", lambda command, log: pytest.fail("ran before checking its options"))
    monkeypatch.setattr("sys.argv", ["budgeted_acceptance.py", "--budget-s", "60", "--out", str(tmp_path), *option])
    with pytest.raises(SystemExit) as exit_info:
        script.main()
    assert named in capsys.readouterr().err + str(exit_info.value)
