"""A per-image success criterion for label-flipping attacks on anomaly scores.

Classification attacks that stop or discard an image once it is misclassified (A³'s discarding,
DDN's norm adaptation) need a success predicate. AUROC has no threshold, so we define one:

- A unit (a cell of M(x), or the image score S(x) with the detection objective) is *flipped* when
  its logit has crossed a threshold against its target: a normal unit (target 0) when m > τ_up,
  an anomalous unit (target 1) when m < τ_down.
- An image is *successful* when at least `fraction` of its units are flipped (default 1.0: all).

Default thresholds (`clean_thresholds`): τ_up is the highest clean logit of the batch's anomalous
units and τ_down the lowest clean logit of its normal units (of all units when the batch has units
of one kind only). A successful unit has passed every clean unit of the other kind, so when every
image of a batch succeeds, every anomalous unit scores below every normal unit and the batch's
AUROC is 0. A fixed midpoint would not do: AUROC ranks units, so an image that only just crossed a
midpoint still loses to the unbroken images, and discarding it early weakens the attack. The
thresholds are relative to the clean logits, so they also suit detectors whose logits are not
centred on 0 (distances, reconstruction errors). A single number τ for both (e.g. τ = 0, "sigmoid(m)
crosses 0.5", the decision rule of a BCE-trained detector such as PatchGuard) is accepted too.

Success only decides where an attack spends its budget; attacks still return each image's
best-loss iterate.
"""
from __future__ import annotations

import torch


def clean_thresholds(clean_logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(τ_up, τ_down) from clean unit logits (B, U) and targets (B, U); see the module docstring."""
    normal = targets < 0.5
    above = clean_logits[~normal] if (~normal).any() else clean_logits
    below = clean_logits[normal] if normal.any() else clean_logits
    return float(above.max()), float(below.min())


def flipped_units(logits: torch.Tensor, targets: torch.Tensor, thresholds: "float | tuple[float, float]") -> torch.Tensor:
    """Boolean (B, U): which units have crossed their threshold against their targets."""
    up, down = (thresholds, thresholds) if isinstance(thresholds, (int, float)) else thresholds
    return torch.where(targets < 0.5, logits > up, logits < down)


def image_success(
    logits: torch.Tensor, targets: torch.Tensor, thresholds: "float | tuple[float, float]", fraction: float = 1.0
) -> torch.Tensor:
    """Boolean (B,): images with at least `fraction` of their units flipped."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"success fraction must be in (0, 1], got {fraction}")
    return flipped_units(logits, targets, thresholds).float().mean(dim=1) >= fraction - 1e-9
