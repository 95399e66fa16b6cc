"""The Attack base class: `attack(detector, images, masks) -> adversarial images`.

Subclasses implement one method, `perturb(objective, images)`. The base class builds the unit
targets from the masks, freezes the detector (eval mode, no parameter gradients) for the attack's
duration and hands the subclass an `AttackObjective` to maximize.

`calibration` (`attacks/calibration.py`): the two-class reading and success thresholds of the
whole test set's clean unit logits, which the runner computes once per cell and passes to every
call. Without it, the batch's own clean logits calibrate it: the batch is then the test set.

Randomness: `image_random(images, stream)` draws per image, from the seed and the image's pixels
(`attacks/image_random.py`), so an image gets the same random start wherever it sits in whichever
batch; `generator(offset)` is one stream for the call, for what all images share.
"""
from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch

from robustad.attacks.image_random import ImageRandom
from robustad.attacks.objectives import AttackObjective, FlipLoss, Objective
from robustad.attacks.threat_model import Norm, ThreatModel


@contextlib.contextmanager
def frozen(model: torch.nn.Module):
    """Eval mode and `requires_grad=False` on every parameter; both restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


class Attack:
    """Base of every attack. `norms` lists the norms the algorithm supports."""

    name: ClassVar[str] = "attack"
    display_name: ClassVar[str | None] = None  # the label in tables and reports (default: `name`)
    table_order: ClassVar[int] = 50  # table columns sort by it, then by name
    norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)
    # True when `steps` counts queries (black-box attacks): a profile's default number of gradient
    # iterations does not apply, the attack's own `default_steps` does.
    steps_are_queries: ClassVar[bool] = False

    def __init__(
        self,
        threat: ThreatModel,
        *,
        objective: str | Objective = Objective.LOCALIZATION,
        loss: str | FlipLoss = FlipLoss.MARGIN,
    ):
        self.threat = threat
        self.objective = Objective.parse(objective)
        self.loss = FlipLoss.parse(loss)
        if threat.norm not in self.norms:
            raise ValueError(
                f"attack {self.name!r} supports norms {', '.join(n.value for n in self.norms)}, "
                f"not {threat.norm.value}"
            )

    def __call__(self, detector, images: torch.Tensor, masks: torch.Tensor | None, labels: torch.Tensor | None = None,
                 calibration=None):
        """Adversarial images (B, 3, H, W) for images (B, 3, H, W) in [0, 1], masks (B, 1, H, W) or
        None, labels (B,) or None; `calibration`: the test set's `UnitCalibration` (None: the batch's)."""
        with frozen(detector):
            objective = AttackObjective.build(detector, images, masks, labels, self.objective, self.loss, calibration)
            if self.threat.eps == 0:
                return images.detach().clone()
            adv = self.perturb(objective, images.detach())
        return adv.detach()

    def perturb(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        """Returns adversarial images inside the threat model (the one method to implement)."""
        raise NotImplementedError

    # -- helpers shared by subclasses ------------------------------------------------------------
    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the threat model's seed (deterministic under a seed)."""
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int(self.threat.seed) * 1_000_003 + offset)
        return gen

    def image_random(self, images: torch.Tensor, stream: int = 0) -> ImageRandom:
        """Per-image random numbers seeded from the threat model's seed, `stream` and each image."""
        return ImageRandom(images, self.threat.seed, stream)

    def describe(self) -> dict[str, Any]:
        """What the result record stores about the attack."""
        t = self.threat
        return {
            "attack": self.name,
            "norm": t.norm.value,
            "eps": t.eps,
            "steps": t.steps,
            "step_size": t.alpha,
            "restarts": t.restarts,
            "random_start": t.random_start,
            "seed": t.seed,
            "objective": self.objective.value,
            "loss": self.loss.value,
        }

    def __repr__(self) -> str:
        d = self.describe()
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v}" for k, v in d.items()) + ")"


def keep_best(best_loss, best_adv, loss, adv):
    """Per-image update of the best-loss iterate (AUROC has no success threshold)."""
    better = loss > best_loss
    best_loss = torch.where(better, loss, best_loss)
    best_adv = torch.where(better.view(-1, *[1] * (adv.dim() - 1)), adv, best_adv)
    return best_loss, best_adv
