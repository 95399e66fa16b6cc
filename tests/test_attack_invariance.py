"""Every attack is as strong on a·M + c as on M, and on any cut of the test set into batches (issue #25).

docs/design.md: an attack's strength must not change when M becomes a·M + c (a > 0), nor with how the
test set is cut into batches; anything that needs a threshold or a two-class reading takes it from
the whole clean test set (`attacks/calibration.py`), random starts are drawn per image
(`attacks/image_random.py`) and A³ sees the whole test set. Also: every `worst:` member keeps its
own budget, and records and tables say which.
"""
import dataclasses
import math

import pytest
import torch

from robustad.attacks import ATTACKS, create_attack
from robustad.attacks.calibration import UnitCalibration
from robustad.attacks.image_random import ImageRandom
from robustad.bench.evaluation.affine_logits import AffineLogits
from robustad.bench.evaluation.evaluate import evaluate
from robustad.bench.runner import CellSpec, run_cell
from robustad.bench.report.tables import AttackSetting
from robustad.datasets import create_dataset

# Every attack of the package (the tests register fakes named test-*), at a budget that keeps the
# suite fast but runs each attack's whole machinery: A³ its opening rounds, SEA all radius stages.
ATTACK_NAMES = [name for name in ATTACKS.names() if not name.startswith("test-")]
BUDGETS = {"a3": dict(steps=24), "sea": dict(steps=6), "caa": dict(steps=6), "square": dict(steps=60),
           "simba": dict(steps=60), "autoattack": dict(steps=3, square_queries=10), "fgsm": {}}
METRIC = {"localization": "pixel_auroc", "detection": "image_auroc"}
VARIANTS = {"shift +10": (1.0, 10.0, False), "scale x0.1": (0.1, 0.0, False), "shuffled": (1.0, 0.0, True)}


@pytest.fixture(scope="module")
def test_orders(mvtec_root):
    """The tiny tree's test set as the loader gives it (6 anomalous, then 6 normal) and shuffled."""
    test = create_dataset("mvtec", root=mvtec_root, category="alpha", split="test", image_size=32)
    order = list(range(len(test)))
    shuffled = [order[i] for i in torch.randperm(len(order), generator=torch.Generator().manual_seed(5))]
    return torch.utils.data.Subset(test, order), torch.utils.data.Subset(test, shuffled)


def adversarial_auroc(detector, test_set, name, objective):
    """Adversarial AUROC (%) of the runner's evaluate, batches of 4: the sorted order has batches
    of anomalous images only and of normal images only. ε = 4/255 leaves the undefended tiny
    detector some AUROC to lose, so an attack that stops early (A³ judged by its batch) shows."""
    attack = create_attack(name, eps=4 / 255, seed=1, objective=objective, **BUDGETS.get(name, dict(steps=4)))
    return evaluate(detector, test_set, attack, batch_size=4, device=torch.device("cpu"), progress=False)


@pytest.mark.parametrize("objective", ["localization", "detection"])
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_strength_ignores_logit_scale_offset_and_batching(trained_tiny, test_orders, name, objective):
    detector = trained_tiny[0]
    sorted_set, shuffled_set = test_orders
    plain = adversarial_auroc(detector, sorted_set, name, objective)
    metric = METRIC[objective]
    assert plain["adversarial"][metric] < plain["clean"][metric] - 2  # the attack does something
    for variant, (scale, shift, shuffled) in VARIANTS.items():
        model = AffineLogits(detector, scale=scale, shift=shift) if (scale, shift) != (1.0, 0.0) else detector
        other = adversarial_auroc(model, shuffled_set if shuffled else sorted_set, name, objective)
        assert other["clean"][metric] == pytest.approx(plain["clean"][metric], abs=1e-3)  # AUROC cannot tell
        assert abs(other["adversarial"][metric] - plain["adversarial"][metric]) <= 1.0, (
            f"{name} ({objective}): adversarial {metric} {plain['adversarial'][metric]:.2f} on the detector, "
            f"{other['adversarial'][metric]:.2f} with {variant}")


