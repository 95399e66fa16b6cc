"""Training-time PGD with a random start, as `torchattacks.PGD` makes it (Madry et al., 2018).

RODEO trains on `torchattacks.PGD(model, eps, alpha=2.5·eps/steps, steps)` examples (uniform
random start in the L∞ ball, sign steps, projection); PrincipaLS uses PGD adversarial training in
the same (Madry) form. The model is frozen (eval mode, no parameter gradients) while the examples
are made, as torchattacks does by default. The random start is drawn from `generator` (the
detector's own, derived from the cell's seed), so training stays reproducible.
"""
from __future__ import annotations

import torch

from robustad.attacks.attack import frozen
from robustad.attacks.threat_model import Norm, ascent_direction, project, random_start


def pgd_training_examples(model: torch.nn.Module, loss_fn, images: torch.Tensor, eps: float, steps: int,
                          generator: torch.Generator, step_size: float | None = None,
                          start: bool = True) -> torch.Tensor:
    """Images in the L∞ ε-ball around `images` (and in [0, 1]) that maximize `loss_fn(x)` (a scalar).

    Step 2.5·ε/steps unless given; `start`: begin at a uniform point of the ball (torchattacks' default).
    """
    if eps <= 0 or steps <= 0:
        return images.detach()
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    clean = images.detach()
    adv = random_start(clean, Norm.LINF, eps, generator) if start else clean.clone()
    with frozen(model):
        for _ in range(int(steps)):
            adv.requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(loss_fn(adv), adv)
            adv = project(adv.detach() + alpha * ascent_direction(grad, Norm.LINF), clean, Norm.LINF, eps)
    return adv.detach()
