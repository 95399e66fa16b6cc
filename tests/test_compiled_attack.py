"""PGD(compile=True): the torch.compile'd attack step gives the eager result, compiles once per
batch shape (not once per batch or per detector instance) and leaves no memory behind per batch."""
import copy
import gc
import warnings

import pytest
import torch

from robustad.attacks import create_attack


def differing(a, b) -> float:
    return float((a != b).float().mean())


@pytest.mark.parametrize("keep_best", [True, False])
def test_compiled_pgd_equals_eager(trained_tiny, keep_best):
    detector, images, masks, labels = trained_tiny
    eager = create_attack("pgd", eps=8 / 255, steps=5, keep_best=keep_best)(detector, images, masks)
    compiled = create_attack("pgd", eps=8 / 255, steps=5, keep_best=keep_best, compile=True)(detector, images, masks)
    assert not torch.equal(eager, images)
    assert differing(eager, compiled) < 1e-3  # only signs of near-zero gradients may flip
    assert create_attack("pgd", compile=True).describe()["compile"] is True
    assert "compile" not in create_attack("pgd").describe()


def test_compiled_step_compiles_once_per_shape(trained_tiny):
    from torch._dynamo.utils import counters

    detector, images, masks, labels = trained_tiny
    attack = create_attack("pgd", eps=8 / 255, steps=2, compile=True)
    attack(detector, images[:5], masks[:5])
    graphs = counters["stats"]["unique_graphs"]
    attack(detector, images[5:10], masks[5:10])  # another batch of the same shape
    attack(copy.deepcopy(detector), images[:5], masks[:5])  # another detector instance
    assert counters["stats"]["unique_graphs"] == graphs


def live_tensor_bytes() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() touches deprecated lazy objects (torch.distributed.reduce_op)
        warnings.simplefilter("ignore")
        return sum(o.numel() * o.element_size() for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.parametrize("compile", [False, True])
def test_memory_stays_flat_across_batches(trained_tiny, compile):
    """What Python keeps alive (tensors) after each batch does not grow: nothing leaks per batch."""
    detector, images, masks, labels = trained_tiny
    attack = create_attack("pgd", eps=8 / 255, steps=3, compile=compile)
    attack(detector, images[:4], masks[:4])  # warm-up (compilation)
    held = []
    for _ in range(4):
        adv = attack(detector, images[:4], masks[:4])
        del adv
        held.append(live_tensor_bytes())
    assert held[-1] <= held[0], held
