"""FGSM: one gradient step of size ε (Goodfellow et al., ICLR 2015).

https://arxiv.org/abs/1412.6572. L∞: x + ε·sign(∇); L2: x + ε·∇/||∇||₂; clipped to [0, 1].
With `keep_best=True` (default) an image whose loss the step lowered keeps its clean value.
"""
from __future__ import annotations

import torch

from robustad.attacks.attack import Attack, keep_best
from robustad.attacks.registry import register_attack
from robustad.attacks.threat_model import ascent_direction, project


@register_attack("fgsm")
class FGSM(Attack):
    """Fast gradient sign method: a single step of size ε."""

    name = "fgsm"
    display_name = "FGSM"
    table_order = 20
    default_steps = 1

    def __init__(self, threat, *, keep_best: bool = True, **kwargs):
        super().__init__(threat, **kwargs)
        self.keep_best = keep_best

    def perturb(self, objective, images):
        eps, norm = self.threat.eps, self.threat.norm
        loss, grad = objective.loss_and_grad(images)
        adv = project(images + eps * ascent_direction(grad, norm), images, norm, eps)
        if not self.keep_best:
            return adv
        with torch.no_grad():
            adv_loss = objective.loss(adv)
        return keep_best(loss, images.clone(), adv_loss, adv)[1]

    def describe(self):
        return {**super().describe(), "steps": 1, "step_size": self.threat.eps, "keep_best": self.keep_best}
