"""The Attack base class: `attack(detector, images, masks) -> adversarial images`.

Subclasses implement one method, `perturb(objective, images)`. The base class builds the unit
targets from the masks, freezes the detector (eval mode, no parameter gradients) for the attack's
duration and hands the subclass an `AttackObjective` to maximize.

`calibration` (`attacks/calibration.py`): the two-class reading and success thresholds of the
whole test set's clean unit logits, which the runner computes once per cell and passes to every
call. Without it, the batch's own clean logits calibrate it: the batch is then the test set.

Adaptive options, accepted by every attack (`create_attack(..., eot=K, bpda=True)`, `--attack-option`):
- `eot=K`: every loss, gradient and ranking the attack reads is the mean over K forward passes with
  fresh randomness (`AttackObjective.evaluate`, Expectation over Transformation). Default (None):
  1 for a deterministic detector, `RANDOMIZED_EOT` = 20 for one that declares `randomized = True`,
  the EOT of AutoAttack's version for randomized defenses (Croce & Hein, ICML 2020,
  https://arxiv.org/abs/2003.01690; its `version='rand'` runs APGD-CE and APGD-DLR with
  `eot_iter=20`). `docs/adaptive.md` says why and when to raise it.
- `bpda=True`: for the duration of the call every `robustad.methods.NonDifferentiable` step of the
  detector passes its surrogate's gradient (BPDA, Athalye et al., ICML 2018); False (default): the
  steps' own gradients, as the detector defines them.
`describe()` records both (`eot` is the number of passes the last call used; "auto" before any call).

Randomness: `image_random(images, stream)` draws per image, from the seed and the image's pixels
(`attacks/image_random.py`), so an image gets the same random start wherever it sits in whichever
batch; `generator(offset)` is one stream for the call, for what all images share.
"""
from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch

from robustad.attacks.image_random import ImageRandom
from robustad.attacks.objectives import AttackObjective, FlipLoss, Objective, check_eot
from robustad.attacks.threat_model import Norm, ThreatModel


RANDOMIZED_EOT = 20  # default EOT for a detector declaring `randomized = True` (AutoAttack's `rand` version)


def default_eot(detector) -> int:
    """EOT passes when none is asked for: `RANDOMIZED_EOT` for a detector declaring `randomized`, else 1."""
    return RANDOMIZED_EOT if getattr(detector, "randomized", False) else 1


def parse_flag(name: str, value) -> bool:
    """A boolean attack option given as a bool or as text ("true", "false", "1", "0")."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: expected true or false")


@contextlib.contextmanager
def adaptive(attack, detector):
    """Frozen detector, BPDA switched to the attack's `bpda` for the block; yields the EOT passes to use."""
    from robustad.methods.non_differentiable import bpda_enabled  # lazy: robustad.methods imports attacks

    eot = attack.eot if attack.eot is not None else default_eot(detector)
    attack.last_eot = eot
    with frozen(detector), bpda_enabled(attack.bpda):
        yield eot


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
        eot: int | None = None,
        bpda: bool | str = False,
    ):
        self.threat = threat
        self.objective = Objective.parse(objective)
        self.loss = FlipLoss.parse(loss)
        self.eot = None if eot is None else check_eot(eot)
        self.bpda = parse_flag("bpda", bpda)
        self.last_eot: int | None = None  # the EOT passes of the last call (`eot` or the detector's default)
        if threat.norm not in self.norms:
            raise ValueError(
                f"attack {self.name!r} supports norms {', '.join(n.value for n in self.norms)}, "
                f"not {threat.norm.value}"
            )

    def __call__(self, detector, images: torch.Tensor, masks: torch.Tensor | None, labels: torch.Tensor | None = None,
                 calibration=None):
        """Adversarial images (B, 3, H, W) for images (B, 3, H, W) in [0, 1], masks (B, 1, H, W) or
        None, labels (B,) or None; `calibration`: the test set's `UnitCalibration` (None: the batch's)."""
        with adaptive(self, detector) as eot:
            objective = AttackObjective.build(detector, images, masks, labels, self.objective, self.loss, calibration,
                                              eot=eot)
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
            "eot": self.last_eot if self.last_eot is not None else (self.eot or "auto"),
            "bpda": self.bpda,
        }

    def adaptive_options(self) -> dict[str, Any]:
        """`eot` and `bpda` as given, for building member attacks that share them."""
        return {"eot": self.eot, "bpda": self.bpda}

    def __repr__(self) -> str:
        d = self.describe()
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v}" for k, v in d.items()) + ")"


def keep_best(best_loss, best_adv, loss, adv):
    """Per-image update of the best-loss iterate (AUROC has no success threshold)."""
    better = loss > best_loss
    best_loss = torch.where(better, loss, best_loss)
    best_adv = torch.where(better.view(-1, *[1] * (adv.dim() - 1)), adv, best_adv)
    return best_loss, best_adv
