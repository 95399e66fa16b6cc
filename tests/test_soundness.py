"""`bench check` on the tiny undefended detector, and the flags for masked / randomized models."""
import torch

from robustad.bench.checks import cheap_checks
from robustad.bench.runner import CellSpec
from robustad.bench.soundness import SoundnessCheck
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
