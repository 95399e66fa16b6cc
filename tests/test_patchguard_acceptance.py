"""benchmarks/patchguard_acceptance.py: the breakdowns of its checks, and a whole run on a tiny PatchGuard."""
import json
import sys

import pytest
import torch

from tests.benchmark_scripts import load_benchmark


def load_script():
    return load_benchmark("patchguard_acceptance")


def two_images():
    """A normal image and an anomalous one on a 2×2 grid of 4×4 px patches.

    The anomalous image's patch (0, 0) is all anomalous (core), patch (0, 1) a quarter (fringe).
    """
    masks = torch.zeros(2, 1, 8, 8)
    masks[1, 0, :4, :4] = 1
    masks[1, 0, :2, 4:6] = 1
    return masks, torch.tensor([0.0, 1.0])


def test_breakdown_names_the_group_the_scores_fail_on():
    breakdown = load_script().patch_auroc_breakdown
    masks, labels = two_images()
    # the fringe patch scores below every normal patch, the core patch above: only "fringe" fails
    logits = torch.tensor([[[0.0, 0.1], [0.2, 0.3]], [[5.0, -1.0], [0.4, 0.5]]])
    groups = breakdown(logits, masks, labels)
    assert groups["core"] == pytest.approx(100.0)
    assert groups["fringe"] == pytest.approx(0.0)
    assert groups["all"] == pytest.approx(50.0)
    assert groups["normal_images"] == pytest.approx(50.0) and groups["anomalous_images"] == pytest.approx(50.0)
    # a normal patch of the anomalous image outscoring the core patch: only that negative group drops
    logits[1, 1, 1] = 6.0
    groups = breakdown(logits, masks, labels)
    assert groups["normal_images"] == pytest.approx(50.0)
    assert groups["anomalous_images"] == pytest.approx(25.0)


def test_breakdown_reports_empty_groups_as_none():
    masks, labels = two_images()
    groups = load_script().patch_auroc_breakdown(torch.zeros(2, 2, 2), torch.zeros_like(masks), labels)
    assert all(value is None for value in groups.values())


def test_first_images_keeps_the_dataset_format_and_checks_the_count():
    class Dataset:
        format = "whole-image foreground"

        def __len__(self):
            return 5

        def __getitem__(self, index):
            return {"image": torch.full((3, 2, 2), float(index)), "label": 0}

    first = load_script().FirstImages(Dataset(), 3)
    assert len(first) == 3 and first.format == "whole-image foreground"
    assert [float(first[i]["image"][0, 0, 0]) for i in range(3)] == [0.0, 1.0, 2.0]
    with pytest.raises(SystemExit, match="--train-images 6: expected 1..5"):
        load_script().FirstImages(Dataset(), 6)


def test_test_set_check_splits_the_real_defects_by_kind(monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "create_attack", lambda name: lambda det, x, m, labels: x)  # no attack
    items = []
    for kind, value in (("good", 0.5), ("good", 0.5), ("bright", 1.0), ("dark", 0.0)):
        image, mask = torch.full((3, 8, 8), 0.5), torch.zeros(1, 8, 8)
        if kind != "good":
            image[:, :4, :4], mask[:, :4, :4] = value, 1
        items.append({"image": image, "mask": mask, "label": int(kind != "good"), "path": f"/data/test/{kind}/0.png"})

    def brightness(x):  # a detector that finds bright defects only: the mean of each 4×4 patch
        return torch.nn.functional.avg_pool2d(x[:, :1], 4)[:, 0]

    result = script.test_set_auroc(brightness, items, 20, "cpu")
    assert result["clean"]["by_kind"] == pytest.approx({"bright": 100.0, "dark": 0.0})
    assert result["clean"]["all"] == pytest.approx(50.0) and result["adv"] == result["clean"]


def test_image_auroc_by_kind_compares_each_kind_with_the_normal_images_under_the_detection_attack(monkeypatch):
    script = load_script()
    objectives = []

    def create_attack(name, objective):  # the attack brightens the normal images past every defect
        objectives.append((name, objective))
        return lambda det, x, m, labels: x + 0.7 * (1 - labels).view(-1, 1, 1, 1)

    monkeypatch.setattr(script, "create_attack", create_attack)
    items = []
    for kind, value in (("good", 0.5), ("good", 0.4), ("bright", 1.0), ("dark", 0.0)):
        image, mask = torch.full((3, 8, 8), 0.5 if kind == "good" else 0.3), torch.zeros(1, 8, 8)
        image[:, :4, :4] = value
        mask[:, :4, :4] = float(kind != "good")
        items.append({"image": image, "mask": mask, "label": int(kind != "good"), "path": f"/data/test/{kind}/0.png"})

    class Brightest:  # S = the brightest 4x4 patch
        def __call__(self, x):
            return torch.nn.functional.avg_pool2d(x[:, :1], 4)[:, 0]

        def score(self, logits):
            return logits.flatten(1).amax(1)

    result = script.image_auroc_by_kind(Brightest(), items, 7, "cpu")
    assert objectives == [("pgd-7", "detection")]
    assert result["bright"] == pytest.approx([100.0, 0.0])
    assert result["dark"] == pytest.approx([0.0, 0.0])  # its brightest patch, 0.3, is below both normal images
    assert result["all"] == pytest.approx([50.0, 0.0])
    assert result["median_score"]["normal"] == pytest.approx([0.5, 1.2])  # both S = 0.5, then +0.7
    assert result["median_score"]["anomalous"] == pytest.approx([0.65, 0.65])  # 1.0 and 0.3, not attacked


