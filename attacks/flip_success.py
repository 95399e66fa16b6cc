"""A per-image success criterion for label-flipping attacks on anomaly scores.

Classification attacks that stop or discard an image once it is misclassified (A³'s discarding,
DDN's norm adaptation) need a success predicate. AUROC has no threshold, so we define one:

- A unit (a cell of M(x), or the image score S(x) with the detection objective) is *flipped* when
  its logit has crossed a threshold against its target: a normal unit (target 0) when m > τ_up,
  an anomalous unit (target 1) when m < τ_down.
- An image is *successful* when at least `fraction` of its units are flipped (default 1.0: all).

The thresholds are those of the test set's calibration (`UnitCalibration.thresholds`, in
calibrated units): τ_up is the highest clean logit of the whole test set's anomalous units and
τ_down the lowest clean logit of its normal units. A successful unit has passed every clean unit
of the other kind, so when every image succeeds, every anomalous unit scores below every normal
unit and AUROC is 0. A fixed midpoint would not do: AUROC ranks units, so an image that only just
crossed a midpoint still loses to the unbroken images, and discarding it early weakens the attack.
Taking them from the batch would make success depend on the batch: in a label-sorted test set, a
batch of normal images would "succeed" at A³'s random start and never be attacked again. A single
number τ for both is accepted too.

`success_margin` is how far an image is from success, in calibrated units (> 0 exactly when it is
successful): A³ ranks images by it to discard the hardest, as the official code ranks by the
classification margin. Success only decides where an attack spends its budget; attacks still
return each image's best-loss iterate.
"""
from __future__ import annotations

import math

import torch


def _pair(thresholds: "float | tuple[float, float]") -> tuple[float, float]:
    return (thresholds, thresholds) if isinstance(thresholds, (int, float)) else tuple(thresholds)


def unit_margins(logits: torch.Tensor, targets: torch.Tensor, thresholds: "float | tuple[float, float]") -> torch.Tensor:
    """(B, U): how far each unit is past its threshold (> 0: flipped), in the logits' units."""
    up, down = _pair(thresholds)
    return torch.where(targets < 0.5, logits - up, down - logits)


def flipped_units(logits: torch.Tensor, targets: torch.Tensor, thresholds: "float | tuple[float, float]") -> torch.Tensor:
    """Boolean (B, U): which units have crossed their threshold against their targets."""
    return unit_margins(logits, targets, thresholds) > 0


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"success fraction must be in (0, 1], got {fraction}")


def image_success(
    logits: torch.Tensor, targets: torch.Tensor, thresholds: "float | tuple[float, float]", fraction: float = 1.0
) -> torch.Tensor:
    """Boolean (B,): images with at least `fraction` of their units flipped."""
    _check_fraction(fraction)
    return flipped_units(logits, targets, thresholds).float().mean(dim=1) >= fraction - 1e-9


def success_margin(
    logits: torch.Tensor, targets: torch.Tensor, thresholds: "float | tuple[float, float]", fraction: float = 1.0
) -> torch.Tensor:
    """(B,): the margin of the unit that decides success — the k-th largest unit margin with
    k = ⌈fraction·U⌉ (the smallest for fraction 1). Positive exactly when the image is successful."""
    _check_fraction(fraction)
    margins = unit_margins(logits, targets, thresholds)
    k = max(1, math.ceil(fraction * margins.shape[1] - 1e-9))
    return margins.topk(k, dim=1).values[:, -1]
