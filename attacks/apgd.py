"""APGD: Auto-PGD, PGD with an automatic step-size schedule and momentum (Croce & Hein, ICML 2020).

https://arxiv.org/abs/2003.01690 (the attack of AutoAttack). The algorithm, as in the paper and
its reference code (fra31/auto-attack, `autopgd_base.py`):

- start: a random point of the ε-ball (L∞: uniform noise rescaled to L∞ norm ε; L2: a point on
  the ε-sphere), clipped to [0, 1];
- step: z = P(x_k + η·dir(∇)), x_{k+1} = P(x_k + a·(z − x_k) + (1 − a)·(x_k − x_{k−1})), with
  momentum a = 0.75 (a = 1 on the first step), dir = sign under L∞ and ∇/‖∇‖₂ under L2, P the
  projection onto the ε-ball and [0, 1];
- step size η = 2ε at the start, per image; at checkpoints p_0 = 0, p_1 = 0.22,
  p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) (fractions of the iterations) η is halved when
  (1) the loss increased in at most ρ = 0.75 of the steps since the last checkpoint, or (2) η was
  not halved at the last checkpoint and the best loss has not improved since; a halved image
  restarts from its best point and the gradient there.

Changes for anomaly maps (PatchGuard paper §3, appendix H):
- the loss is a flip loss of the detector's calibrated units (`attacks/objectives.py`,
  `attacks/calibration.py`): `margin` (mean normal-cell logit − mean anomalous-cell logit, the
  default) or `ce` (the two-class CE of every cell against its true target, APGD-CE's loss); or,
  for other attacks that reuse the core, any unit loss of `attacks/unit_losses.py`;
- AUROC has no "fooled" threshold, so each image keeps the iterate with the highest *margin*
  flip loss seen (comparable across losses and restarts), as AutoAttack's `best_loss=True` does
  with its own loss; restarts run on every image.

Defaults (`create_attack("apgd")`): 100 iterations, one restart, random start (drawn per image),
ρ = 0.75, loss `margin`; `apgd-1000` sets the iterations. The margin is the default because the
CE saturates on confident units (measured in `docs/findings/attack-invariance.md`). APGD-CE stays
inside AutoAttack (`attacks/autoattack.py`) and is `loss=ce`. The threat model's step size is not used (APGD
adapts its own, starting at 2ε).

The core, `apgd_ascent`, takes a function x -> `Evaluation` and is shared with SEA, AutoAttack
and other attacks (CAA, A³): `objective_evaluation` builds one from an `AttackObjective`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from robustad.attacks.attack import Attack, keep_best
from robustad.attacks.objectives import FlipLoss
from robustad.attacks.registry import register_attack
from robustad.attacks.threat_model import Norm, ascent_direction, normal_like, project, uniform_like
from robustad.attacks.unit_losses import UNIT_LOSSES, unit_loss

MOMENTUM = 0.75
RHO = 0.75


class Evaluation(NamedTuple):
    """One forward/backward at x: the input gradient of the attack loss, the loss that steers the
    step size (`track`, (B,)) and the loss that ranks iterates for the returned point (`rank`, (B,))."""

    grad: torch.Tensor
    track: torch.Tensor
    rank: torch.Tensor


Evaluate = Callable[[torch.Tensor], Evaluation]


class APGDResult(NamedTuple):
    best_adv: torch.Tensor  # (B, ...) the iterate with the highest rank per image
    best_rank: torch.Tensor  # (B,)
    best_track_adv: torch.Tensor  # (B, ...) the iterate with the highest track loss per image
    track_history: torch.Tensor  # (steps + 1, B) track loss at every iterate


def objective_evaluation(objective, loss: str = "ce", track: str | None = None) -> Evaluate:
    """x -> Evaluation for an `AttackObjective`: one forward and one backward per call (per EOT pass).

    `loss` is differentiated, `track` (default: `loss`) steers APGD's step size, and iterates are
    ranked by the margin flip loss. Names are those of `attacks/unit_losses.py`.
    """
    for name in (loss, track):
        if name is not None and name not in UNIT_LOSSES:
            raise ValueError(f"unknown attack loss {name!r}; expected one of {', '.join(UNIT_LOSSES)}")

    def per_pass(logits: torch.Tensor):
        logits = logits.float()
        value = unit_loss(loss, logits, objective.targets)
        detached = logits.detach()
        tracked = value if track in (None, loss) else unit_loss(track, detached, objective.targets)
        return value, tracked, objective.loss_from_logits(detached, FlipLoss.MARGIN)

    def evaluate(x: torch.Tensor) -> Evaluation:
        (_, tracked, rank), grad = objective.evaluate(x, per_pass)  # EOT: means over the objective's passes
        return Evaluation(grad, tracked, rank)

    return evaluate


def checkpoint_lengths(steps: int) -> tuple[int, int, int]:
    """(first interval, decrement, minimum interval) in iterations: 0.22, 0.03, 0.06 of `steps`."""
    return max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)


def apgd_start(clean: torch.Tensor, norm: Norm, eps: float, generator) -> torch.Tensor:
    """APGD's random start: L∞ uniform noise scaled to norm ε, L2 a point on the ε-sphere.

    `generator`: an `ImageRandom` (per image, the same in any batch) or a `torch.Generator`."""
    shape = (-1, *[1] * (clean.dim() - 1))
    if norm == Norm.LINF:
        noise = uniform_like(clean, generator) * 2 - 1
        noise = noise / noise.flatten(1).abs().amax(1).clamp_min(1e-12).view(shape)
    else:
        noise = normal_like(clean, generator)
        noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
    return (clean + eps * noise).clamp(0.0, 1.0)


def apgd_ascent(
    evaluate: Evaluate,
    clean: torch.Tensor,
    start: torch.Tensor,
    norm: Norm,
    eps: float,
    steps: int,
    rho: float = RHO,
    momentum: float = MOMENTUM,
) -> APGDResult:
    """One APGD run of `steps` iterations from `start` (inside the ε-ball around `clean`).

    Step-size control and the restart point follow `track`; the returned `best_adv` is, per
    image, the iterate with the highest `rank`. Costs steps + 1 calls of `evaluate`.
    """
    norm = Norm.parse(norm)
    batch = clean.shape[0]
    view = (-1, *[1] * (clean.dim() - 1))
    adv = project(start.detach(), clean, norm, eps)
    first = evaluate(adv)
    grad = first.grad
    best_track, best_track_adv, best_grad = first.track.clone(), adv.clone(), grad.clone()
    best_rank, best_adv = first.rank.clone(), adv.clone()
    history = [first.track]

    step_size = torch.full((batch,), 2.0 * eps, device=clean.device, dtype=clean.dtype)
    interval, decrement, min_interval = checkpoint_lengths(steps)
    since_check = 0
    best_at_last_check = best_track.clone()
    halved_at_last_check = torch.ones(batch, dtype=torch.bool, device=clean.device)
    previous = adv.clone()

    for i in range(steps):
        with torch.no_grad():
            a = momentum if i > 0 else 1.0
            velocity = adv - previous
            previous = adv
            z = project(adv + step_size.view(view) * ascent_direction(grad, norm), clean, norm, eps)
            adv = project(adv + a * (z - adv) + (1.0 - a) * velocity, clean, norm, eps)

        current = evaluate(adv)
        grad = current.grad
        history.append(current.track)
        best_rank, best_adv = keep_best(best_rank, best_adv, current.rank, adv)
        improved = current.track > best_track
        best_track = torch.where(improved, current.track, best_track)
        best_track_adv = torch.where(improved.view(view), adv, best_track_adv)
        best_grad = torch.where(improved.view(view), grad, best_grad)

        since_check += 1
        if since_check == interval:
            recent = torch.stack(history[-interval - 1:])
            increases = (recent[1:] > recent[:-1]).float().sum(0)
            oscillating = increases <= interval * rho
            stalled = ~halved_at_last_check & (best_at_last_check >= best_track)
            halve = oscillating | stalled
            halved_at_last_check = halve
            best_at_last_check = best_track.clone()
            if halve.any():
                step_size = torch.where(halve, step_size / 2.0, step_size)
                adv = torch.where(halve.view(view), best_track_adv, adv)
                grad = torch.where(halve.view(view), best_grad, grad)
            since_check = 0
            interval = max(interval - decrement, min_interval)

    return APGDResult(best_adv, best_rank, best_track_adv, torch.stack(history))


@register_attack("apgd")
class APGD(Attack):
    """Auto-PGD on the margin loss by default (APGD-CE with `loss="ce"`), L∞ or L2."""

    name = "apgd"
    display_name = "APGD"
    table_order = 30
    default_steps = 100

    def __init__(self, threat, *, loss: str = "margin", random_init: bool = True, rho: float = RHO, **kwargs):
        super().__init__(threat, loss=loss, **kwargs)
        self.random_init = random_init
        self.rho = float(rho)
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"apgd: rho must be in (0, 1], got {rho}")

    def perturb(self, objective, images):
        t = self.threat
        evaluate = objective_evaluation(objective, self.loss.value)
        best_rank = torch.full((images.shape[0],), -float("inf"), device=images.device)
        best_adv = images.clone()
        rng = self.image_random(images) if self.random_init or t.random_start else None
        for restart in range(t.restarts):
            if self.random_init or t.random_start:
                start = apgd_start(images, t.norm, t.eps, rng)
            else:
                start = images.clone()
            run = apgd_ascent(evaluate, images, start, t.norm, t.eps, t.steps, rho=self.rho)
            best_rank, best_adv = keep_best(best_rank, best_adv, run.best_rank, run.best_adv)
        return best_adv

    def describe(self):
        return {
            **super().describe(),
            "step_size": 2.0 * self.threat.eps,
            "random_start": self.random_init or self.threat.random_start,
            "rho": self.rho,
            "momentum": MOMENTUM,
        }
