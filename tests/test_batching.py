"""Chunked attacks: same adversarial images as one whole-batch call; OOM halves the chunk size."""
import pytest
import torch

from robustad.attacks import create_attack
from robustad.attacks.batching import CPU_DEFAULT_BATCH, ChunkedAttack, attack_in_chunks, default_max_batch


@pytest.mark.parametrize("objective", ["localization", "detection"])
def test_chunked_pgd_equals_whole_batch(trained_tiny, objective):
    detector, images, masks, labels = trained_tiny
    attack = create_attack("pgd", norm="linf", eps=8 / 255, steps=5, objective=objective)
    whole = attack(detector, images, masks, labels.float())
    chunked = attack_in_chunks(attack, detector, images, masks, labels.float(), max_batch=2)
    assert chunked.shape == images.shape
    assert not torch.equal(whole, images)  # the attack moved the images
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)


def test_chunk_sizes_and_default(trained_tiny):
    detector, images, masks, labels = trained_tiny
    attack = ChunkedAttack(create_attack("fgsm", eps=4 / 255), max_batch=3)
    attack(detector, images, masks, labels.float())
    n = images.shape[0]
    assert attack.chunk_sizes == [3] * (n // 3) + ([n % 3] if n % 3 else [])
    assert attack.threat.eps == pytest.approx(4 / 255) and attack.describe()["attack"] == "fgsm"
    assert default_max_batch("cpu") == CPU_DEFAULT_BATCH and default_max_batch("cuda") is None


class OutOfMemoryAbove:
    """A fake attack that runs out of memory on chunks larger than `limit`; returns images + 1."""

    def __init__(self, limit: int):
        self.limit = limit
        self.calls: list[int] = []

    def __call__(self, detector, images, masks, labels=None):
        self.calls.append(images.shape[0])
        if images.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return images + 1


def test_out_of_memory_halves_and_remembers():
    fake = OutOfMemoryAbove(limit=3)
    attack = ChunkedAttack(fake, max_batch=16)
    images = torch.arange(10.0).view(10, 1, 1, 1)
    adv = attack(None, images, None)
    assert torch.equal(adv, images + 1)
    assert fake.calls[:3] == [10, 5, 2] and attack.max_batch == 2
    assert attack.chunk_sizes == [2] * 5
    fake.calls.clear()
    attack(None, images[:4], None)
    assert fake.calls == [2, 2]  # no new probing: the size that fitted is kept


def test_out_of_memory_at_one_image_and_other_errors_propagate():
    with pytest.raises(torch.OutOfMemoryError):
        attack_in_chunks(OutOfMemoryAbove(limit=0), None, torch.zeros(4, 1, 1, 1), None, max_batch=4)

    def broken(detector, images, masks, labels=None):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        attack_in_chunks(broken, None, torch.zeros(4, 1, 1, 1), None)
    with pytest.raises(ValueError, match="max_batch"):
        ChunkedAttack(broken, max_batch=0)


def test_last_iterate_pgd_spends_one_forward_per_step(trained_tiny):
    detector, images, masks, labels = trained_tiny
    from robustad.attacks.attack import frozen
    from robustad.attacks.objectives import AttackObjective

    attack = create_attack("pgd", eps=8 / 255, steps=4, keep_best=False)
    with frozen(detector):
        objective = AttackObjective.build(detector, images, masks, labels.float())
        attack.perturb(objective, images)
    assert objective.forward_count == 4 * images.shape[0]  # no final forward: it would decide nothing