def test_calibration_follows_affine_maps_of_the_logits():
    gen = torch.Generator().manual_seed(0)
    targets = (torch.rand(6, 40, generator=gen) < 0.2).float()
    logits = torch.randn(6, 40, generator=gen) + 3 * targets
    base = UnitCalibration.from_units(logits, targets, "localization")
    moved = UnitCalibration.from_units(2.5 * logits - 7.0, targets, "localization")
    assert moved.location == pytest.approx(2.5 * base.location - 7.0, rel=1e-5)
    assert moved.scale == pytest.approx(2.5 * base.scale, rel=1e-5)
    torch.testing.assert_close(moved.apply(2.5 * logits - 7.0), base.apply(logits), rtol=1e-5, atol=1e-5)
    assert moved.thresholds == pytest.approx(base.thresholds, rel=1e-5)
    # the boundary lies between the classes' medians; the extremes are the success thresholds
    normal, anomalous = logits[targets < 0.5], logits[targets > 0.5]
    assert normal.median() < base.location < anomalous.median()
    assert (base.above, base.below) == (float(anomalous.max()), float(normal.min()))


def test_calibration_of_one_kind_of_unit_and_bad_input():
    normal_only = UnitCalibration.from_units(torch.tensor([[1.0, 2.0, 3.0]]), torch.zeros(1, 3), "detection")
    assert normal_only.location > 3.0  # every normal unit reads as correctly normal
    assert normal_only.n_anomalous == 0 and normal_only.objective.value == "detection"
    identity = UnitCalibration.identity()
    assert identity.apply(torch.tensor([2.0])).item() == 2.0 and identity.thresholds == (0.0, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        UnitCalibration.from_units(torch.tensor([1.0, float("nan")]), torch.tensor([0.0, 1.0]), "detection")
    with pytest.raises(ValueError, match="scale"):
        UnitCalibration("detection", 0.0, 0.0, 1.0, 0.0)


def test_attacks_take_the_given_calibration(trained_tiny):
    """Called with the test set's calibration, an attack ignores its batch's own logits: a batch of
    normal images gets the same adversarial examples alone and inside the whole set."""
    detector, images, masks, labels = trained_tiny
    with torch.no_grad():
        calibration = UnitCalibration.from_units(detector(images).flatten(1), torch.zeros(len(images), 64), "localization")
    attack = create_attack("segpgd", eps=8 / 255, steps=4, seed=0)
    normal = labels == 0
    whole = attack(detector, images, masks, labels, calibration=calibration)
    alone = attack(detector, images[normal], masks[normal], labels[normal], calibration=calibration)
    torch.testing.assert_close(alone, whole[normal])
    with pytest.raises(ValueError, match="detection objective"):
        create_attack("pgd", steps=1)(detector, images, masks, labels,
                                      calibration=UnitCalibration.identity("detection"))


def test_image_random_is_the_same_in_any_batch():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 8, 8, generator=gen)
    together = ImageRandom(images, seed=3).uniform(4)
    order = [4, 2, 0]
    apart = ImageRandom(images[order], seed=3).uniform(4)
    torch.testing.assert_close(apart, together[order])
    assert not torch.equal(ImageRandom(images, seed=4).uniform(4), together)
    rng = ImageRandom(images, seed=3)
    rng.subset([1]).uniform(4)  # advances image 1 only
    after = rng.uniform(4)
    assert torch.equal(after[0], ImageRandom(images, seed=3).uniform(4)[0])
    assert not torch.equal(after[1], together[1])


def test_a3_sees_the_whole_test_set_and_attacks_all_of_the_last_ten_percent(trained_tiny):
    detector, images, masks, labels = trained_tiny
    attack = create_attack("a3", eps=32 / 255, steps=60, objective="detection", seed=0)
    assert attack.whole_test_set
    adv = attack(detector, images, masks, labels, max_batch=5)
    again = create_attack("a3", eps=32 / 255, steps=60, objective="detection", seed=0)
    torch.testing.assert_close(again(detector, images, masks, labels, max_batch=12), adv)  # chunking changes nothing
    rounds = attack.last_rounds
    total = len(images)
    unsuccessful_before = [total] + [total - r["succeeded"] for r in rounds[:-1]]
    for before, entry in zip(unsuccessful_before, rounds):
        if entry["few_left"]:
            assert entry["attacked"] == before  # under 10% left: every unsuccessful image is attacked
    few = [r for r in rounds if r["few_left"]]
    assert few, "the undefended tiny detector at 32/255 should leave under 10% of the images unsuccessful"
    # ... and that round runs 11 times (the official code's 10 more restarts) unless the budget ends first
    first = few[0]["round"]
    runs = [r["run"] for r in rounds if r["round"] == first]
    assert runs == list(range(len(runs))) and (len(runs) == 11 or rounds[-1]["round"] == first)


