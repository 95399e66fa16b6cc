"""Gaussian smoothing of anomaly maps in torch, so the scoring path stays differentiable.

Matches `scipy.ndimage.gaussian_filter(map, sigma)` on each (H, W) map: a separable kernel of
radius `int(truncate·σ + 0.5)` (truncate = 4, SciPy's default) with reflect ("symmetric") padding.
PatchCore, SimpleNet, GLASS and ReContrast smooth their upsampled maps with σ = 4.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma: float, radius: int, device=None, dtype=torch.float32) -> torch.Tensor:
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def symmetric_pad(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """SciPy's `reflect` mode (the edge sample repeated: d c b a | a b c d), any radius."""
    n = x.shape[dim]
    index = torch.arange(-radius, n + radius, device=x.device)
    period = 2 * n
    index = index % period
    index = torch.where(index >= n, period - 1 - index, index)
    return x.index_select(dim, index)


def gaussian_blur(maps: torch.Tensor, sigma: float, radius: int | None = None, truncate: float = 4.0) -> torch.Tensor:
    """Blurs maps (B, H, W) with a Gaussian of std `sigma` pixels; `sigma <= 0` returns them as is."""
    if sigma <= 0:
        return maps
    if maps.dim() != 3:
        raise ValueError(f"gaussian_blur expects maps of shape (B, H, W), got {tuple(maps.shape)}")
    radius = int(truncate * sigma + 0.5) if radius is None else int(radius)
    kernel = gaussian_kernel(sigma, radius, maps.device, maps.dtype)
    x = maps.unsqueeze(1)
    x = symmetric_pad(x, radius, 3)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = symmetric_pad(x, radius, 2)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)
