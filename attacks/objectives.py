"""Label-flipping attack objectives for anomaly maps (PatchGuard paper §3, appendix H and L).

An attack sees a detector through *units*: the cells of M(x) (localization objective, the paper's
default) or the image score S(x) (detection objective). Each unit has a target in {0, 1}; the
attack flips them: it raises the logits of normal units and lowers those of anomalous ones.

Losses (per image, to maximize):
- `margin` (default, non-saturating): mean logit of normal units − mean logit of anomalous units,
  the PatchGuard code's attack loss. A saturating BCE-flip loss stalls on confident models
  (DESIGN.md, "measured while planning").
- `ce`: mean binary cross-entropy of the units against their true targets (appendix H's "sum of
  cross-entropy" over patches; with per-cell two-class logits [0, m] this is exactly the
  untargeted CE that torchattacks maximizes). It saturates on confident models.
"""
from __future__ import annotations


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


class AttackObjective:
    """What an attack maximizes for one batch: a detector, its unit targets, an objective and a loss.

    `targets` are (B, U): cell targets flattened (localization) or image labels (detection).
    """

    def __init__(self, detector, targets: torch.Tensor, objective: Objective, loss: FlipLoss):
        self.detector = detector
        self.targets = targets
        self.objective = objective
        self.loss_kind = loss
        self.forward_count = 0

    @classmethod
    def build(cls, detector, images, masks, labels=None, objective=Objective.LOCALIZATION, loss=FlipLoss.MARGIN):
        objective, loss = Objective.parse(objective), FlipLoss.parse(loss)
        if masks is None:
            masks = torch.zeros_like(images[:, :1])
        if labels is None:
            labels = (masks.flatten(1).amax(1) > 0.5).float()
        labels = labels.to(images.device).float()
        if objective == Objective.DETECTION:
            targets = labels.view(-1, 1)
        else:
            with torch.no_grad():
                grid = tuple(detector(images[:1]).shape[-2:])
            cells = patch_targets(masks.to(images.device), grid)
            # An anomalous image without a mask (e.g. Head-CT): every cell counts as anomalous.
            unmasked = (labels > 0.5) & (cells.flatten(1).amax(1) < 0.5)
            cells[unmasked] = 1.0
            targets = cells.flatten(1)
        return cls(detector, targets, objective, loss)

    def unit_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, U) logits of the attacked units."""
        self.forward_count += images.shape[0]
        logits = self.detector(images)
        if self.objective == Objective.DETECTION:
            return self.detector.score(logits).view(-1, 1)
        return logits.flatten(1)

    def loss_from_logits(self, logits: torch.Tensor, loss: FlipLoss | None = None) -> torch.Tensor:
        return flip_loss(logits.float(), self.targets, loss or self.loss_kind)

    def loss(self, images: torch.Tensor, loss: FlipLoss | None = None) -> torch.Tensor:
        """Per-image loss (B,) to maximize."""
        return self.loss_from_logits(self.unit_logits(images), loss)

    def loss_and_grad(self, images: torch.Tensor, loss: FlipLoss | None = None):
        """Per-image loss (B,) and its gradient with respect to the images only."""
        x = images.detach().requires_grad_(True)
        with torch.enable_grad():
            value = self.loss(x, loss)
            (grad,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), grad.detach()

    def subset(self, index: torch.Tensor) -> "AttackObjective":
        """The same objective restricted to the images at `index`."""
        return AttackObjective(self.detector, self.targets[index], self.objective, self.loss_kind)
