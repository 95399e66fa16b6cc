"""Label-flipping attack objectives for anomaly maps (PatchGuard paper §3, appendix H and L).

An attack sees a detector through *units*: the cells of M(x) (localization objective, the paper's
default) or the image score S(x) (detection objective). Each unit has a target in {0, 1}; the
attack flips them: it raises the logits of normal units and lowers those of anomalous ones.

Losses (per image, to maximize):
- `margin` (default, non-saturating): mean logit of normal units − mean logit of anomalous units,
  the PatchGuard code's attack loss. A saturating BCE-flip loss stalls on confident models
  (docs/design.md, "Evaluation must be sound").
- `ce`: mean binary cross-entropy of the units against their true targets (appendix H's "sum of
  cross-entropy" over patches; with per-cell two-class logits [0, m] this is exactly the
  untargeted CE that torchattacks maximizes). It saturates on confident models.

Attacks see calibrated unit logits m' = (m − τ)/s (`attacks/calibration.py`): the margin loss is
the same up to the factor 1/s (its gradient's direction, and so every attack step, does not depend
on τ or s), and the CE reads m' as the two-class logits [0, m'], which no longer assumes that the
detector's boundary is at 0.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from robustad.core.choices import Choice

ANOMALOUS_FRACTION = 0.05  # a cell is anomalous when more than 5% of its pixels are (paper §5.2)


class Objective(Choice):
    LOCALIZATION = "localization"
    DETECTION = "detection"


class FlipLoss(Choice):
    MARGIN = "margin"
    CE = "ce"


def patch_targets(masks: torch.Tensor, grid: tuple[int, int], threshold: float = ANOMALOUS_FRACTION) -> torch.Tensor:
    """Per-cell targets (B, h, w) in {0, 1} from pixel masks (B, 1, H, W) or (B, H, W).

    A cell is anomalous when more than `threshold` of its pixels are. When the grid is the pixel
    grid this is the mask itself.
    """
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    masks = masks.float()
    if tuple(masks.shape[-2:]) == tuple(grid):
        return (masks[:, 0] > 0.5).float()
    fraction = F.adaptive_avg_pool2d(masks, grid) if _divides(masks.shape[-2:], grid) else F.interpolate(
        masks, size=grid, mode="area"
    )
    return (fraction[:, 0] > threshold).float()


def _divides(size, grid) -> bool:
    return size[0] % grid[0] == 0 and size[1] % grid[1] == 0


def flip_loss(logits: torch.Tensor, targets: torch.Tensor, loss: FlipLoss = FlipLoss.MARGIN) -> torch.Tensor:
    """Per-image flip loss (B,) of unit logits (B, U) against targets (B, U).

    A unit with a negative target is ignored: it counts in neither mean (margin) nor in the CE.
    """
    known = (targets >= 0).to(logits.dtype)
    anomalous = targets.clamp_min(0.0) * known
    if loss == FlipLoss.MARGIN:
        normal = known - anomalous
        mean_normal = (logits * normal).sum(1) / normal.sum(1).clamp_min(1.0)
        mean_anomalous = (logits * anomalous).sum(1) / anomalous.sum(1).clamp_min(1.0)
        return mean_normal - mean_anomalous
    ce = F.binary_cross_entropy_with_logits(logits, anomalous, reduction="none")
    return (ce * known).sum(1) / known.sum(1).clamp_min(1.0)


def unit_targets(masks: torch.Tensor | None, labels: torch.Tensor | None, grid: tuple[int, int],
                 objective: Objective, batch: int | None = None) -> torch.Tensor:
    """Unit targets (B, U) in {0, 1}: image labels (detection, U = 1) or cell targets on `grid`.

    masks (B, 1, H, W) or None (all normal); labels (B,) or None (anomalous when the mask is not
    empty). An anomalous image without a mask (e.g. Head-CT) has every cell anomalous.
    """
    if masks is None and labels is None:
        if batch is None:
            raise ValueError("unit_targets: give masks, labels or the batch size")
        return torch.zeros(batch, 1 if objective == Objective.DETECTION else grid[0] * grid[1])
    if labels is None:
        labels = (masks.flatten(1).amax(1) > 0.5).float()
    labels = labels.float()
    if objective == Objective.DETECTION:
        return labels.view(-1, 1)
    if masks is None:
        masks = torch.zeros(labels.shape[0], 1, *grid, device=labels.device)
    cells = patch_targets(masks.to(labels.device), grid)
    unmasked = (labels > 0.5) & (cells.flatten(1).amax(1) < 0.5)
    cells[unmasked] = 1.0
    return cells.flatten(1)


class AttackObjective:
    """What an attack maximizes for one batch: a detector, its unit targets, an objective and a loss.

    `targets` are (B, U): cell targets flattened (localization) or image labels (detection).
    `calibration` (`attacks/calibration.py`) maps the detector's unit logits m to the calibrated
    m' = (m − τ)/s that every loss, success test and two-class reading of an attack uses, so that
    no attack depends on the scale or offset of the detector's logits. The constructor's default
    is the identity (m' = m, the BCE reading of log-odds); `build` calibrates from the batch's own
    clean logits unless it is given the test set's calibration (what the runner does).
    `forward(detector, images)`, when given, replaces `detector(images)` in the losses (e.g. the
    compiled forward of `attacks/compiled_step.py`); the clean probe of `build` stays eager.

    EOT (Expectation over Transformation, Athalye et al., ICML 2018, https://arxiv.org/abs/1802.00420):
    with `eot = K > 1`, every quantity an attack reads is a mean over K forward passes, each with
    fresh randomness of a randomized detector: `evaluate` (the one place where every gradient
    attack takes its loss and input gradient: the mean of K per-pass losses and of their K input
    gradients), `loss` (the mean of K per-pass losses: what attacks rank iterates by, so each
    image's best point is chosen on the mean, not on one noisy pass) and `unit_logits` (the mean
    of K passes' logits: success tests and clean references). K = 1 is one pass, as before.
    """

    def __init__(self, detector, targets: torch.Tensor, objective: Objective, loss: FlipLoss, calibration=None,
                 forward=None, eot: int = 1):
        from robustad.attacks.calibration import UnitCalibration

        self.detector = detector
        self.targets = targets
        self.objective = Objective.parse(objective)
        self.loss_kind = FlipLoss.parse(loss)
        self.calibration = calibration if calibration is not None else UnitCalibration.identity(self.objective)
        if self.calibration.objective != self.objective:
            raise ValueError(f"the calibration is for the {self.calibration.objective.value} objective's units, "
                             f"the attack's objective is {self.objective.value}")
        self.forward = forward
        self.eot = check_eot(eot)
        self.forward_count = 0

    @classmethod
    def build(cls, detector, images, masks, labels=None, objective=Objective.LOCALIZATION, loss=FlipLoss.MARGIN,
              calibration=None, eot: int = 1):
        """The objective of one batch. Without `calibration`, the batch's own clean unit logits
        calibrate it: the batch is then the "test set" (see `attacks/calibration.py`)."""
        from robustad.attacks.calibration import UnitCalibration

        objective, loss = Objective.parse(objective), FlipLoss.parse(loss)
        labels = None if labels is None else labels.to(images.device)
        masks = None if masks is None else masks.to(images.device)
        with torch.no_grad():
            probe = detector(images if calibration is None else images[:1])
            grid = tuple(probe.shape[-2:])
            targets = unit_targets(masks, labels, grid, objective, batch=images.shape[0]).to(images.device)
            if calibration is None:
                clean = detector.score(probe).view(-1, 1) if objective == Objective.DETECTION else probe.flatten(1)
                calibration = UnitCalibration.from_units(clean, targets, objective, source="batch")
        return cls(detector, targets, objective, loss, calibration, eot=eot)

    def raw_unit_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, U) logits of the attacked units as the detector gives them."""
        self.forward_count += images.shape[0]
        logits = self.detector(images) if self.forward is None else self.forward(self.detector, images)
        if self.objective == Objective.DETECTION:
            return self.detector.score(logits).view(-1, 1)
        return logits.flatten(1)

    def pass_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, U) calibrated logits m' = (m − τ)/s of one forward pass (one draw of the detector's noise)."""
        return self.calibration.apply(self.raw_unit_logits(images))

    def unit_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, U) calibrated logits m' = (m − τ)/s of the attacked units; with EOT the mean over `eot` passes."""
        return _mean(self.pass_logits(images) for _ in range(self.eot))

    def loss_from_logits(self, logits: torch.Tensor, loss: FlipLoss | None = None) -> torch.Tensor:
        """Per-image loss (B,) of calibrated unit logits (B, U)."""
        return flip_loss(logits.float(), self.targets, loss or self.loss_kind)

    def loss(self, images: torch.Tensor, loss: FlipLoss | None = None) -> torch.Tensor:
        """Per-image loss (B,) to maximize; with EOT the mean of the `eot` passes' losses."""
        return _mean(self.loss_from_logits(self.pass_logits(images), loss) for _ in range(self.eot))

    def evaluate(self, images: torch.Tensor, per_pass: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
                 grad: bool = True):
        """The mean over `eot` passes of `per_pass(logits)` and of the input gradient of its first output.

        `per_pass` maps one pass's calibrated unit logits (B, U) to a tuple of tensors whose first is
        the per-image loss (B,) to differentiate; the rest (losses that steer or rank, the logits
        themselves) are averaged too. Each pass is one forward and one backward with fresh noise;
        passes run one after the other, so memory is that of one pass. Returns (tuple of detached
        means, mean input gradient with the images' shape); `grad=False`: forwards only, gradient None.
        """
        sums: list[torch.Tensor] | None = None
        grad_sum = None
        for _ in range(self.eot):
            if grad:
                x = images.detach().requires_grad_(True)
                with torch.enable_grad():
                    outputs = tuple(per_pass(self.pass_logits(x)))
                    pass_grad = input_gradient(outputs[0], x)
                grad_sum = pass_grad if grad_sum is None else grad_sum + pass_grad
            else:
                with torch.no_grad():
                    outputs = tuple(per_pass(self.pass_logits(images)))
            outputs = [o.detach() for o in outputs]
            sums = outputs if sums is None else [s + o for s, o in zip(sums, outputs)]
        if self.eot > 1:
            sums = [s / self.eot for s in sums]
            grad_sum = None if grad_sum is None else grad_sum / self.eot
        return tuple(sums), None if grad_sum is None else grad_sum.detach()

    def loss_and_grad(self, images: torch.Tensor, loss: FlipLoss | None = None):
        """Per-image loss (B,) and its gradient with respect to the images only (EOT: both means over passes)."""
        (value,), grad = self.evaluate(images, lambda logits: (self.loss_from_logits(logits, loss),))
        return value, grad

    def subset(self, index: torch.Tensor) -> "AttackObjective":
        """The same objective restricted to the images at `index`."""
        return AttackObjective(self.detector, self.targets[index], self.objective, self.loss_kind, self.calibration,
                               self.forward, self.eot)

    def with_loss(self, loss: FlipLoss | str) -> "AttackObjective":
        """The same units and calibration with another loss."""
        return AttackObjective(self.detector, self.targets, self.objective, FlipLoss.parse(loss), self.calibration,
                               self.forward, self.eot)

    def with_forward(self, forward) -> "AttackObjective":
        """The same objective computing the detector's logits with `forward(detector, images)` (None: eager)."""
        return AttackObjective(self.detector, self.targets, self.objective, self.loss_kind, self.calibration, forward,
                               self.eot)

    def with_eot(self, eot: int) -> "AttackObjective":
        """The same objective averaging over `eot` forward passes (EOT; 1: one pass)."""
        return AttackObjective(self.detector, self.targets, self.objective, self.loss_kind, self.calibration,
                               self.forward, eot)


def input_gradient(loss: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """d loss.sum() / d images; zeros where the loss does not depend on the images through autograd (a
    `no_grad` or a detach inside the detector): the attack then learns nothing, as a masked gradient
    would tell it, and the soundness checks report the zero gradient instead of a crash."""
    if not loss.requires_grad:
        return torch.zeros_like(images)
    (grad,) = torch.autograd.grad(loss.sum(), images, allow_unused=True)
    return torch.zeros_like(images) if grad is None else grad


def check_eot(eot) -> int:
    """`eot` as a number of passes >= 1 (ValueError naming the option otherwise)."""
    if isinstance(eot, bool) or not isinstance(eot, (int, float)) or int(eot) != eot or int(eot) < 1:
        raise ValueError(f"eot={eot!r}: expected a whole number of forward passes >= 1 (e.g. eot=20)")
    return int(eot)


def _mean(values):
    """The mean of an iterable of tensors (the tensor itself for one: no extra arithmetic at K = 1)."""
    total, count = None, 0
    for value in values:
        total = value if total is None else total + value
        count += 1
    return total if count == 1 else total / count
