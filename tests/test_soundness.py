"""`bench check` on the tiny undefended detector, and the flags for masked / randomized models."""
import pytest
import torch

from robustad.attacks import ATTACKS, AttackObjective, FlipLoss, register_attack
from robustad.attacks.pgd import PGD
from robustad.attacks.worst_case import WorstCase
from robustad.bench.evaluation.checks import cheap_checks
from robustad.bench.runner import CellSpec
from robustad.bench.evaluation.soundness import SoundnessCheck
from tests.tiny_detector import TinyDetector


class GradientMaskedDetector(TinyDetector):
    """Quantizes its input: the gradient is zero everywhere (a classic gradient-masking defense)."""

    def forward(self, images):
        return super().forward(torch.round(images * 4) / 4)


class RandomizedDetector(TinyDetector):
    def forward(self, images):
        return super().forward(images + 0.05 * torch.randn_like(images))


def test_cheap_checks_flag_masking_and_randomness(trained_tiny):
    detector, images, masks, _ = trained_tiny
    sound = cheap_checks(detector, images[:4], masks[:4])
    assert sound["zero_gradient_fraction"] == 0 and not sound["randomized"] and not sound["warnings"]
    masked = GradientMaskedDetector()
    masked.load_state_dict(detector.state_dict())
    flagged = cheap_checks(masked, images[:4], masks[:4])
    assert flagged["zero_gradient_fraction"] == 1.0 and flagged["warnings"]
    noisy = RandomizedDetector()
    noisy.load_state_dict(detector.state_dict())
    assert cheap_checks(noisy, images[:4], masks[:4])["randomized"]


def test_soundness_checks_pass_on_an_undefended_model(mvtec_root, tmp_path):
    spec = CellSpec(method="tests.tiny_detector:TinyDetector", dataset="mvtec", category="alpha",
                    root=str(mvtec_root), steps=10)
    check = SoundnessCheck(spec, results=tmp_path, max_images=12, log=lambda m: None)
    steps = check.more_steps_not_weaker()
    assert steps.passed, steps.figures
    monotone, collapse = check.eps_monotone_and_collapse()
    assert monotone.passed, monotone.figures
    assert collapse.passed, collapse.figures
    assert check.undefended_collapses().passed is None  # no adv_train field: skipped, not passed


def test_step_ladder_fails_when_more_steps_are_weaker():
    """PGD-5·steps weaker than PGD-steps (the shrinking 2.5ε/steps step) is a FAIL naming the rungs."""
    check = object.__new__(SoundnessCheck)
    check.steps, check.margin = 20, 1.0
    figures = {4: 40.0, 20: 30.0, 100: 36.0}  # pixel AUROC under PGD-n: the longest attack is weaker
    check.adversarial = lambda name, steps=None, **options: (90.0, figures[steps])
    result = check.more_steps_not_weaker()
    assert result.passed is False and result.figures == {"pgd-4": 40.0, "pgd-20": 30.0, "pgd-100": 36.0}
    figures[100] = 29.5
    assert check.more_steps_not_weaker().passed is True


def test_undefended_twin_of_an_adv_method_is_its_clean_method():
    """`<m>-adv` has no adv_train field: the check compares with `<m>`, with the same overrides."""
    from robustad.methods import create_method

    check = object.__new__(SoundnessCheck)
    check.spec = CellSpec(method="draem-adv", dataset="textures", category="brick",
                          config=(("epochs", 3), ("adv_steps", 2)))
    check.detector = create_method("draem-adv", profile="quick")
    twin = check.undefended_spec()
    assert twin.method == "draem" and twin.config_overrides == {"epochs": 3, "adv_steps": 2}
    check.spec = CellSpec(method="tests.tiny_detector:TinyDetector", dataset="mvtec", category="alpha")
    check.detector = TinyDetector()
    assert check.undefended_spec() is None


class RawLogitCE(PGD):
    """PGD on the CE of the raw logits read as [0, m] (what every CE attack did before issue #25)."""

    name = "test-raw-ce"

    def perturb(self, objective, images):
        raw = AttackObjective(objective.detector, objective.targets, objective.objective, FlipLoss.CE)  # no calibration
        return super().perturb(raw, images)


class FirstMemberOnly(WorstCase):
    """A broken composite: returns its first member's images whatever the others find."""

    def __call__(self, detector, images, masks, labels=None, calibration=None, max_batch=None):
        return self.members[0](detector, images, masks, labels, calibration=calibration)


@pytest.fixture
def raw_logit_ce():
    register_attack("test-raw-ce")(RawLogitCE)
    yield "test-raw-ce"
    ATTACKS.unregister("test-raw-ce")


def test_logit_shift_check_passes_calibrated_attacks_and_catches_raw_ones(mvtec_root, tmp_path, raw_logit_ce):
    spec = CellSpec(method="tests.tiny_detector:TinyDetector", dataset="mvtec", category="alpha",
                    root=str(mvtec_root), steps=5, attack="segpgd")
    check = SoundnessCheck(spec, results=tmp_path, max_images=12, log=lambda m: None)
    sound = check.logit_shift_invariance()
    assert sound.passed, sound.figures
    assert sound.figures["attack"] == "segpgd" and {"plain", "scale*0.1"} <= set(sound.figures)
    raw = check.logit_shift_invariance(raw_logit_ce)
    assert raw.passed is False and raw.figures["spread"] > 1.0, raw.figures


def test_composite_check_passes_worst_cases_and_catches_a_broken_one(mvtec_root, tmp_path):
    spec = CellSpec(method="tests.tiny_detector:TinyDetector", dataset="mvtec", category="alpha",
                    root=str(mvtec_root), steps=5, attack="worst:fgsm,pgd-5")
    check = SoundnessCheck(spec, results=tmp_path, max_images=12, log=lambda m: None)
    assert check.composite_attacks() == ["worst:fgsm,pgd-5"]
    sound = check.composites_not_weaker()
    assert sound.passed, sound.figures
    assert set(sound.figures) == {"worst:fgsm,pgd-5 vs fgsm", "worst:fgsm,pgd-5 vs pgd-5"}
    built = check.build_attack
    check.build_attack = lambda name, **options: FirstMemberOnly(built(name, **options).members)
    broken = check.composites_not_weaker()
    assert broken.passed is False and "pgd-5 beats" in broken.detail, broken.figures
    check.attack_name = "pgd"  # not a composite: the check builds its own (worst: PGD pair and AutoAttack)
    assert check.composite_attacks() == ["worst:pgd-1,pgd-5", "autoattack-5"]
