"""PGD with `cuda_graph=True` gives exactly the eager result (on CUDA) and is ignored on the CPU.

The CUDA tests need a GPU (a CUDA graph captures GPU kernels) and skip, saying so, elsewhere;
`benchmarks/gpu_check.sh` runs this file on a GPU machine."""
import copy

import pytest
import torch

from robustad.attacks import create_attack
from robustad.attacks.cuda_graph import GraphedLossAndGrad
from robustad.attacks.objectives import AttackObjective

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device: CUDA graphs capture GPU kernels (no GPU on this machine)")


def test_cuda_graph_option_is_ignored_on_cpu(trained_tiny):
    detector, images, masks, labels = trained_tiny
    eager = create_attack("pgd", eps=8 / 255, steps=3)(detector, images[:4], masks[:4])
    graphed = create_attack("pgd", eps=8 / 255, steps=3, cuda_graph=True)(detector, images[:4], masks[:4])
    assert torch.equal(eager, graphed)
    with pytest.raises(ValueError, match="CUDA"):
        GraphedLossAndGrad(AttackObjective.build(detector, images[:2], masks[:2]))(images[:2])


@needs_cuda
@pytest.mark.parametrize("keep_best", [True, False])
def test_cuda_graph_pgd_equals_eager_on_cuda(trained_tiny, keep_best):
    detector, images, masks, labels = trained_tiny
    detector = copy.deepcopy(detector).cuda()
    images, masks = images.cuda(), masks.cuda()
    eager = create_attack("pgd", eps=8 / 255, steps=5, keep_best=keep_best)(detector, images, masks)
    graphed = create_attack("pgd", eps=8 / 255, steps=5, keep_best=keep_best, cuda_graph=True)(detector, images, masks)
    assert not torch.equal(eager, images)
    assert torch.equal(eager, graphed)
    # a second batch shape recaptures
    tail = create_attack("pgd", eps=8 / 255, steps=5, keep_best=keep_best, cuda_graph=True)(detector, images[:3], masks[:3])
    assert torch.equal(tail, eager[:3]) or float((tail != eager[:3]).float().mean()) < 1e-3


@needs_cuda
def test_cuda_graph_memory_does_not_grow_across_batches(trained_tiny):
    """Each perturb call frees its graph's pool (the H200 benchmark once saw +65 MiB per batch)."""
    detector, images, masks, labels = trained_tiny
    detector = copy.deepcopy(detector).cuda()
    images, masks = images.cuda(), masks.cuda()
    attack = create_attack("pgd", eps=8 / 255, steps=3, cuda_graph=True)
    allocated = []
    for _ in range(4):
        attack(detector, images[:4], masks[:4])
        torch.cuda.synchronize()
        allocated.append(torch.cuda.memory_allocated())
    assert allocated[-1] <= allocated[1], allocated


def test_graphed_loss_and_grad_close_is_safe_before_any_capture(trained_tiny):
    detector, images, masks, labels = trained_tiny
    graphed = GraphedLossAndGrad(AttackObjective.build(detector, images[:2], masks[:2]))
    graphed.close()  # nothing captured yet: nothing to free, no error
    assert graphed.graph is None and graphed.static_grad is None
