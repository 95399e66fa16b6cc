"""The two-class reading of unit logits, calibrated once per test set.

Several attacks read a unit's logit m (a cell of M(x), or the image score S(x) with the detection
objective) as a two-class prediction: CE, masked and balanced CE, Jensen–Shannon (SegPGD, SEA,
APGD-CE), SegPGD's split into correctly and wrongly labelled units, CAA's CW and CE members, and
the success test of A³ and DDN. Reading m itself as the logits [0, m] assumes a detector trained
with BCE, whose boundary is m = 0 and whose scale is that of a log-odds. Detectors' logits have
any scale and offset (PatchCore's distances are ≥ 0, ReContrast's cosine distances lie in [0, 1]):
on those, every normal unit reads as misclassified, masked CE ignores the normal units and CE
saturates, so an attack's strength would depend on the logits' offset.

`UnitCalibration` fixes the reading once, from the clean unit logits of a whole test set, and every
attack sees the calibrated logit

    m' = (m − τ) / s,    τ = (median of normal units + median of anomalous units) / 2,
                         s = √((var of normal units + var of anomalous units) / 2),

i.e. the boundary halfway between the two classes' medians, in units of their average within-class
spread. Medians, variances, maxima and minima move with the logits, so when M becomes a·M + c
(a > 0), τ becomes a·τ + c, s becomes a·s and m' does not change: nor does any loss or success
test computed from m'. The classes are weighted equally (anomalous cells are a few percent of a
test set's cells). Both statistics come from the whole clean test set (the runner computes them
once per cell, before attacking, and stores them in the record as `attack_calibration`), so they
do not depend on how the set is cut into batches.

Success thresholds (`flip_success.py`): a normal unit is flipped when m > the highest clean logit
of the set's anomalous units, an anomalous unit when m < the lowest clean logit of its normal units
(`above`, `below`; calibrated like m). When every image succeeds, every anomalous unit scores
below every normal unit: AUROC 0.

A test set with units of one kind only (a single batch of normal images, given to the Python API
without a calibration) has no second class: its spread is that class's, and τ sits two spreads
beyond its median (normal units read as correct), `above`/`below` are its extreme logits.
`identity(objective)` is the uncalibrated BCE reading (τ = 0, s = 1, success at m = 0), for
detectors trained with BCE whose logits are log-odds (PatchGuard's adversarial training, the
torchattacks reference tests).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from robustad.attacks.objectives import Objective

ONE_CLASS_OFFSET = 2.0  # spreads between the median and τ when the set has one kind of unit


@dataclass(frozen=True)
class UnitCalibration:
    """m' = (m − location) / scale for one objective's units; `above`/`below` are raw success thresholds."""

    objective: Objective
    location: float
    scale: float
    above: float  # highest clean logit of an anomalous unit (a normal unit beyond it is flipped)
    below: float  # lowest clean logit of a normal unit (an anomalous unit beneath it is flipped)
    n_normal: int = 0
    n_anomalous: int = 0
    source: str = "test set"  # "test set" (the runner), "batch" (fallback of a single call), "identity"

    def __post_init__(self):
        object.__setattr__(self, "objective", Objective.parse(self.objective))
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"UnitCalibration: scale must be finite and > 0, got {self.scale}")

    @classmethod
    def from_units(cls, logits: torch.Tensor, targets: torch.Tensor, objective: Objective | str,
                   source: str = "test set") -> "UnitCalibration":
        """From clean unit logits and their targets in {0, 1} (any matching shapes, e.g. (B, U));
        units with a negative target (unknown) are left out."""
        values = logits.detach().float().flatten().cpu()
        targets = targets.detach().float().flatten().cpu()
        if values.numel() != targets.numel():
            raise ValueError(f"calibration: {values.numel()} logits but {targets.numel()} targets")
        values, anomalous = values[targets >= 0], targets[targets >= 0] > 0.5
        if values.numel() == 0:
            raise ValueError("calibration: no units to calibrate from")
        if not torch.isfinite(values).all():
            raise ValueError("calibration: the clean logits contain NaN or infinite values")
        normal, abnormal = values[~anomalous], values[anomalous]
        if normal.numel() and abnormal.numel():
            location = (float(normal.median()) + float(abnormal.median())) / 2
            scale = math.sqrt((_variance(normal) + _variance(abnormal)) / 2)
        else:
            present = normal if normal.numel() else abnormal
            scale = math.sqrt(_variance(present))
            direction = 1.0 if normal.numel() else -1.0
            location = float(present.median()) + direction * ONE_CLASS_OFFSET * scale
        scale = max(scale, 1e-6 * max(1.0, abs(location)))  # constant logits: any positive scale reads them alike
        above = float(abnormal.max()) if abnormal.numel() else float(values.max())
        below = float(normal.min()) if normal.numel() else float(values.min())
        return cls(Objective.parse(objective), location, scale, above, below,
                   int(normal.numel()), int(abnormal.numel()), source)

    @classmethod
    def identity(cls, objective: Objective | str = Objective.LOCALIZATION) -> "UnitCalibration":
        """The BCE reading of log-odds logits: τ = 0, s = 1, a unit is flipped once it crosses 0."""
        return cls(Objective.parse(objective), 0.0, 1.0, 0.0, 0.0, source="identity")

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated logits m' = (m − τ) / s."""
        return (logits - self.location) / self.scale

    @property
    def thresholds(self) -> tuple[float, float]:
        """(above, below) in calibrated units: the success thresholds of `flip_success`."""
        return (self.above - self.location) / self.scale, (self.below - self.location) / self.scale

    def describe(self) -> dict:
        """What the result record stores (`attack_calibration`)."""
        return {**asdict(self), "objective": self.objective.value}


def _variance(values: torch.Tensor) -> float:
    return float(values.double().var(unbiased=False)) if values.numel() > 1 else 0.0
