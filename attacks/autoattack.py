"""AutoAttack, adapted as in the PatchGuard paper (Croce & Hein, ICML 2020; PatchGuard appendix H).

https://arxiv.org/abs/2003.01690. The standard AutoAttack runs APGD-CE, APGD-T (targeted DLR
loss), FAB-T and Square, and reports the worst case per image. DLR needs at least three classes,
which anomaly units (two-class logits [0, m'] of the calibrated logit m') do not have, so the PatchGuard authors "replaced
the DLR loss component in AutoAttack with a PGD attack". Members here, each on every image:

1. `apgd-ce`: APGD on the CE flip loss of the calibrated unit logits (`attacks/apgd.py`,
   `attacks/calibration.py`), `steps` iterations, random start;
2. `pgd-margin`: PGD on the margin flip loss in place of APGD-T/DLR (`attacks/pgd.py`), `steps`
   iterations, the threat model's step size (2.5·ε/steps) and start;
3. `apgd-margin`: in place of FAB-T. FAB-T is a minimum-norm attack that walks to the decision
   boundary of a target class; with binary units there is no target class to choose and, AUROC
   having no threshold, no boundary to reach, so its slot runs APGD on the non-saturating margin
   loss (APGD-T's role in the original: a margin loss with APGD's schedule);
4. `square`: Square Attack (`attacks/square.py`), `square_queries` queries with AutoAttack's
   p-schedule (not stretched to the budget: `resc_schedule=False`), L∞ or L2;
   `square_queries=0` leaves it out.

The result is, per image, the member output with the highest margin flip loss (AutoAttack keeps
the first point that fools; AUROC has no "fooled", so the worst case is the highest loss).
Original AutoAttack only attacks points still robust after the previous members; here every
member attacks every image, so the cost is the sum of the members'.

EOT and BPDA (`eot=K`, `bpda=true`) are set on AutoAttack and apply to every member: members run
on AutoAttack's objective (the mean over K passes) inside its BPDA setting, as AutoAttack's `rand`
version runs its members with EOT.

Defaults (`create_attack("autoattack")`): 100 iterations per gradient member (AutoAttack's
standard), 5,000 Square queries, one restart.
"""
from __future__ import annotations

import torch

from robustad.attacks.apgd import APGD
from robustad.attacks.attack import Attack, keep_best
from robustad.attacks.objectives import FlipLoss
from robustad.attacks.pgd import PGD
from robustad.attacks.registry import register_attack
from robustad.attacks.square import Square
from robustad.attacks.threat_model import ThreatModel


@register_attack("autoattack")
class AutoAttack(Attack):
    """The per-image worst case over APGD-CE, PGD-margin, APGD-margin and Square."""

    name = "autoattack"
    display_name = "AutoAttack"
    table_order = 40
    default_steps = 100

    def __init__(self, threat, *, square_queries: int = 5000, **kwargs):
        super().__init__(threat, **kwargs)
        if int(square_queries) < 0:
            raise ValueError(f"autoattack: square_queries must be >= 0, got {square_queries}")
        self.square_queries = int(square_queries)
        self.members = self._build_members()

    def _build_members(self) -> list[tuple[str, Attack]]:
        shared = dict(objective=self.objective, **self.adaptive_options())
        members: list[tuple[str, Attack]] = [
            ("apgd-ce", APGD(self.threat, loss="ce", **shared)),
            ("pgd-margin", PGD(self.threat, loss="margin", **shared)),
            ("apgd-margin", APGD(self.threat, loss="margin", **shared)),
        ]
        if self.threat.norm in Square.norms and self.square_queries > 0:
            t = self.threat
            square_threat = ThreatModel(norm=t.norm, eps=t.eps, steps=self.square_queries, seed=t.seed)
            members.append(("square", Square(square_threat, **shared)))
        return members

    def perturb(self, objective, images):
        best_loss = torch.full((images.shape[0],), -float("inf"), device=images.device)
        best_adv = images.clone()
        for _, member in self.members:
            member.last_eot = objective.eot  # members run on this objective: its EOT is theirs
            adv = member.perturb(objective.with_loss(member.loss), images)
            with torch.no_grad():
                loss = objective.loss(adv, FlipLoss.MARGIN)
            best_loss, best_adv = keep_best(best_loss, best_adv, loss, adv)
        return best_adv

    def describe(self):
        return {
            **super().describe(),
            "loss": "worst-case margin",
            "square_queries": self.square_queries if any(n == "square" for n, _ in self.members) else 0,
            "members": [{**member.describe(), "member": name} for name, member in self.members],
        }
