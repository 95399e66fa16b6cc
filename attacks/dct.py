"""The orthonormal 2-D DCT basis and SimBA's low-frequency-first coordinate order.

Used by SimBA-DCT (Guo et al., ICML 2019, https://arxiv.org/abs/1905.07121): search directions are
single DCT-II basis images of one channel, tried from low to high frequency.
"""
from __future__ import annotations

import math

import torch


def dct_matrix(size: int, dtype=torch.float32) -> torch.Tensor:
    """The orthonormal DCT-II matrix (size, size): row k is the k-th cosine basis vector (unit L2 norm)."""
    n = torch.arange(size, dtype=torch.float64)
    k = n.view(-1, 1)
    matrix = torch.cos(math.pi * (2 * n + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    matrix[0] = math.sqrt(1.0 / size)
    return matrix.to(dtype)


def low_frequency_order(
    shape: tuple[int, int, int], initial: int, stride: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flat indices into a (C, H, W) coefficient grid, low frequencies first (SimBA's `block_order`).

    The coefficients with frequency r = max(k_h·S/H, k_w·S/W) < `initial` (S = max(H, W)) come
    first, then bands of width `stride` in r; inside each band the order is random (from `generator`).
    """
    channels, height, width = shape
    if initial < 1 or stride < 1:
        raise ValueError(f"initial and stride must be >= 1, got {initial} and {stride}")
    side = max(height, width)
    k_h = torch.arange(height, dtype=torch.float64).view(-1, 1) * side / height
    k_w = torch.arange(width, dtype=torch.float64).view(1, -1) * side / width
    radius = torch.maximum(k_h, k_w).expand(height, width)
    band = torch.where(radius < initial, torch.zeros_like(radius), 1 + torch.floor((radius - initial) / stride))
    band = band.unsqueeze(0).expand(channels, height, width).flatten()
    jitter = torch.rand(band.numel(), generator=generator, dtype=torch.float64)
    return torch.argsort(band + jitter)


class DCTBasis:
    """Single-coefficient DCT basis images for images of shape (C, H, W)."""

    def __init__(self, shape: tuple[int, int, int], device=None, dtype=torch.float32):
        self.shape = tuple(shape)
        self.rows = dct_matrix(shape[1], dtype).to(device)
        self.cols = dct_matrix(shape[2], dtype).to(device)

    def image(self, index: int) -> torch.Tensor:
        """The basis image (C, H, W) of flat coefficient `index` (unit L2 norm, one channel non-zero)."""
        channels, height, width = self.shape
        channel, rest = divmod(int(index), height * width)
        k_h, k_w = divmod(rest, width)
        out = torch.zeros(self.shape, dtype=self.rows.dtype, device=self.rows.device)
        out[channel] = torch.outer(self.rows[k_h], self.cols[k_w])
        return out
