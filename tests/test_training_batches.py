"""methods/patchguard/training_batches.py: the fit's batches, drawn in place or prefetched by a thread."""
import threading

import pytest
import torch

from robustad.methods.patchguard.pseudo_anomalies import create_pseudo_anomaly_generator
from robustad.methods.patchguard.training_batches import training_batches


def images(count=10, size=32):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(3))


def stream(prefetch: bool, epochs=3, batch_size=4):
    x = images()
    pseudo = create_pseudo_anomaly_generator("ours", foreground="full")
    pseudo.prepare(x)
    return list(training_batches(x, pseudo, torch.Generator().manual_seed(0), batch_size, epochs, prefetch))


def test_prefetched_batches_are_the_batches_drawn_in_place():
    in_place, prefetched = stream(prefetch=False), stream(prefetch=True)
    assert [(b.epoch, b.step) for b in in_place] == [(e, s) for e in range(3) for s in range(2)]  # 10 // 4
    assert len(prefetched) == len(in_place)
    for a, b in zip(in_place, prefetched):
        assert (a.epoch, a.step) == (b.epoch, b.step)
        assert torch.equal(a.index, b.index) and torch.equal(a.normal, b.normal)
        assert torch.equal(a.anomalous, b.anomalous) and torch.equal(a.masks, b.masks)
    assert in_place[0].masks.sum() > 0  # real pseudo anomalies, not empty masks
    assert not torch.equal(in_place[0].index, in_place[2].index)  # a fresh order each epoch


class FailingGenerator:
    def __init__(self, fail_at: int):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, normal, index, generator):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("pseudo anomaly failed")
        return normal.clone(), torch.zeros_like(normal[:, :1])


@pytest.mark.parametrize("prefetch", [False, True])
def test_an_error_drawing_a_batch_is_raised_at_that_batch(prefetch):
    seen = []
    with pytest.raises(RuntimeError, match="pseudo anomaly failed"):
        for batch in training_batches(images(), FailingGenerator(fail_at=3), torch.Generator(), 4, 5, prefetch):
            seen.append((batch.epoch, batch.step))
    assert seen == [(0, 0), (0, 1)]


def test_leaving_the_loop_early_stops_the_prefetching_thread():
    before = threading.active_count()
    generator = FailingGenerator(fail_at=-1)
    for batch in training_batches(images(), generator, torch.Generator(), 2, 100, prefetch=True):
        if batch.step == 1:
            break
    assert threading.active_count() == before
    assert generator.calls < 10  # it drew a few batches ahead, not the 500 of the whole fit
