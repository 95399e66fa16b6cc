"""Perlin noise and Perlin-shaped anomaly masks (DRAEM, Zavrtanik et al., ICCV 2021; GLASS's LAS).

https://arxiv.org/abs/2108.07610. DRAEM thresholds 2-D Perlin noise with scales 2^k, k ∈ [0, 6),
at 0.5 to get blob-shaped masks and blends a texture into them with opacity β ~ U(0, 0.8).
Used only to make training data, never on the scoring path.
"""
from __future__ import annotations

import math

import torch


def perlin_noise(size: int, scale: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """2-D gradient noise (size, size) in about [-1, 1] with `scale` lattice cells per side."""
    res_y, res_x = scale
    cells_y, cells_x = math.ceil(size / res_y) * res_y, math.ceil(size / res_x) * res_x
    span = max(cells_y, cells_x)
    angles = 2 * math.pi * torch.rand(res_y + 1, res_x + 1, generator=generator)
    gradients = torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1)
    ys = torch.linspace(0, res_y, span + 1)[:-1][:size]
    xs = torch.linspace(0, res_x, span + 1)[:-1][:size]
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    y0, x0 = grid_y.floor().long(), grid_x.floor().long()
    fy, fx = grid_y - y0, grid_x - x0

    def corner(dy: int, dx: int) -> torch.Tensor:
        g = gradients[y0 + dy, x0 + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: torch.Tensor) -> torch.Tensor:
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    wy, wx = fade(fy), fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), wx)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), wx)
    return math.sqrt(2) * torch.lerp(top, bottom, wy)


def perlin_mask(size: int, generator: torch.Generator, threshold: float = 0.5, max_scale_log2: int = 6) -> torch.Tensor:
    """A binary (size, size) mask of Perlin blobs, randomly rotated by a multiple of 90°; never empty."""
    for _ in range(16):
        sy, sx = (2 ** torch.randint(0, max_scale_log2, (2,), generator=generator)).tolist()
        noise = perlin_noise(size, (min(sy, size), min(sx, size)), generator)
        noise = torch.rot90(noise, int(torch.randint(0, 4, (1,), generator=generator)))
        mask = (noise > threshold).float()
        if mask.sum() > 0:
            return mask
    return mask


def blend_anomaly(image: torch.Tensor, texture: torch.Tensor, mask: torch.Tensor, opacity: float) -> torch.Tensor:
    """DRAEM's augmentation: (1 − m)·I + (1 − β)·m·T + β·m·I for image/texture (3, H, W), mask (H, W)."""
    m = mask.unsqueeze(0)
    return (1 - m) * image + (1 - opacity) * m * texture + opacity * m * image