# -- `worst:` keeps each member's budget ---------------------------------------------------------


def member_steps(attack):
    return [m["steps"] for m in attack.describe()["members"]]


def test_worst_members_keep_their_own_budgets():
    assert member_steps(create_attack("worst:pgd-5,pgd-50", steps=20)) == [5, 50]
    assert member_steps(create_attack("worst:pgd-5,pgd-50", steps=1000)) == [5, 50]
    mixed = create_attack("worst:pgd,square,square-300,fgsm", steps=20)
    assert member_steps(mixed) == [20, 5000, 300, 1]  # square keeps its own query budget without -N
    assert mixed.describe()["attack"] == "worst:pgd-20,square-5000,square-300,fgsm"
    assert mixed.describe()["steps"] is None

    def resolved(attack, profile="quick"):
        return CellSpec(method="patchguard", dataset="textures", category="brick", attack=attack, profile=profile).resolved_steps()

    assert resolved("worst:pgd-5,pgd-50") is None and resolved("worst:pgd-5,pgd-50", "paper") is None
    assert resolved("worst:pgd,square") == 20 and resolved("worst:pgd,square", "paper") == 1000
    assert resolved("worst:square,simba-50") is None


def test_worst_record_and_table_list_each_members_real_settings(mvtec_root, tmp_path):
    spec = CellSpec(method="tests.tiny_detector:TinyDetector", dataset="mvtec", category="alpha",
                    attack="worst:pgd-2,pgd-5,fgsm", root=str(mvtec_root), profile="paper")
    record = run_cell(spec, results=tmp_path)
    assert record.error is None
    assert record.attack == "worst:pgd-2,pgd-5,fgsm" and record.steps is None
    assert [m["steps"] for m in record.attack_config["members"]] == [2, 5, 1]
    assert AttackSetting.of(record).attack_label() == "worst:PGD-2,PGD-5,FGSM"
    calibration = record.attack_calibration
    assert calibration["source"] == "test set" and calibration["n_normal"] + calibration["n_anomalous"] == 12 * 64
    assert calibration["scale"] > 0 and math.isfinite(calibration["location"])
    other = AttackSetting.of(dataclasses.replace(record, attack="worst:pgd-20,pgd-20,fgsm"))
    assert other != AttackSetting.of(record)  # different member budgets are different table columns


# -- the benchmark scripts' helpers --------------------------------------------------------------


def test_benchmark_helpers_name_budgets_and_fit_platt():
    from tests.benchmark_scripts import load_benchmark

    invariance = load_benchmark("attack_invariance")
    assert invariance.attack_name("pgd", 20, 500) == "pgd-20" and invariance.attack_name("square", 20, 500) == "square-500"
    assert invariance.attack_name("fgsm", 20, 500) == "fgsm" and invariance.attack_name("a3-7", 20, 500) == "a3-7"
    assert invariance.attack_name("worst:pgd-5,pgd-50", 20, 500) == "worst:pgd-5,pgd-50"
    readings = load_benchmark("calibration_readings")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, generator=gen) * 3 + 1
    targets = (torch.rand(20000, generator=gen) < torch.sigmoid((logits - 2.0) / 0.5)).float()
    location, scale = readings.platt(logits, targets)
    assert location == pytest.approx(2.0, abs=0.1) and scale == pytest.approx(0.5, rel=0.1)
    moved = readings.platt(3 * logits + 5, targets)  # maximum likelihood follows affine maps
    assert moved == pytest.approx((3 * location + 5, 3 * scale), rel=1e-4)
