"""Per-unit segmentation losses on binary units, shared by SegPGD, SEA and APGD.

A unit is one cell of the anomaly map M(x) (localization objective) or the image score S(x)
(detection objective), see `attacks/objectives.py`. Segmentation attacks are written for
C-class pixel logits; here each unit's logit m is read as the two-class logits [0, m], whose
softmax is [1 − σ(m), σ(m)]. Attacks pass the calibrated logits m' = (m − τ)/s of
`attacks/calibration.py` (τ, s from the whole test set's clean logits), so the reading does not
assume that the detector's boundary is at 0 or its scale that of a log-odds. Cross-entropy, its masked and balanced forms and the Jensen–Shannon
divergence are then the two-class versions of those in SegPGD (Gu et al., ECCV 2022) and SEA
(Croce, Singh, Hein, ECCV 2024). Every function takes unit logits (B, U) and targets (B, U) in
{0, 1} and returns a per-image loss (B,) to maximize (mean over the units of the image).

A unit is *correct* when σ(m) > 0.5 agrees with its target, i.e. (m > 0) == target (m calibrated).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustad.attacks.objectives import FlipLoss, flip_loss

UNIT_LOSSES = ("ce", "margin", "masked-ce", "balanced-ce", "js")


def unit_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Two-class CE of every unit against its target, (B, U): softplus(m) − t·m."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def correct_units(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, U) float mask of the units the detector still labels correctly (no gradient)."""
    return ((logits.detach() > 0) == (targets > 0.5)).float()


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SEA's masked CE: CE of the correctly labelled units only, averaged over all units (B,)."""
    return (unit_cross_entropy(logits, targets) * correct_units(logits, targets)).mean(1)


def balance_weights(targets: torch.Tensor) -> torch.Tensor:
    """(B, U) weights that give each class present in an image the same total weight.

    w = U / (C · n_c) for a unit of class c, with n_c units of that class and C ∈ {1, 2} classes
    present, so the weights of an image average to 1. SEA weights classes by dataset-wide
    frequencies; anomaly maps have two classes whose proportion varies per image, so the
    balance is computed per image (anomalous cells are rare and would be drowned otherwise).
    """
    anomalous = targets > 0.5
    n_units = targets.shape[1]
    n_anomalous = anomalous.float().sum(1, keepdim=True)
    n_normal = n_units - n_anomalous
    present = (n_anomalous > 0).float() + (n_normal > 0).float()
    per_class = torch.where(anomalous, n_anomalous, n_normal).clamp_min(1.0)
    return n_units / (present * per_class)


def balanced_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SEA's balanced masked CE: masked CE with per-image class-balance weights (B,)."""
    per_unit = unit_cross_entropy(logits, targets) * correct_units(logits, targets)
    return (per_unit * balance_weights(targets)).mean(1)


def jensen_shannon(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SEA's JS divergence between the two-class prediction and the one-hot target (B,).

    With p_y the probability of the true class and q the one-hot target, m = (p + q)/2:
    JS = ½·[p_y·log(p_y / m_y) + (1 − p_y)·log 2] + ½·log(1 / m_y), m_y = (1 + p_y)/2.
    It is bounded by log 2 and, unlike CE, does not grow without limit on units already flipped.
    """
    signed = torch.where(targets > 0.5, logits, -logits)  # the true class's logit
    log_p_true = F.logsigmoid(signed)
    p_true = log_p_true.exp()
    log_m_true = torch.log1p(p_true) - math.log(2.0)
    kl_p_m = p_true * (log_p_true - log_m_true) + (1.0 - p_true) * math.log(2.0)
    kl_q_m = -log_m_true
    return (0.5 * (kl_p_m + kl_q_m)).mean(1)


def segpgd_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weight_wrong: float) -> torch.Tensor:
    """SegPGD's loss: (1 − λ)·CE on correct units + λ·CE on wrong units, averaged over units (B,)."""
    ce = unit_cross_entropy(logits, targets)
    correct = correct_units(logits, targets)
    return ((1.0 - weight_wrong) * ce * correct + weight_wrong * ce * (1.0 - correct)).mean(1)


def unit_loss(name: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The per-image loss (B,) called `name` (one of UNIT_LOSSES) of unit logits (B, U)."""
    if name == "ce":
        return flip_loss(logits, targets, FlipLoss.CE)
    if name == "margin":
        return flip_loss(logits, targets, FlipLoss.MARGIN)
    if name == "masked-ce":
        return masked_cross_entropy(logits, targets)
    if name == "balanced-ce":
        return balanced_cross_entropy(logits, targets)
    if name == "js":
        return jensen_shannon(logits, targets)
    raise ValueError(f"unknown unit loss {name!r}; expected one of {', '.join(UNIT_LOSSES)}")
