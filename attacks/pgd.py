"""PGD: projected gradient ascent on the flip loss (Madry et al., ICLR 2018).

https://arxiv.org/abs/1706.06083. Adapted to anomaly maps as in the PatchGuard paper (§3) and its
code: the loss flips every cell of M(x) (or the image score, with the detection objective).

Threat model: L∞ steps along sign(∇), L2 steps along ∇/||∇||₂; each step is projected onto the
ε-ball and [0, 1]. Defaults: step size 2.5·ε/steps, no random start (the PatchGuard code), one
restart; a random start is drawn per image (`attacks/image_random.py`), the same in any batch. With `keep_best=True` (default) each image gets the iterate with the highest loss seen,
as AUROC has no success threshold; `keep_best=False` returns the last iterate (torchattacks'
behaviour).

Speed: each step takes the gradient with respect to the input only (parameters frozen, no
parameter gradients), over the whole batch. `cuda_graph=True` (default False) replays each step
as a CUDA graph on CUDA batches (`cuda_graph.py`: same kernels, far fewer launches; ignored on the
CPU). `compile=True` (default False) computes each step's forward and input gradient through
`torch.compile` (`compiled_step.py`: fused non-matmul kernels, after a one-off compilation per
batch shape; no gain measured on the 2-core CPU, for GPUs where those kernels bound the step); the
final loss of `keep_best` stays eager. `perturb(..., start=x0)` begins at x0 instead
(PatchGuard's `train_reuse_perturbation`).
"""
from __future__ import annotations

import torch

from robustad.attacks.attack import Attack, keep_best
from robustad.attacks.registry import register_attack
from robustad.attacks.threat_model import ascent_direction, project, random_start


@register_attack("pgd")
class PGD(Attack):
    """Projected gradient descent, L∞ or L2, any number of steps (`pgd-1000`)."""

    name = "pgd"
    display_name = "PGD"
    table_order = 10

    def __init__(self, threat, *, keep_best: bool = True, cuda_graph: bool = False, compile: bool = False,
                 **kwargs):
        super().__init__(threat, **kwargs)
        self.keep_best = keep_best
        self.cuda_graph = cuda_graph
        self.compile = bool(compile)

    def perturb(self, objective, images, start: torch.Tensor | None = None):
        """`start`: adversarial images to begin the first restart at (projected onto the ball),
        instead of `images` or a random start; e.g. the previous epoch's examples in training."""
        t = self.threat
        rng = self.image_random(images) if t.random_start and t.restarts > (start is not None) else None
        best_loss = torch.full((images.shape[0],), -float("inf"), device=images.device)
        best_adv = images.clone()
        step_objective = objective
        if self.compile:
            from robustad.attacks.compiled_step import compiled_forward

            step_objective = objective.with_forward(compiled_forward())
        graphed = None
        if self.cuda_graph and images.is_cuda:
            from robustad.attacks.cuda_graph import GraphedLossAndGrad

            graphed = GraphedLossAndGrad(step_objective)
        loss_and_grad = graphed or step_objective.loss_and_grad
        try:
            for restart in range(t.restarts):
                if start is not None and restart == 0:
                    adv = project(start.to(images), images, t.norm, t.eps)
                else:
                    adv = random_start(images, t.norm, t.eps, rng) if t.random_start else images.clone()
                for _ in range(t.steps):
                    loss, grad = loss_and_grad(adv)
                    if self.keep_best:
                        best_loss, best_adv = keep_best(best_loss, best_adv, loss, adv)
                    adv = project(adv + t.alpha * ascent_direction(grad, t.norm), images, t.norm, t.eps)
                if not self.keep_best and t.restarts == 1:
                    return adv  # the last iterate: the final loss would decide nothing (saves a forward)
                with torch.no_grad():
                    final = objective.loss(adv)
                best_loss, best_adv = keep_best(best_loss, best_adv, final, adv)
            return best_adv
        finally:
            if graphed is not None:
                graphed.close()

    def describe(self):
        return {**super().describe(), "keep_best": self.keep_best, **({"compile": True} if self.compile else {})}
