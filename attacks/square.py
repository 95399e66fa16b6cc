"""Square Attack: score-based black-box random search (Andriushchenko et al., ECCV 2020).

https://arxiv.org/abs/1912.00049, the black-box member of AutoAttack (reference code
fra31/auto-attack, `square.py`). Each query changes one random square window of side s covering a
fraction p of the image, p = p_init halved at queries 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
8000; a proposal is kept when the loss increases.
- L∞: start from vertical stripes of ±ε (one random sign per column and channel); a proposal
  gives the window a fresh ±ε per channel.
- L2: start from a grid of ±"pseudo-Gaussian" bumps scaled to norm ε; a proposal moves the
  perturbation mass of a second window into the first, adds a fresh ± two-bump pattern there,
  and rescales the whole perturbation to norm ε.

Changes for anomaly maps: the loss is the margin flip loss of the detector's units (mean normal
logit − mean anomalous logit, `attacks/objectives.py`) in place of the classification margin, and
every image is attacked for the whole budget (AUROC has no "fooled" point to stop at); each image
returns its best point (the clean image if no query beat it), as the search only accepts gains.
Windows, signs and bump orientations are drawn per image (`attacks/image_random.py`; the reference
shares the L2 windows across the batch), so an image's search does not depend on its batch.

Defaults (`create_attack("square")`): 5,000 queries and the p-schedule at those query counts, as
AutoAttack runs Square (`n_queries=5000, resc_schedule=False`; `square-1000` sets the count, each
query is one forward of the batch), p_init = 0.8, L∞ or L2. `rescale_schedule=True` stretches the
schedule to the budget (query q of N counts as q·10,000/N: the standalone reference's default,
which at 5,000 queries halves p twice as early); it was this module's only behaviour until
AutoAttack's was made the default, measured in `docs/attacks.md`.
"""
from __future__ import annotations

import math

import torch

from robustad.attacks.attack import Attack
from robustad.attacks.image_random import ImageRandom
from robustad.attacks.objectives import FlipLoss
from robustad.attacks.registry import register_attack
from robustad.attacks.threat_model import Norm

SCHEDULE_QUERIES = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of a 10,000-query budget


def window_fraction(p_init: float, query: int, budget: int, rescale: bool = False) -> float:
    """The fraction p of the image the window covers at `query` (of `budget` queries when `rescale`:
    the schedule stretched from 10,000 queries to the budget)."""
    scaled = int(query / budget * 10_000) if rescale else query
    halvings = sum(scaled > q for q in SCHEDULE_QUERIES)
    return p_init / 2 ** halvings


def unit_l2(delta: torch.Tensor) -> torch.Tensor:
    """Each image's perturbation scaled to L2 norm 1."""
    return delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (delta.dim() - 1))


