"""CAA: Composite Adversarial Attacks (Mao et al., AAAI 2021), adapted to anomaly maps.

Paper: https://arxiv.org/abs/2012.05434; official code: github.com/vtddggg/CAA. The PatchGuard
paper (Table 4, appendix H) evaluates with CAA on the patch-wise flip loss.

CAA searches for a *policy*: a sequence of attacks, each with a magnitude (its own ε-ball around
the point it starts from) and a number of steps. Member k starts from member k−1's output; every
iterate stays inside the global ε-ball around the clean image and in [0, 1]. This module runs the
policies CAA published (its `test_attacker.py`), kept as data:

- L∞, ε = 8/255: MultiTargeted(8/255, 50) → MultiTargeted(8/255, 25) → CW-L∞ adaptive step (8/255, 125)
- L2, ε = 0.5:   MultiTargeted(0.5, 100) → PGD adaptive step (0.4375, 25) → DDN (no magnitude, 1000)

Magnitudes scale with the threat model's ε (magnitude · ε / published ε); the steps are scaled so
that the policy uses `steps` in total (default 200, the published L∞ total; the published L2 total
is 1125, run it as `caa-1125`). A custom policy is a tuple of `PolicyStep`s (`policy=` option).

Members (CAA's implementations, re-derived here for two-class units with logits [0, m'], m' the
calibrated unit logit of `attacks/calibration.py`, so that no member depends on the scale or offset
of the detector's logits):
- `multi_targeted`: APGD-T with momentum 0.75 over the 9 runner-up classes. A unit has one other
  class, so it runs once, and the targeted DLR loss (undefined for two logits, as the PatchGuard
  paper notes for AutoAttack) is replaced by its numerator, z_target − z_true, i.e. the objective's
  flip loss (margin by default).
- `cw_linf` (CWLinf_Attack_adaptive_stepsize): the adaptive step-size ascent on the CW loss
  −relu(z_true − z_other + κ), κ = 50, per unit, averaged over normal and anomalous units
  separately like the margin loss.
- `pgd_adaptive` (PGD_Attack_adaptive_stepsize): the adaptive step-size ascent on cross-entropy
  (BCE on two-class units).
- `ddn` (Rony et al., CVPR 2019): decoupled direction and norm, L2 only. It needs a success test to
  shrink or grow its norm: `robustad.attacks.flip_success` (all units past the clean units of the
  other kind in the whole test set: the calibration's thresholds, not the batch's). Changes: the norm starts at ε and never exceeds it, the step is cosine-annealed from
  2·ε (DDN's 1 at CIFAR's ε = 0.5) to 1% of that, the gradient is that of the flip loss rather than
  CE (non-saturating, docs/design.md), and there is no 8-bit quantization (it could leave the ε-ball).
The adaptive step-size ascent is CAA's: step 2·magnitude, halved (and restarted from the member's
best point) at APGD-style checkpoints when the loss oscillated or stopped improving. It is not
`attacks/apgd.py`'s `apgd_ascent`, which projects onto one ball: a CAA member must stay inside its
own ball around its start point *and* the global ε-ball around the clean image. It shares APGD's
checkpoint lengths, ρ = 0.75 and momentum 0.75 (`multi_targeted` only, as in CAA).

Dropped from CAA's attack pool: spatial (rotation/translation) and the colour/corruption attacks
(Fog, Brightness, Contrast, Saturate, blurs, noises, JPEG, Elastic, Pixelate, Spatter): not
norm-bounded, so outside the threat model; SPSA, ODI-PGD variants, MI-FGSM, FGSM and CW-L2: not
in the published best policies (CW-L2 is also unbounded). Unlike the official script, a member
after the first is not also run from the clean images (that doubles the cost and only adds a
worst case over two runs).

Every image returns the iterate with the highest flip loss seen across all members (AUROC has no
success threshold). Deterministic under `seed`; random starts are drawn per image
(`attacks/image_random.py`), the same in any batch. The threat model's `step_size`, `restarts` and
`random_start` are not used: each member starts at a random point of its own ball and adapts its
own step size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustad.attacks.apgd import MOMENTUM, RHO, checkpoint_lengths
from robustad.attacks.attack import Attack, keep_best
from robustad.attacks.flip_success import image_success
from robustad.attacks.objectives import FlipLoss, Objective
from robustad.attacks.registry import register_attack
from robustad.attacks.threat_model import Norm, ascent_direction, project, random_start

CW_KAPPA = 50.0  # CAA's CW confidence


@dataclass(frozen=True)
class PolicyStep:
    """One member of a CAA policy: `attack` name, `magnitude` at the published ε (None: DDN's own norm), `steps`."""

    attack: str
    magnitude: float | None
    steps: int


PUBLISHED_EPS = {Norm.LINF: 8 / 255, Norm.L2: 0.5}
LINF_POLICY = (
    PolicyStep("multi_targeted", 8 / 255, 50),
    PolicyStep("multi_targeted", 8 / 255, 25),
    PolicyStep("cw_linf", 8 / 255, 125),
)
L2_POLICY = (
    PolicyStep("multi_targeted", 0.5, 100),
    PolicyStep("pgd_adaptive", 0.4375, 25),
    PolicyStep("ddn", None, 1000),
)
POLICIES = {Norm.LINF: LINF_POLICY, Norm.L2: L2_POLICY}


def cw_flip_loss(logits: torch.Tensor, targets: torch.Tensor, kappa: float = CW_KAPPA) -> torch.Tensor:
    """Per-image CW loss (B,) of two-class units [0, m] (m calibrated): −relu(z_true − z_other + κ), averaged per kind."""
    normal = 1.0 - targets
    gap = torch.where(targets > 0.5, logits, -logits)  # z_true − z_other
    per_unit = -F.relu(gap + kappa)
    return (per_unit * normal).sum(1) / normal.sum(1).clamp_min(1.0) + (per_unit * targets).sum(1) / targets.sum(1).clamp_min(1.0)


@register_attack("caa")
class CAA(Attack):
    """Composite adversarial attack: CAA's published best L∞ / L2 policies, run in sequence."""

    name = "caa"
    display_name = "CAA"
    table_order = 50
    default_steps = 200

    def __init__(
        self, threat, *, policy: tuple[PolicyStep, ...] | None = None,
        objective: str | Objective = Objective.LOCALIZATION, loss: str | FlipLoss = FlipLoss.MARGIN, **kwargs,
    ):
        super().__init__(threat, objective=objective, loss=loss, **kwargs)
        self.policy = tuple(policy) if policy is not None else POLICIES[self.threat.norm]
        for step in self.policy:
            if step.attack not in MEMBERS:
                raise ValueError(f"caa: unknown policy member {step.attack!r}; valid: {', '.join(MEMBERS)}")
            if step.attack == "ddn" and self.threat.norm != Norm.L2:
                raise ValueError("caa: the ddn member is an L2 attack; use it only with norm l2")

    def scaled_policy(self) -> list[tuple[str, float | None, int]]:
        """The policy at this threat model: (attack, magnitude, steps) with ε- and step-scaling applied."""
        scale = self.threat.eps / PUBLISHED_EPS[self.threat.norm]
        total, done, bounds = sum(s.steps for s in self.policy), 0, [0]
        for s in self.policy:  # cumulative rounding: the member steps add up to `steps`
            done += s.steps
            bounds.append(round(done * self.threat.steps / total))
        return [
            (s.attack, None if s.magnitude is None else min(s.magnitude * scale, self.threat.eps),
             max(1, bounds[i + 1] - bounds[i]))
            for i, s in enumerate(self.policy)
        ]

    def perturb(self, objective, images):
        run = _Run(objective, images, self.threat.norm, self.threat.eps, self.image_random(images))
        current = images.clone()
        for attack, magnitude, steps in self.scaled_policy():
            current = MEMBERS[attack](run, current, magnitude, steps)
        return run.best_adv

    def describe(self):
        return {**super().describe(), "policy": [list(p) for p in self.scaled_policy()]}


class _Run:
    """Shared state of one CAA call: the objective, the clean images, the best-flip-loss iterates."""

    def __init__(self, objective, clean, norm, eps, generator):
        self.objective, self.clean, self.norm, self.eps, self.generator = objective, clean, norm, eps, generator
        with torch.no_grad():
            clean_logits = objective.unit_logits(clean)
        self.thresholds = objective.calibration.thresholds  # the whole test set's, not the batch's
        self.best_loss = objective.loss_from_logits(clean_logits)
        self.best_adv = clean.clone()

    def evaluate(self, adv: torch.Tensor, member_loss: str):
        """Member loss (B,), its input gradient and the unit logits at `adv`; updates the best iterates."""
        def per_pass(logits):
            if member_loss == "cw":
                loss = cw_flip_loss(logits.float(), self.objective.targets)
            elif member_loss == "ce":
                loss = self.objective.loss_from_logits(logits, FlipLoss.CE)
            else:
                loss = self.objective.loss_from_logits(logits)
            return loss, self.objective.loss_from_logits(logits.detach()), logits.detach()

        (loss, flip, logits), grad = self.objective.evaluate(adv, per_pass)  # EOT: means over passes
        self.best_loss, self.best_adv = keep_best(self.best_loss, self.best_adv, flip, adv.detach())
        return loss, grad, logits

    def inside(self, adv, start, radius):
        """Projection onto the member's ball around `start`, then onto the global ε-ball and [0, 1]."""
        return project(project(adv, start, self.norm, radius), self.clean, self.norm, self.eps)


def adaptive_ascent(run: _Run, start, radius, steps, member_loss, momentum):
    """CAA's adaptive step-size member (APGD-style checkpoints); returns the member's best point."""
    view = (-1,) + (1,) * (start.dim() - 1)
    adv = run.inside(random_start(start, run.norm, radius, run.generator), start, radius)
    loss, grad, _ = run.evaluate(adv, member_loss)
    best_loss, best_adv, best_grad = loss.clone(), adv.clone(), grad.clone()
    step = torch.full((start.shape[0],), 2.0 * radius, device=start.device)
    checkpoint, shrink, shortest = checkpoint_lengths(steps)
    since_check, increases = 0, torch.zeros_like(loss)
    reduced_last = torch.ones_like(loss, dtype=torch.bool)
    best_at_check = best_loss.clone()
    previous, previous_loss = adv.clone(), loss
    for i in range(steps):
        moved = run.inside(adv + step.view(view) * ascent_direction(grad, run.norm), start, radius)
        if momentum and i > 0:
            moved = run.inside(adv + MOMENTUM * (moved - adv) + (1 - MOMENTUM) * (adv - previous), start, radius)
        previous, adv = adv, moved
        loss, grad, _ = run.evaluate(adv, member_loss)
        increases += (loss > previous_loss).float()
        previous_loss = loss
        better = loss > best_loss
        best_loss = torch.where(better, loss, best_loss)
        best_adv[better], best_grad[better] = adv[better], grad[better]
        since_check += 1
        if since_check == checkpoint:
            oscillating = increases <= RHO * checkpoint
            stalled = ~reduced_last & (best_at_check >= best_loss)
            reduce = oscillating | stalled
            step[reduce] /= 2.0
            adv[reduce], grad[reduce] = best_adv[reduce], best_grad[reduce]
            reduced_last, best_at_check = reduce, best_loss.clone()
            since_check, increases = 0, torch.zeros_like(loss)
            checkpoint = max(checkpoint - shrink, shortest)
    return best_adv


def decoupled_direction_norm(run: _Run, start, magnitude, steps):
    """DDN (L2): normalized-gradient steps, the perturbation's norm shrunk on success, grown otherwise."""
    view = (-1,) + (1,) * (start.dim() - 1)
    delta = start - run.clean
    norm = torch.full((start.shape[0],), run.eps, device=start.device)
    top = 2.0 * run.eps
    for i in range(steps):
        adv = (run.clean + delta).clamp(0, 1)
        _, grad, logits = run.evaluate(adv, "flip")
        won = image_success(logits, run.objective.targets, run.thresholds)
        size = 0.01 * top + (top - 0.01 * top) * (1 + math.cos(math.pi * i / steps)) / 2
        delta = delta + size * ascent_direction(grad, Norm.L2)
        norm = (norm * torch.where(won, 0.95, 1.05)).clamp(max=run.eps)
        delta = delta * (norm / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).view(view)
        delta = project(run.clean + delta, run.clean, Norm.L2, run.eps) - run.clean
    with torch.no_grad():
        adv = (run.clean + delta).clamp(0, 1)
        flip = run.objective.loss(adv)
    run.best_loss, run.best_adv = keep_best(run.best_loss, run.best_adv, flip, adv)
    return adv


MEMBERS = {
    "multi_targeted": lambda run, start, magnitude, steps: adaptive_ascent(run, start, magnitude, steps, "flip", True),
    "cw_linf": lambda run, start, magnitude, steps: adaptive_ascent(run, start, magnitude, steps, "cw", False),
    "pgd_adaptive": lambda run, start, magnitude, steps: adaptive_ascent(run, start, magnitude, steps, "ce", False),
    "ddn": decoupled_direction_norm,
}