def test_top_k_rescoring_evaluates_each_k_and_restores_the_config(monkeypatch):
    from types import SimpleNamespace

    script = load_script()
    det = SimpleNamespace(config=SimpleNamespace(top_k=5))
    seen = []

    def evaluate(detector, dataset, attack, batch_size, device, progress):  # image AUROC = the k in use
        seen.append((detector.config.top_k, attack.objective.value))
        if detector.config.top_k == 99:
            raise RuntimeError("evaluation failed")
        return {"clean": {"image_auroc": float(detector.config.top_k)},
                "adversarial": {"image_auroc": detector.config.top_k / 2}}

    monkeypatch.setattr(script, "evaluate", evaluate)
    result = script.image_auroc_by_top_k(det, [], 3, "cpu", [1, 16])
    assert result == {1: {"detection": [1.0, 0.5], "localization": [1.0, 0.5]},
                      16: {"detection": [16.0, 8.0], "localization": [16.0, 8.0]}}
    assert seen == [(1, "detection"), (1, "localization"), (16, "detection"), (16, "localization")]
    assert det.config.top_k == 5
    with pytest.raises(RuntimeError):
        script.image_auroc_by_top_k(det, [], 3, "cpu", [99])
    assert det.config.top_k == 5  # restored after a failure too


def test_top_k_option_is_parsed_or_refused_naming_it():
    parse = load_script().parse_top_ks
    assert parse("1,5, 64") == [1, 5, 64] and parse("") == []
    for bad in ("0,5", "five", "1.5"):
        with pytest.raises(SystemExit, match="--top-k"):
            parse(bad)


# A PatchGuard small enough to fit and attack in seconds: one block of width 24, one epoch, no Grad-CAM.
TINY = ["epochs=1", "vit_embed_dim=24", "vit_depth=1", "vit_heads=1", "disc_heads=1", "disc_mlp_dim=16",
        "train_steps=1", "foreground=full", "train_precision=fp32"]


def test_a_run_prints_one_record_per_variant_naming_its_seed_and_saves_each_model(monkeypatch, capsys, tmp_path):
    argv = ["patchguard_acceptance.py", "--variants", "adv,clean", "--steps", "1", "--seed", "3",
            "--label", "tiny", "--save-dir", str(tmp_path), "--set", *TINY]
    monkeypatch.setattr(sys, "argv", argv)
    load_script().main()
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["label"], r["variant"], r["seed"], r["profile"]) for r in records] == [
        ("tiny", "adv", 3, "quick"), ("tiny", "clean", 3, "quick")]
    assert "adv_train" not in records[0]["overrides"] and records[1]["overrides"]["adv_train"] == "false"
    for record in records:
        for objective in ("localization_pgd1", "detection_pgd1"):
            for split in ("clean", "adv"):
                for metric in ("image_auroc", "pixel_auroc"):
                    assert 0 <= record[objective][split][metric] <= 100
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny-adv-seed3.pt", "tiny-clean-seed3.pt"]


def test_attacks_adds_each_named_attack_of_the_suite_to_the_record(monkeypatch, capsys):
    argv = ["patchguard_acceptance.py", "--variants", "adv", "--steps", "1", "--attacks", "fgsm,pgd-2",
            "--set", *TINY]
    monkeypatch.setattr(sys, "argv", argv)
    load_script().main()
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    for key in ("localization_fgsm", "localization_pgd-2"):
        assert record[key]["clean"] == record["localization_pgd1"]["clean"]  # same model, same test set
        assert 0 <= record[key]["adv"]["pixel_auroc"] <= 100


def test_an_unknown_attack_is_refused_before_any_training(monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "create_method", lambda *a, **k: pytest.fail("trained before checking --attacks"))
    monkeypatch.setattr(sys, "argv", ["patchguard_acceptance.py", "--attacks", "fgsm,autoatack-20"])
    with pytest.raises(SystemExit, match="--attacks 'autoatack-20': unknown attack"):
        script.main()


def test_curve_every_measures_the_fit_as_it_trains_without_changing_the_model(monkeypatch, capsys, tmp_path):
    def run(*extra):
        argv = ["patchguard_acceptance.py", "--variants", "adv", "--steps", "1", "--set", *TINY[1:], "epochs=3", *extra]
        monkeypatch.setattr(sys, "argv", argv)
        load_script().main()
        (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        return record

    record = run("--curve-every", "2", "--curve-figure", str(tmp_path / "figures" / "curve.png"))
    assert (tmp_path / "figures" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert [point["epoch"] for point in record["curve"]] == [2, 3]  # every 2nd epoch, and the last
    last = record["curve"][-1]  # the last point is the trained model: the record's own figures
    assert last["clean"] == pytest.approx({k: record["localization_pgd1"]["clean"][k] for k in last["clean"]})
    assert last["pgd1"] == pytest.approx({k: record["localization_pgd1"]["adv"][k] for k in last["pgd1"]})
    for point in record["curve"]:
        assert 0 <= point["heldout_pgd1"]["adv"] <= 100 and 0 <= point["heldout_pgd1"]["clean"] <= 100
    plain = run()
    assert "curve" not in plain
    for split in ("clean", "adv"):  # the curve leaves the fit alone
        assert plain["localization_pgd1"][split] == pytest.approx(record["localization_pgd1"][split])


@pytest.mark.parametrize("extra, message", [(["--curve-every", "-1"], "--curve-every -1: expected"),
                                            (["--curve-every", "5", "--checkpoint", "m.pt"], "cannot follow --checkpoint"),
                                            (["--curve-figure", "c.png"], "give --curve-every N too")])
def test_curve_every_refuses_bad_values_before_any_training(monkeypatch, extra, message):
    script = load_script()
    monkeypatch.setattr(script, "create_method", lambda *a, **k: pytest.fail("trained before checking --curve-every"))
    monkeypatch.setattr(sys, "argv", ["patchguard_acceptance.py", *extra])
    with pytest.raises(SystemExit, match=message):
        script.main()
