"""Random numbers per image, the same in any batch: seeded from the attack's seed and the image's pixels.

An attack that draws its random starts, ODI weights or search windows from one generator per call
gives an image different numbers depending on which images share its batch and where it sits in
it: the same test set cut into batches differently (label-sorted or shuffled, 16 or 64 images)
gives a different result. `ImageRandom(images, seed, stream)` keeps one generator per image, seeded
from (seed, stream, a 64-bit BLAKE2 digest of the image's float32 pixels), so an image draws the
same numbers wherever it is (docs/design.md: an attack's strength must not change with how the test set
is cut into batches). Two identical images draw the same numbers, which changes nothing.

Each draw returns a tensor (B, *shape) on the images' device: row i from image i's generator.
`subset(index)` shares the generators of the selected images, so drawing for a subset advances
only their streams.
"""
from __future__ import annotations

import hashlib

import torch


def image_keys(images: torch.Tensor) -> list[int]:
    """A 64-bit digest of each image's float32 pixels (B,)."""
    flat = images.detach().float().cpu().contiguous().flatten(1).numpy()
    return [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in flat]


def _seed(seed: int, stream: int, key: int) -> int:
    text = f"{int(seed)}:{int(stream)}:{key}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & ((1 << 63) - 1)


class ImageRandom:
    """One CPU generator per image; draws are stacked into (B, *shape) tensors on `device`."""

    def __init__(self, images: torch.Tensor | None, seed: int = 0, stream: int = 0, *,
                 generators: list[torch.Generator] | None = None, device=None, dtype=None):
        if generators is None:
            generators = []
            for key in image_keys(images):
                generator = torch.Generator(device="cpu")
                generator.manual_seed(_seed(seed, stream, key))
                generators.append(generator)
        self.generators = generators
        self.device = images.device if images is not None else device
        self.dtype = images.dtype if images is not None else dtype

    def __len__(self) -> int:
        return len(self.generators)

    def subset(self, index: torch.Tensor | list[int]) -> "ImageRandom":
        """The same generators for the images at `index` (drawing from it advances theirs)."""
        rows = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        return ImageRandom(None, generators=[self.generators[i] for i in rows], device=self.device, dtype=self.dtype)

    def _stack(self, draw, shape, dtype) -> torch.Tensor:
        if not self.generators:
            return torch.empty((0, *shape), dtype=dtype, device=self.device)
        return torch.stack([draw(g) for g in self.generators]).to(device=self.device, dtype=dtype)

    def uniform(self, *shape: int) -> torch.Tensor:
        """U[0, 1) of shape (B, *shape), in the images' dtype."""
        return self._stack(lambda g: torch.rand(shape, generator=g), shape, self.dtype)

    def normal(self, *shape: int) -> torch.Tensor:
        """N(0, 1) of shape (B, *shape), in the images' dtype."""
        return self._stack(lambda g: torch.randn(shape, generator=g), shape, self.dtype)

    def integers(self, high: int, *shape: int) -> torch.Tensor:
        """Integers in [0, high) of shape (B, *shape) (int64)."""
        return self._stack(lambda g: torch.randint(0, int(high), shape, generator=g), shape, torch.long)

    def signs(self, *shape: int) -> torch.Tensor:
        """±1 of shape (B, *shape), in the images' dtype."""
        return (self.integers(2, *shape) * 2 - 1).to(self.dtype)