def bump(rows: int, cols: int) -> torch.Tensor:
    """A (rows, cols) "pseudo-Gaussian" bump of unit L2 norm: the sum of 1/(k+1)² over the
    centred squares of radius k ≥ the Chebyshev distance to the centre."""
    i = torch.arange(rows).view(-1, 1)
    j = torch.arange(cols).view(1, -1)
    distance = torch.maximum((i - rows // 2).abs(), (j - cols // 2).abs())
    radii = max(rows // 2, cols // 2) + 1
    weights = 1.0 / (torch.arange(radii, dtype=torch.float32) + 1) ** 2
    tails = weights.flip(0).cumsum(0).flip(0)
    out = tails[distance]
    return out / out.norm()


def two_bump_pattern(side: int) -> torch.Tensor:
    """The L2 update pattern (side, side): a bump on one half and minus a bump on the other, unit L2 norm."""
    pattern = torch.cat([bump(side // 2, side), -bump(side - side // 2, side)], dim=0)
    return pattern / pattern.norm()


def oriented_patterns(side: int, rng: ImageRandom, like: torch.Tensor) -> torch.Tensor:
    """(B, 1, side, side): the two-bump pattern per image, transposed with probability ½ each."""
    pattern = two_bump_pattern(side).to(like)
    flip = (rng.uniform() > 0.5).view(-1, 1, 1, 1)
    return torch.where(flip, pattern.T, pattern)


def window_masks(top: torch.Tensor, left: torch.Tensor, side: int, height: int, width: int) -> torch.Tensor:
    """(B, 1, H, W) boolean: each image's square window of `side` at (top, left)."""
    rows = torch.arange(height, device=top.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=top.device).view(1, 1, 1, width)
    top, left = top.view(-1, 1, 1, 1), left.view(-1, 1, 1, 1)
    return (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)


def window_index(top: torch.Tensor, left: torch.Tensor, side: int):
    """Advanced indices (batch, rows, cols) selecting each image's window: x[batch, :, rows, cols]
    is (B, side, side, C)."""
    steps = torch.arange(side, device=top.device)
    batch = torch.arange(top.shape[0], device=top.device).view(-1, 1, 1)
    return batch, (top.view(-1, 1) + steps).unsqueeze(2), (left.view(-1, 1) + steps).unsqueeze(1)


@register_attack("square")
class Square(Attack):
    """Square Attack (L∞ or L2) on the margin flip loss; forward passes only."""

    name = "square"
    display_name = "Square"
    table_order = 70
    default_steps = 5000
    steps_are_queries = True

    def __init__(self, threat, *, p_init: float = 0.8, rescale_schedule: bool = False, **kwargs):
        super().__init__(threat, **kwargs)
        if not 0.0 < p_init <= 1.0:
            raise ValueError(f"square: p_init must be in (0, 1], got {p_init}")
        self.p_init = float(p_init)
        self.rescale_schedule = bool(rescale_schedule)

    @torch.no_grad()
    def perturb(self, objective, images):
        search = self._search_linf if self.threat.norm == Norm.LINF else self._search_l2
        adv, best = search(objective, images)
        clean = objective.loss(images, FlipLoss.MARGIN)
        # The start can be worse than the clean image for an image no query improved.
        return torch.where((clean > best).view(-1, 1, 1, 1), images, adv)

    def _search_linf(self, objective, images):
        eps, budget = self.threat.eps, self.threat.steps
        rng = self.image_random(images)
        batch, channels, height, width = images.shape
        adv = (images + eps * rng.signs(channels, 1, width)).clamp(0.0, 1.0)
        best = objective.loss(adv, FlipLoss.MARGIN)
        for query in range(1, budget):
            p = window_fraction(self.p_init, query, budget, self.rescale_schedule)
            side = min(max(int(round(math.sqrt(p * height * width))), 1), min(height, width) - 1)
            top, left = rng.integers(height - side + 1), rng.integers(width - side + 1)
            window = window_masks(top, left, side, height, width)
            fresh = rng.signs(channels, 1, 1)
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
        return adv, best

    def _search_l2(self, objective, images):
        eps, budget = self.threat.eps, self.threat.steps
        rng = self.image_random(images)
        batch, channels, height, width = images.shape
        tile = max(height // 5, 2)
        delta = torch.zeros_like(images)
        top0, left0 = (height - tile * (height // tile)) // 2, (width - tile * (width // tile)) // 2
        for top in range(top0, height - tile + 1, tile):
            for left in range(left0, width - tile + 1, tile):
                signs = rng.signs(channels, 1, 1)
                delta[:, :, top:top + tile, left:left + tile] += signs * oriented_patterns(tile, rng, images)
        adv = (images + eps * unit_l2(delta)).clamp(0.0, 1.0)
        best = objective.loss(adv, FlipLoss.MARGIN)
        for query in range(1, budget):
            p = window_fraction(self.p_init, query, budget, self.rescale_schedule)
            side = max(int(round(math.sqrt(p * height * width))), 3)
            side = min(side + (side % 2 == 0), height, width)
            top, left = rng.integers(height - side + 1), rng.integers(width - side + 1)
            top2, left2 = rng.integers(height - side + 1), rng.integers(width - side + 1)
            first, second = window_masks(top, left, side, height, width), window_masks(top2, left2, side, height, width)
            at, rows, cols = window_index(top, left, side)
            delta = adv - images
            norm_first = (delta * first).pow(2).sum((-2, -1), keepdim=True).sqrt()
            norm_union = (delta * (first | second)).pow(2).sum((-2, -1), keepdim=True).sqrt()
            norm_image = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            fresh = rng.signs(channels, 1, 1) * oriented_patterns(side, rng, images)
            window = fresh + delta[at, :, rows, cols].permute(0, 3, 1, 2) / (norm_first + 1e-12)
            # The window takes the mass of both windows plus what the image lacks to reach ε.
            mass = ((eps**2 - norm_image**2).clamp_min(0.0) / channels + norm_union**2).sqrt()
            window = window / (window.pow(2).sum((-2, -1), keepdim=True).sqrt() + 1e-12) * mass
            proposal_delta = delta * ~second
            proposal_delta[at, :, rows, cols] = window.permute(0, 2, 3, 1)
            proposal = (images + eps * unit_l2(proposal_delta)).clamp(0.0, 1.0)
            loss = objective.loss(proposal, FlipLoss.MARGIN)
            better = loss > best
            best = torch.where(better, loss, best)
            adv = torch.where(better.view(-1, 1, 1, 1), proposal, adv)
        return adv, best

    def describe(self):
        queries = self.threat.steps
        return {**super().describe(), "loss": "margin", "queries": queries, "p_init": self.p_init,
                "rescale_schedule": self.rescale_schedule, "step_size": None}
