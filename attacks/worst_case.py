"""`worst:A,B,...`: the per-image worst case over several attacks (AutoAttack's evaluation).

Every member attacks the clean images; each image keeps the adversarial example with the highest
margin flip loss under the ranking objective (the first member's objective unless given).
"""
from __future__ import annotations

import torch

from robustad.attacks.attack import frozen
from robustad.attacks.objectives import AttackObjective, FlipLoss


class WorstCase:
    name = "worst"

    def __init__(self, members, objective=None):
        self.members = list(members)
        self.objective = objective or self.members[0].objective
        self.threat = self.members[0].threat
        for member in self.members[1:]:
            if (member.threat.norm, member.threat.eps) != (self.threat.norm, self.threat.eps):
                raise ValueError("worst: every member must share the norm and eps")

    def __call__(self, detector, images, masks, labels=None):
        best_loss = torch.full((images.shape[0],), -float("inf"), device=images.device)
        best_adv = images.detach().clone()
        for member in self.members:
            adv = member(detector, images, masks, labels)
            with frozen(detector), torch.no_grad():
                ranking = AttackObjective.build(detector, images, masks, labels, self.objective, FlipLoss.MARGIN)
                loss = ranking.loss(adv)
            better = loss > best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_adv = torch.where(better.view(-1, 1, 1, 1), adv, best_adv)
        return best_adv

    def describe(self):
        first = self.members[0].describe()
        return {
            **first,
            "attack": "worst:" + ",".join(m.name for m in self.members),
            "objective": self.objective.value,
            "members": [m.describe() for m in self.members],
        }
