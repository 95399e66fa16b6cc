"""SegPGD: PGD with a loss that shifts from correct to wrong units (Gu et al., ECCV 2022).

https://arxiv.org/abs/2207.12391. At iteration t = 1..T the loss is
    L_t = (1 − λ_t)/U · Σ_{correct units} CE + λ_t/U · Σ_{wrong units} CE,   λ_t = (t − 1) / (2T),
so the attack first flips the units still labelled correctly and then keeps the flipped ones
flipped. Steps are PGD's: x ← P(x + α·dir(∇L_t)), dir = sign (L∞) or ∇/‖∇‖₂ (L2).

Changes for anomaly maps (PatchGuard paper, appendix H: "applies these attacks patch-wise"):
- pixels become units: the cells of M(x) (localization) or the image score S(x) (detection); a
  unit's calibrated logit m' = (m − τ)/s (`attacks/calibration.py`: τ and s from the whole test
  set's clean logits) is read as two-class logits [0, m'], so CE is the binary CE against the
  unit's true target and a unit is correct when (m' > 0) equals its target. Reading m itself
  (m > 0 "anomalous") counts every unit of a detector with logits ≥ 0 (PatchCore) as anomalous,
  and the attack's strength then depends on the logits' offset;
- each image returns the iterate with the highest margin flip loss seen (AUROC has no
  threshold); the reference returns the last iterate.

Defaults (`create_attack("segpgd")`): 20 iterations (the paper's main setting), random start
(uniform in the ε-ball, as the reference, drawn per image; `random_init=False` starts from the clean image unless
the threat model asks for a random start), step size from the threat model (2.5·ε/steps unless
`step_size` is given), restarts from the threat model. Cost: steps + 1 forwards per restart.
"""
from __future__ import annotations

import torch

from robustad.attacks.attack import Attack, keep_best
from robustad.attacks.objectives import FlipLoss
from robustad.attacks.registry import register_attack
from robustad.attacks.threat_model import ascent_direction, project, random_start
from robustad.attacks.unit_losses import segpgd_cross_entropy


def segpgd_weight(iteration: int, steps: int) -> float:
    """λ_t = (t − 1) / (2T) for iteration t = 1..T: 0 at the start, just under ½ at the end."""
    return (iteration - 1) / (2.0 * steps)


@register_attack("segpgd")
class SegPGD(Attack):
    """SegPGD on per-unit two-class logits, L∞ or L2."""

    name = "segpgd"
    display_name = "SegPGD"
    table_order = 80
    default_steps = 20

    def __init__(self, threat, *, random_init: bool = True, **kwargs):
        super().__init__(threat, **kwargs)
        self.random_init = random_init

    def perturb(self, objective, images):
        t = self.threat
        targets = objective.targets
        best_rank = torch.full((images.shape[0],), -float("inf"), device=images.device)
        best_adv = images.clone()
        rng = self.image_random(images) if self.random_init or t.random_start else None
        for restart in range(t.restarts):
            if self.random_init or t.random_start:
                adv = random_start(images, t.norm, t.eps, rng)
            else:
                adv = images.clone()
            for step in range(1, t.steps + 1):
                weight = segpgd_weight(step, t.steps)
                (_, rank), grad = objective.evaluate(adv, lambda logits: (
                    segpgd_cross_entropy(logits.float(), targets, weight),
                    objective.loss_from_logits(logits.detach(), FlipLoss.MARGIN)))
                best_rank, best_adv = keep_best(best_rank, best_adv, rank, adv)
                adv = project(adv + t.alpha * ascent_direction(grad, t.norm), images, t.norm, t.eps)
            with torch.no_grad():
                final = objective.loss(adv, FlipLoss.MARGIN)
            best_rank, best_adv = keep_best(best_rank, best_adv, final, adv)
        return best_adv

    def describe(self):
        return {**super().describe(), "loss": "segpgd-ce", "random_start": self.random_init or self.threat.random_start}
