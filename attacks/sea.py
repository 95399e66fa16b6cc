"""SEA: the Segmentation Ensemble Attack (Croce, Singh, Hein, ECCV 2024).

https://arxiv.org/abs/2306.12941, reference code nmndeep/Robust-Segmentation. SEA runs APGD
(`attacks/apgd.py`) once per loss — masked CE (CE of the units still labelled correctly),
balanced masked CE and the Jensen–Shannon divergence between prediction and target — each with
progressive radius reduction: 30% of the iterations at radius 2ε, 30% at 1.5ε, the rest at ε,
each stage starting from the previous stage's best point projected onto the smaller ball. The
result is, per image, the worst case over the losses.

Changes for anomaly maps (PatchGuard paper, appendix H):
- pixels become units (cells of M(x), or the image score with the detection objective), each
  read as two-class logits [0, m'] of its calibrated logit m' (`attacks/unit_losses.py`,
  `attacks/calibration.py`: the boundary and scale of the whole test set's clean logits, so no
  loss depends on the detector's logit offset or scale);
- class balance is computed per image (normal vs anomalous units), not from dataset-wide class
  frequencies;
- APGD's step size follows the plain CE of the units, as SEA's `track_loss="ce-avg"` does;
- "worst case" and each stage's hand-over point use the highest margin flip loss (AUROC has no
  accuracy to minimize); only points of the last stage (inside the ε-ball) are returned;
- L2 is supported with the same schedule (the reference implements the radius schedule for L∞).

- a fourth member, APGD on the margin loss (mean normal-unit logit − mean anomalous-unit logit,
  stepped by its own loss): the three segmentation losses all read units through a two-class
  softmax and saturate on confident units, the margin does not; without it SEA's default set is
  weaker than plain PGD (the measurements are in `docs/findings/attack-invariance.md`).

Defaults (`create_attack("sea")`): 300 iterations per loss (the reference's setting; `sea-100`
for fewer), losses masked-ce, balanced-ce, js, margin (`losses=masked-ce,balanced-ce,js` is the
reference's set), one restart, random start at radius 2ε drawn per image. Cost: about
4·(steps + 3) forwards and backwards.
"""
from __future__ import annotations

import torch

from robustad.attacks.apgd import RHO, apgd_ascent, apgd_start, objective_evaluation
from robustad.attacks.attack import Attack, keep_best
from robustad.attacks.registry import register_attack
from robustad.attacks.threat_model import project
from robustad.attacks.unit_losses import UNIT_LOSSES

SEA_LOSSES = ("masked-ce", "balanced-ce", "js", "margin")
RADIUS_FACTORS = (2.0, 1.5, 1.0)
STAGE_FRACTIONS = (0.3, 0.3)  # the last stage takes the remaining iterations


def radius_schedule(eps: float, steps: int) -> list[tuple[float, int]]:
    """[(radius, iterations)] of the progressive radius reduction; stages without iterations
    are dropped except the last one at ε."""
    lengths = [int(f * steps) for f in STAGE_FRACTIONS]
    lengths.append(steps - sum(lengths))
    stages = [(factor * eps, n) for factor, n in zip(RADIUS_FACTORS, lengths)]
    return [s for s in stages[:-1] if s[1] > 0] + [stages[-1]]


@register_attack("sea")
class SEA(Attack):
    """SEA over per-unit losses with progressive radius reduction, L∞ or L2."""

    name = "sea"
    display_name = "SEA"
    table_order = 90
    default_steps = 300

    def __init__(self, threat, *, losses: str | tuple[str, ...] = SEA_LOSSES, track: str = "ce", **kwargs):
        super().__init__(threat, **kwargs)
        if isinstance(losses, str):
            losses = tuple(s.strip() for s in losses.split(",") if s.strip())
        if not losses:
            raise ValueError("sea: `losses` needs at least one loss, e.g. masked-ce,balanced-ce,js")
        unknown = [name for name in (*losses, track) if name not in UNIT_LOSSES]
        if unknown:
            raise ValueError(f"sea: unknown loss(es) {', '.join(unknown)}; expected some of {', '.join(UNIT_LOSSES)}")
        self.losses = tuple(losses)
        self.track = track

    def perturb(self, objective, images):
        t = self.threat
        best_rank = torch.full((images.shape[0],), -float("inf"), device=images.device)
        best_adv = images.clone()
        for member, loss in enumerate(self.losses):
            # the margin member steers its step size by its own loss, as APGD-margin does
            evaluate = objective_evaluation(objective, loss, track="margin" if loss == "margin" else self.track)
            rng = self.image_random(images, stream=member)
            for restart in range(t.restarts):
                stages = radius_schedule(t.eps, t.steps)
                point = apgd_start(images, t.norm, stages[0][0], rng)
                for radius, steps in stages:
                    start = project(point, images, t.norm, radius)
                    run = apgd_ascent(evaluate, images, start, t.norm, radius, steps, rho=RHO)
                    point = run.best_adv
                best_rank, best_adv = keep_best(best_rank, best_adv, run.best_rank, run.best_adv)
        return best_adv

    def describe(self):
        stages = radius_schedule(self.threat.eps, self.threat.steps)
        return {
            **super().describe(),
            "loss": ",".join(self.losses),
            "track": self.track,
            "random_start": True,
            "step_size": 2.0 * stages[0][0],
            "radius_schedule": [[r, n] for r, n in stages],
        }

