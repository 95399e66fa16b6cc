"""Square Attack: score-based black-box random search (Andriushchenko et al., ECCV 2020).

https://arxiv.org/abs/1912.00049, the black-box member of AutoAttack. L∞ version: start from
vertical stripes of ±ε (one random sign per column and channel); at each query pick a random
square window of side s and give it a fresh ±ε per channel; keep the proposal when the loss
increases. The window covers a fraction p of the image, p = p_init halved at queries 10, 50, 200,
500, 1000, 2000, 4000, 6000, 8000 of a 10,000-query budget (rescaled to the given budget).

Changes for anomaly maps: the loss is the margin flip loss of the detector's units (mean normal
logit − mean anomalous logit, `attacks/objectives.py`) in place of the classification margin, and
every image is attacked for the whole budget (AUROC has no "fooled" point to stop at); each image
returns its best point, which is the current point of a random search that only accepts gains.

Defaults (`create_attack("square")`): 5,000 queries (AutoAttack's standard setting; `square-1000`
sets the count, each query is one forward of the batch), p_init = 0.8. Supports L∞ only; the L2
variant's pattern updates are not implemented (AutoAttack under L2 runs without it, see
`attacks/autoattack.py`).
"""
from __future__ import annotations

import math

import torch

from robustad.attacks.attack import Attack
from robustad.attacks.objectives import FlipLoss
from robustad.attacks.registry import register_attack
from robustad.attacks.threat_model import Norm

SCHEDULE_QUERIES = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of a 10,000-query budget


def window_fraction(p_init: float, query: int, budget: int) -> float:
    """The fraction p of the image the window covers at `query` of `budget` queries."""
    scaled = int(query / budget * 10_000)
    halvings = sum(scaled > q for q in SCHEDULE_QUERIES)
    return p_init / 2 ** halvings


@register_attack("square")
class Square(Attack):
    """Square Attack (L∞) on the margin flip loss; forward passes only."""

    name = "square"
    norms = (Norm.LINF,)
    default_steps = 5000

    def __init__(self, threat, *, p_init: float = 0.8, **kwargs):
        super().__init__(threat, **kwargs)
        if not 0.0 < p_init <= 1.0:
            raise ValueError(f"square: p_init must be in (0, 1], got {p_init}")
        self.p_init = float(p_init)

    @torch.no_grad()
    def perturb(self, objective, images):
        eps, budget = self.threat.eps, self.threat.steps
        gen = self.generator()
        batch, channels, height, width = images.shape
        signs = torch.randint(0, 2, (batch, channels, 1, width), generator=gen).to(images) * 2 - 1
        adv = (images + eps * signs).clamp(0.0, 1.0)
        best = objective.loss(adv, FlipLoss.MARGIN)
        clean = objective.loss(images, FlipLoss.MARGIN)
        rows = torch.arange(height, device=images.device).view(1, 1, height, 1)
        cols = torch.arange(width, device=images.device).view(1, 1, 1, width)
        for query in range(1, budget):
            p = window_fraction(self.p_init, query, budget)
            side = min(max(int(round(math.sqrt(p * height * width))), 1), min(height, width) - 1)
            top = torch.randint(0, height - side + 1, (batch,), generator=gen).to(images.device).view(-1, 1, 1, 1)
            left = torch.randint(0, width - side + 1, (batch,), generator=gen).to(images.device).view(-1, 1, 1, 1)
            window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            fresh = torch.randint(0, 2, (batch, channels, 1, 1), generator=gen).to(images) * 2 - 1
            delta = adv - images
            # A proposal equal to the current window wastes a query: flip its signs instead.
            current_sign = (delta * window).flatten(2).sum(2).sign().view(batch, channels, 1, 1)
            same = (current_sign == fresh).all(dim=1, keepdim=True)
            fresh = torch.where(same, -fresh, fresh)
            proposal = (images + torch.where(window, eps * fresh, delta)).clamp(0.0, 1.0)
            loss = objective.loss(proposal, FlipLoss.MARGIN)
            better = loss > best
            best = torch.where(better, loss, best)
            adv = torch.where(better.view(-1, 1, 1, 1), proposal, adv)
        # The stripes start can be worse than the clean image for an image no query improved.
        return torch.where((clean > best).view(-1, 1, 1, 1), images, adv)

    def describe(self):
        return {**super().describe(), "loss": "margin", "queries": self.threat.steps, "p_init": self.p_init, "step_size": None}
