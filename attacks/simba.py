"""SimBA: simple black-box adversarial attack (Guo et al., ICML 2019), adapted to anomaly maps.

Paper: https://arxiv.org/abs/1905.07121; official code: github.com/cg563/simple-blackbox-attack.
The PatchGuard paper (§5, Table 4 text) lists a black-box attack among its detection attacks.

Algorithm: pick orthonormal directions q one at a time without replacement; try x − α·q, and if
the attack loss did not rise, x + α·q; keep the first that raises it. Query-only: the attack calls
`objective.loss` under `torch.no_grad()` and never asks for a gradient.

Options and defaults:
- `basis="dct"` (SimBA-DCT, the paper's main variant): single-channel DCT-II basis images, low
  frequencies first (a random order inside an initial block of side `size // 8`, then bands of
  width `size // 32`, the paper's 28 and 7 at 224 px). `basis="pixel"`: single pixels of one
  channel in random order (SimBA-pixel).
- Budget: `steps` is the number of model queries per image (default 1000, counting the clean
  query; the paper's ImageNet budget is 10,000). An image stops when its budget is spent, and the
  attack stops when every image has or every direction has been tried.
- Step α: L∞ — each direction is scaled to L∞ norm ε (a pixel moves by ε) and the candidate is
  clipped to the ε-box; L2 — α = `step_size` when given, else min(0.2, ε) (the paper's ε = 0.2 per
  step), and the candidate is projected onto the ε-ball. Both are clipped to [0, 1].

Changes for anomaly maps: the quantity to raise is the objective's flip loss (margin by default:
mean logit of normal units − mean logit of anomalous units, or the image score with the detection
objective) instead of lowering the true-class probability; there is no early stop on
misclassification (AUROC has no threshold), so every image uses its whole budget. A black-box
attack must not beat the white-box ones on the same model (else the gradients are masked). The
iterate only ever moves to a higher loss, so the returned point is each image's best one.
Deterministic under `seed`; the threat model's `restarts` and `random_start` are not used.
"""
from __future__ import annotations

import torch

from robustad.attacks.attack import Attack
from robustad.attacks.dct import DCTBasis, low_frequency_order
from robustad.attacks.objectives import FlipLoss, Objective
from robustad.attacks.registry import register_attack
from robustad.attacks.threat_model import Norm, project

BASES = ("dct", "pixel")
L2_STEP = 0.2  # the paper's per-step ε


@register_attack("simba")
class SimBA(Attack):
    """SimBA black-box attack (DCT or pixel basis), query budget = steps per image."""

    name = "simba"
    display_name = "SimBA"
    table_order = 100
    default_steps = 1000
    steps_are_queries = True

    def __init__(
        self, threat, *, basis: str = "dct",
        objective: str | Objective = Objective.LOCALIZATION, loss: str | FlipLoss = FlipLoss.MARGIN, **kwargs,
    ):
        super().__init__(threat, objective=objective, loss=loss, **kwargs)
        basis = str(basis).lower()
        if basis not in BASES:
            raise ValueError(f"simba: unknown basis {basis!r}; expected one of {', '.join(BASES)}")
        self.basis = basis
        self.last_queries: torch.Tensor | None = None  # queries used per image in the last call

    def step_length(self) -> float:
        if self.threat.norm == Norm.LINF:
            return self.threat.eps
        return self.threat.step_size if self.threat.step_size is not None else min(L2_STEP, self.threat.eps)

    @torch.no_grad()
    def perturb(self, objective, images):
        t = self.threat
        shape = tuple(images.shape[1:])
        gen = self.generator()
        if self.basis == "dct":
            side = max(shape[1], shape[2])
            order = low_frequency_order(shape, max(1, side // 8), max(1, side // 32), gen)
            dct = DCTBasis(shape, images.device, images.dtype)
        else:
            order = torch.randperm(images[0].numel(), generator=gen)
        adv = images.clone()
        best = objective.loss(adv)
        queries = torch.ones(images.shape[0], dtype=torch.long, device=images.device)
        length = self.step_length()
        for index in order.tolist():
            active = torch.nonzero(queries < t.steps).flatten()
            if active.numel() == 0:
                break
            if self.basis == "dct":
                direction = dct.image(index)
            else:
                direction = torch.zeros(images[0].numel(), dtype=images.dtype, device=images.device)
                direction[index] = 1.0
                direction = direction.view(shape)
            if t.norm == Norm.LINF:
                direction = direction / direction.abs().max()
            direction = length * direction
            for sign in (-1.0, 1.0):
                if active.numel() == 0:
                    break
                sub = objective.subset(active)
                candidate = project(adv[active] + sign * direction, images[active], t.norm, t.eps)
                loss = sub.loss(candidate)
                queries[active] += 1
                better = loss > best[active]
                adv[active[better]] = candidate[better]
                best[active[better]] = loss[better]
                active = active[~better & (queries[active] < t.steps)]
        self.last_queries = queries.cpu()
        return adv

    def describe(self):
        return {**super().describe(), "basis": self.basis, "queries": self.threat.steps, "step_size": self.step_length()}
