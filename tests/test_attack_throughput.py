"""The benchmark's loops compute the same attack: the official loop (parameter gradients,
`loss.backward()`), our engine (input gradient only, frozen parameters, any chunking) and
torchattacks' PGD on the two-class wrapper give the same adversarial images."""
import pytest
import torch

from robustad.attacks import create_attack
from robustad.attacks.batching import attack_in_chunks
from robustad.attacks.objectives import AttackObjective

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("attack_throughput")


def test_official_loop_equals_engine(bench, trained_tiny):
    detector, images, masks, labels = trained_tiny
    eps, steps = 8 / 255, 5
    targets = AttackObjective.build(detector, images, masks, labels.float()).targets
    detector.requires_grad_(True)
    official = bench.official_pgd(detector, images, targets, eps, steps)
    detector.zero_grad(set_to_none=True)
    ours = attack_in_chunks(create_attack("pgd", eps=eps, steps=steps, keep_best=False), detector, images, masks,
                            labels.float(), max_batch=3)
    assert not torch.equal(ours, images)
    assert float((ours != official).float().mean()) < 1e-3  # only signs of ~zero gradients may differ
    assert all(p.requires_grad for p in detector.parameters())


def test_torchattacks_wrapper_equals_engine(bench, trained_tiny):
    pytest.importorskip("torchattacks")
    detector, images, masks, labels = trained_tiny
    eps, steps = 8 / 255, 5
    targets = AttackObjective.build(detector, images, masks, labels.float()).targets
    adv, _, allocated, _ = bench.run_torchattacks(detector, images, targets, eps, steps, 4, torch.device("cpu"))
    ours = create_attack("pgd", eps=eps, steps=steps, keep_best=False)(detector, images, masks, labels.float())
    assert allocated == [None] * len(allocated)
    assert float((adv != ours).float().mean()) < 1e-3
