"""The stream of PatchGuard's training batches: normal images and their pseudo anomalies, epoch by epoch.

Each epoch draws a fresh order of the training images from `generator` (the last partial batch is
dropped) and, for each batch, its pseudo anomalies. Drawing them is CPU work: on a GPU it is a
sixth to a quarter of an optimizer step of the `paper` profile (benchmarks/fit_time.py on an H200:
0.041-0.093 s of 0.30-0.35 s). With `prefetch` a background thread draws the next batches while
the caller trains on this one (H200, `paper`: a fit 1.15-1.19x faster). Every draw from
`generator` happens in the same order in both modes and the pseudo-anomaly generators draw from
nothing else, so a fit gives the same model either way.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator, NamedTuple

import torch

PREFETCHED_BATCHES = 2


class TrainingBatch(NamedTuple):
    epoch: int
    step: int  # within the epoch
    index: torch.Tensor  # the images' positions in the training set
    normal: torch.Tensor
    anomalous: torch.Tensor
    masks: torch.Tensor


def draw_batches(images: torch.Tensor, pseudo, generator: torch.Generator, batch_size: int,
                 epochs: int) -> Iterator[TrainingBatch]:
    """The batches of `epochs` epochs, drawn as they are asked for."""
    steps_per_epoch = max(1, len(images) // batch_size)
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * batch_size:(step + 1) * batch_size]
            normal = images[index]
            anomalous, masks = pseudo(normal, index, generator)
            yield TrainingBatch(epoch, step, index, normal, anomalous, masks)


def training_batches(images: torch.Tensor, pseudo, generator: torch.Generator, batch_size: int, epochs: int,
                     prefetch: bool = False) -> Iterator[TrainingBatch]:
    """`draw_batches`, from a background thread `PREFETCHED_BATCHES` ahead when `prefetch`.

    An error in the thread is raised here, at the batch it stopped at; leaving the loop early stops
    the thread.
    """
    batches = draw_batches(images, pseudo, generator, batch_size, epochs)
    if not prefetch:
        yield from batches
        return
    ready: queue.Queue = queue.Queue(maxsize=PREFETCHED_BATCHES)
    stop = threading.Event()
    end = object()

    def produce():
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(end)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    worker = threading.Thread(target=produce, name="patchguard-batches", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
