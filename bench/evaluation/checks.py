"""Soundness checks of an evaluation (docs/design.md, "Evaluation must be sound").

`cheap_checks` runs on every cell and is stored in its record: input gradients exist and are
finite (zero gradients hint at gradient masking or a `no_grad` on the scoring path), and the
detector is deterministic (a randomized defense needs EOT, which plain attacks don't do).
"""
from __future__ import annotations

import torch

from robustad.attacks.attack import frozen
from robustad.attacks.objectives import AttackObjective


def input_gradient_check(detector, images, masks) -> dict:
    """Fraction of images whose flip-loss gradient is zero, and whether any is non-finite."""
    with frozen(detector):
        objective = AttackObjective.build(detector, images, masks)
        _, grad = objective.loss_and_grad(images)
    per_image = grad.flatten(1).abs().amax(1)
    finite = torch.isfinite(grad.flatten(1)).all(1)
    return {
        "zero_gradient_fraction": float((per_image == 0).float().mean()),
        "gradient_finite": bool(finite.all()),
        # zero or non-finite: an attack learns nothing from these images (gradient masking or a no_grad)
        "masked_gradient_fraction": float(((per_image == 0) | ~finite).float().mean()),
        "gradient_max_abs": float(per_image[finite].max()) if finite.any() else float("nan"),
    }


def determinism_check(detector, images) -> dict:
    """Largest difference between two identical forward passes (0 for a deterministic detector)."""
    with frozen(detector), torch.no_grad():
        first = detector(images)
        second = detector(images)
    diff = float((first - second).abs().max())
    return {"forward_max_difference": diff, "randomized": diff > 1e-5 * max(1.0, float(first.abs().max()))}


def cheap_checks(detector, images, masks) -> dict:
    checks = {**input_gradient_check(detector, images, masks), **determinism_check(detector, images)}
    warnings = []
    if checks["zero_gradient_fraction"] > 0:
        warnings.append("some images have an all-zero input gradient (gradient masking or no_grad on the scoring path)")
    if not checks["gradient_finite"]:
        warnings.append("non-finite input gradients")
    if checks["randomized"]:
        warnings.append("the detector is randomized: two identical forward passes differ; plain attacks underestimate it")
    checks["warnings"] = warnings
    return checks
