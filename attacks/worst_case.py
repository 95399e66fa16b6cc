"""`worst:A,B,...`: the per-image worst case over several attacks (AutoAttack's evaluation).

Every member attacks the clean images with its own budget: `worst:pgd-20,pgd-100` runs PGD-20 and
PGD-100 whatever the profile or `--steps` (a member without `-N` takes `--steps` or the profile's
default; a query-based member such as `square` keeps its own query budget unless it has `-N`).
Each image keeps the adversarial example with the highest margin flip loss under the ranking
objective (the first member's objective unless given), so the composite is at least as strong as
each member on every image. All members and the ranking see one calibration (the test set's, or
the batch's when none is given), and a member that needs the whole test set (A³) gets it while the
others run on chunks of `max_batch` images.

With EOT (`eot=K`, given to every member by `create_attack`), the ranking is the mean margin over
K passes too (the first member's EOT setting).

`describe()["attack"]` names every member with its real budget (`worst:pgd-20,square-5000`), and
`steps` is None: the members carry theirs (`members`), so records and tables never put two
different composites in one column.
"""
from __future__ import annotations

import torch

from robustad.attacks.attack import adaptive
from robustad.attacks.objectives import AttackObjective, FlipLoss


def member_label(attack) -> str:
    """`pgd-20`, `square-5000`, `fgsm`: a member's name with the budget it really runs."""
    steps = attack.describe().get("steps")
    return attack.name if attack.name == "fgsm" or steps is None else f"{attack.name}-{steps}"


class WorstCase:
    name = "worst"

    def __init__(self, members, objective=None):
        self.members = list(members)
        if not self.members:
            raise ValueError("worst: needs at least one attack, e.g. worst:pgd,sea")
        self.objective = objective or self.members[0].objective
        self.threat = self.members[0].threat
        for member in self.members[1:]:
            if (member.threat.norm, member.threat.eps) != (self.threat.norm, self.threat.eps):
                raise ValueError("worst: every member must share the norm and eps")

    @property
    def whole_test_set(self) -> bool:
        return any(getattr(m, "whole_test_set", False) for m in self.members)

    def __call__(self, detector, images, masks, labels=None, calibration=None, max_batch: int | None = None):
        """The per-image worst case (B, 3, H, W) over the members' adversarial images."""
        from robustad.attacks.batching import attack_in_chunks

        ranker = self.members[0]
        with adaptive(ranker, detector) as eot, torch.no_grad():
            ranking = AttackObjective.build(detector, images, masks, labels, self.objective, FlipLoss.MARGIN,
                                            calibration, eot=eot)
        best_loss = torch.full((images.shape[0],), -float("inf"), device=images.device)
        best_adv = images.detach().clone()
        self.last_member_losses: list[torch.Tensor] = []  # per member, per image (for `bench check`)
        for member in self.members:
            if getattr(member, "whole_test_set", False):
                adv = member(detector, images, masks, labels, calibration=ranking.calibration, max_batch=max_batch)
            else:
                adv = attack_in_chunks(member, detector, images, masks, labels, max_batch=max_batch,
                                       calibration=ranking.calibration)
            with adaptive(ranker, detector), torch.no_grad():
                loss = ranking.loss(adv)  # EOT: the mean over the members' passes
            self.last_member_losses.append(loss.detach().cpu())
            better = loss > best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_adv = torch.where(better.view(-1, 1, 1, 1), adv, best_adv)
        return best_adv

    def describe(self):
        first = self.members[0].describe()
        return {
            **first,
            "attack": "worst:" + ",".join(member_label(m) for m in self.members),
            "steps": None,
            "objective": self.objective.value,
            "members": [m.describe() for m in self.members],
        }
