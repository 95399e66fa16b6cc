"""`bench check` for adaptive attacks: masked gradients flagged (a no_grad inside forward), the noise
baseline, and for a detector that declares randomness: the attack with its noise fixed, EOT settling."""
from __future__ import annotations

import torch

from robustad.bench.cli import main
from robustad.bench.evaluation.soundness import EOT_LADDER, SoundnessCheck
from robustad.bench.runner import CellSpec
from tests.tiny_detector import TinyDetector


class NoGradStepDetector(TinyDetector):
    """The tiny detector with its first layer under `torch.no_grad()`: no gradient reaches the pixels."""

    def forward(self, images):
        with torch.no_grad():
            features = self.net[0](images - self.mean)
        return self.net[1:](features)[:, 0]


class NoisyDetector(TinyDetector):
    """The tiny detector with fresh input noise at every call, declared."""

    randomized = True

    def forward(self, images):
        return super().forward(images + 0.05 * torch.randn_like(images))


def check_of(method: str, root, results, **overrides) -> SoundnessCheck:
    spec = CellSpec(method=method, dataset="mvtec", category="alpha", root=str(root), steps=3, **overrides)
    return SoundnessCheck(spec, results=results, max_images=12, log=lambda m: None)


def test_a_no_grad_step_inside_forward_is_flagged_as_masking(mvtec_root, tmp_path, capsys):
    check = check_of("tests.test_adaptive_checks:NoGradStepDetector", mvtec_root, tmp_path)
    with check.prepared:
        gradients, determinism = check.gradients_and_determinism()
    assert gradients.name == "input_gradients_not_masked" and gradients.passed is False
    assert gradients.figures["masked_gradient_fraction"] == 1.0 and "no_grad" in gradients.detail
    assert determinism.passed is True
    main(["check", "--method", "tests.test_adaptive_checks:NoGradStepDetector", "--dataset", "mvtec", "--root",
          str(mvtec_root), "--category", "alpha", "--steps", "2", "--max-images", "8", "--results", str(tmp_path)])
    assert "FAIL  input_gradients_not_masked" in capsys.readouterr().out


def test_pgd_is_stronger_than_noise_on_an_undefended_model(mvtec_root, tmp_path):
    check = check_of("tests.tiny_detector:TinyDetector", mvtec_root, tmp_path)
    with check.prepared:
        result = check.noise_baseline()
        transfer = check.transfer_from_undefended()
    assert result.passed, result.figures
    assert result.figures["pgd"] < result.figures["random_noise"]
    assert transfer.passed is None  # the tiny detector has no undefended twin


def test_a_randomized_detector_is_checked_with_its_noise_fixed_and_eot_settles(mvtec_root, tmp_path):
    check = check_of("tests.test_adaptive_checks:NoisyDetector", mvtec_root, tmp_path)
    with check.prepared:
        fixed = check.fixed_randomness_succeeds()
        settles = check.eot_settles()
        gradients, declared = check.gradients_and_determinism()
    assert fixed.passed, fixed.figures  # undefended: with its noise fixed, PGD breaks it
    assert set(settles.figures) == {f"eot={k}" for k in EOT_LADDER} and settles.passed is not None
    assert declared.name == "randomness_declared" and declared.passed
    assert gradients.passed


def test_the_checks_eot_option_reaches_their_attacks_and_a_randomized_detector_is_scored_repeatedly(mvtec_root,
                                                                                                   tmp_path):
    from robustad.bench.evaluation.group import RANDOMIZED_EVALUATIONS

    spec = CellSpec(method="tests.test_adaptive_checks:NoisyDetector", dataset="mvtec", category="alpha",
                    root=str(mvtec_root), steps=2)
    check = SoundnessCheck(spec, results=tmp_path, max_images=8, eot=3, log=lambda m: None)
    with check.prepared:
        assert check.build_attack("pgd").eot == 3 and check.build_attack("simba").eot == 3
        assert check.build_attack("pgd", eot=5).eot == 5  # a check that sets its own K keeps it
        out = check.evaluation("pgd", steps=1)
    assert out["clean"]["evaluations"] == out["adversarial"]["evaluations"] == RANDOMIZED_EVALUATIONS
    assert main(["check", "--method", "tests.tiny_detector:TinyDetector", "--dataset", "mvtec", "--root",
                 str(mvtec_root), "--eot", "0"]) != 0


def test_the_composite_check_reads_a_randomized_detector_through_its_noise(mvtec_root, tmp_path):
    spec = CellSpec(method="tests.test_adaptive_checks:NoisyDetector", dataset="mvtec", category="alpha",
                    root=str(mvtec_root), steps=2)
    check = SoundnessCheck(spec, results=tmp_path, max_images=8, eot=2, log=lambda m: None)
    with check.prepared:
        result = check.composites_not_weaker()
    assert result.passed, result.figures  # a composite is never weaker beyond the noise of its choice
