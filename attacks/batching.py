"""Attacking a batch in chunks of the largest size that fits in memory.

PGD-1000 on every test image is the benchmark's main cost (PatchGuard paper §6: ~1000
forward+backward passes per image); a GPU is used best by the largest batch that fits. Every
attack in this package treats images independently (per-image losses, per-image steps, the model
in eval mode), so splitting a batch into chunks does not change the result: the same images come
back, bit for bit, whenever the kernels themselves do not depend on the batch size (checked in
`tests/test_batching.py`); random starts are drawn per image (`attacks/image_random.py`), so they
do not depend on the chunking either. The test set's calibration (`attacks/calibration.py`) is
passed to every chunk, so no chunk calibrates from its own images. An attack that needs the whole test set at once (`whole_test_set`,
A³: its discarding and budget are statistics of the test set) is called once with every image and
`max_batch`, and runs its own chunks.

- `attack_in_chunks(attack, detector, images, masks, labels=None, max_batch=None, calibration=None)`: one call.
- `ChunkedAttack(attack, max_batch=None)`: a drop-in wrapper with the attack's call signature
  that remembers the largest chunk that fitted, so later batches do not probe again.

Chunk size: `max_batch` when given; otherwise the whole batch on CUDA, halved after every CUDA
out-of-memory error (down to 1, then the error is raised), and `CPU_DEFAULT_BATCH` on the CPU,
where running out of memory kills the process instead of raising and larger chunks gain little.
"""
from __future__ import annotations

import torch

CPU_DEFAULT_BATCH = 16  # images per chunk on the CPU (throughput is flat beyond a few images)


def default_max_batch(device: torch.device | str) -> int | None:
    """The chunk size to start from on `device`: None (the whole batch) on CUDA, 16 on the CPU."""
    return None if torch.device(device).type == "cuda" else CPU_DEFAULT_BATCH


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def _release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


class ChunkedAttack:
    """Wraps an attack so that each call runs it on chunks of at most `max_batch` images.

    `max_batch=None` chooses automatically (see the module docstring); after an out-of-memory
    error the smaller size is kept for later calls (`self.max_batch`). The wrapper exposes the
    attack's `threat`, `name` and `describe()` so that the runner can use it in its place.
    """

    def __init__(self, attack, max_batch: int | None = None):
        if max_batch is not None and int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1 or None (automatic), got {max_batch}")
        self.attack = attack
        self.max_batch = None if max_batch is None else int(max_batch)
        self.chunk_sizes: list[int] = []  # the size of every chunk run, for reports and tests

    @property
    def threat(self):
        return self.attack.threat

    @property
    def name(self) -> str:
        return self.attack.name

    @property
    def objective(self):
        return self.attack.objective

    @property
    def whole_test_set(self) -> bool:
        return getattr(self.attack, "whole_test_set", False)

    def describe(self) -> dict:
        return self.attack.describe()

    def __repr__(self) -> str:
        return f"ChunkedAttack({self.attack!r}, max_batch={self.max_batch})"

    def __call__(self, detector, images: torch.Tensor, masks: torch.Tensor | None, labels: torch.Tensor | None = None,
                 calibration=None):
        """Adversarial images (B, 3, H, W), the attack's result on every chunk, concatenated;
        `calibration` (the test set's) is passed to every call."""
        total = images.shape[0]
        if total == 0:
            return images.detach().clone()
        size = self.max_batch or default_max_batch(images.device) or total
        size = min(size, total)
        if self.whole_test_set:
            return self._whole(detector, images, masks, labels, calibration, size)
        pieces = []
        start = 0
        while start < total:
            stop = min(start + size, total)
            out_of_memory = False
            try:
                adv = self.attack(
                    detector,
                    images[start:stop],
                    None if masks is None else masks[start:stop],
                    None if labels is None else labels[start:stop],
                    **({} if calibration is None else {"calibration": calibration}),
                )
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not _is_out_of_memory(error) or size == 1:
                    raise
                out_of_memory = True
            if out_of_memory:  # outside `except`: the traceback no longer holds the chunk's tensors
                _release_cached_memory(images.device)
                size = max(1, size // 2)
                self.max_batch = size
                continue
            pieces.append(adv)
            self.chunk_sizes.append(stop - start)
            start = stop
        return torch.cat(pieces)

    def _whole(self, detector, images, masks, labels, calibration, size):
        """One call with every image; the attack chunks by `max_batch`, halved on out-of-memory."""
        while True:
            out_of_memory = False
            try:
                adv = self.attack(detector, images, masks, labels, calibration=calibration, max_batch=size)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not _is_out_of_memory(error) or size == 1:
                    raise
                out_of_memory = True
            if not out_of_memory:
                self.chunk_sizes.append(images.shape[0])
                return adv
            _release_cached_memory(images.device)
            size = max(1, size // 2)
            self.max_batch = size


def attack_in_chunks(attack, detector, images: torch.Tensor, masks: torch.Tensor | None,
                     labels: torch.Tensor | None = None, max_batch: int | None = None, calibration=None) -> torch.Tensor:
    """`attack(detector, images, masks, labels, calibration)` run on chunks of the largest size that fits.

    images (B, 3, H, W) in [0, 1]; masks (B, 1, H, W) or None; labels (B,) or None. `max_batch`
    caps the chunk size (None: automatic — the whole batch on CUDA, halved on out-of-memory;
    `CPU_DEFAULT_BATCH` on the CPU). Returns the adversarial images (B, 3, H, W).
    """
    return ChunkedAttack(attack, max_batch)(detector, images, masks, labels, calibration=calibration)
