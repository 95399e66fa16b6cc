"""Hard transforms: the distortions PatchGuard applies inside a pseudo-anomaly's mask (paper §5.1, App. B).

Nafez et al., PatchGuard, CVPR 2025, https://arxiv.org/abs/2506.09237. "Hard" transforms change the
semantics of a region (elastic deformation, large rotation, cut/erase, heavy noise, ...); the
generator in `pseudo_anomalies.py` draws `k_hard` of them and applies them in sequence to the region.

Each transform maps a crop (3, h, w) in [0, 1] and a `torch.Generator` to a crop of the same shape in
[0, 1], deterministically given the generator. Geometric ones resample the crop with reflection at its
border, so they never bring in black corners. Strengths follow the "heavy" level of the official code
(rohban-lab/PatchGuard `pseudo_anomaly.py`), expressed relative to the crop size where that code uses
pixels at 224 px; that code also has "torn paper" lines and Perlin-noise fills, left out here, and
always adds a colour jitter, which here is one of the transforms drawn (see `apply_hard_transforms`).
"""
from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torchvision.transforms.v2 import functional as TF

HardTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _random_sign(generator: torch.Generator) -> float:
    return 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (C, h, w) over h and w, edges replicated (scipy: no thread-pool cost on small crops)."""
    blurred = ndimage.gaussian_filter(image.detach().cpu().numpy(), sigma=(0, sigma, sigma), mode="nearest", truncate=3.0)
    return torch.from_numpy(blurred).to(image.dtype)


def warp(image: torch.Tensor, source_x: torch.Tensor, source_y: torch.Tensor) -> torch.Tensor:
    """Resamples (C, h, w) at pixel coordinates (source_x, source_y), each (h, w); reflection outside."""
    h, w = image.shape[-2:]
    grid = torch.stack((2 * source_x / max(w - 1, 1) - 1, 2 * source_y / max(h - 1, 1) - 1), dim=-1)
    return F.grid_sample(image[None], grid[None], mode="bilinear", padding_mode="reflection", align_corners=True)[0]


def _centred_coordinates(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    h, w = image.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=image.dtype), torch.arange(w, dtype=image.dtype), indexing="ij")
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return xs - cx, ys - cy, cx, cy


def elastic(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Elastic deformation: smoothed random displacements of up to 5–15% of the crop size."""
    h, w = image.shape[-2:]
    noise = torch.rand(2, h, w, generator=generator) * 2 - 1
    field = gaussian_blur(noise, sigma=max(1.0, 0.08 * min(h, w)))
    field = field / field.abs().amax().clamp_min(1e-6) * _uniform(generator, 0.05, 0.15) * min(h, w)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=image.dtype), torch.arange(w, dtype=image.dtype), indexing="ij")
    return warp(image, xs + field[0], ys + field[1])


def large_rotation(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotation of the crop's content about its centre by 60°–180° either way."""
    angle = math.radians(_uniform(generator, 60.0, 180.0)) * _random_sign(generator)
    dx, dy, cx, cy = _centred_coordinates(image)
    cos, sin = math.cos(angle), math.sin(angle)
    return warp(image, cx + cos * dx + sin * dy, cy - sin * dx + cos * dy)


def swirl(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Swirl: rotation by strength·exp(−r²/2s²), strength 1.5–3 rad, s = a third of the crop (official code)."""
    strength = _uniform(generator, 1.5, 3.0) * _random_sign(generator)
    dx, dy, cx, cy = _centred_coordinates(image)
    spread = max(1.0, min(image.shape[-2:]) / 3)
    angle = strength * torch.exp(-(dx**2 + dy**2) / (2 * spread**2))
    cos, sin = torch.cos(angle), torch.sin(angle)
    return warp(image, cx + cos * dx - sin * dy, cy + sin * dx + cos * dy)


def cut_erase(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random erasing: 1–3 rectangles, sides 30–70% of the crop's, filled with random colours."""
    out = image.clone()
    h, w = image.shape[-2:]
    for _ in range(int(torch.randint(1, 4, (), generator=generator))):
        eh = max(1, round(_uniform(generator, 0.3, 0.7) * h))
        ew = max(1, round(_uniform(generator, 0.3, 0.7) * w))
        top = int(torch.randint(0, h - eh + 1, (), generator=generator))
        left = int(torch.randint(0, w - ew + 1, (), generator=generator))
        out[:, top:top + eh, left:left + ew] = torch.rand(3, 1, 1, generator=generator)
    return out


def heavy_noise(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise, σ = 0.1–0.25."""
    sigma = _uniform(generator, 0.1, 0.25)
    return (image + sigma * torch.randn(image.shape, generator=generator)).clamp(0, 1)


def blur(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur, σ = 5–12% of the crop's smaller side (at least 1 px)."""
    return gaussian_blur(image, sigma=max(1.0, _uniform(generator, 0.05, 0.12) * min(image.shape[-2:])))


def jpeg(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """JPEG compression artefacts, quality 1–15 (official "heavy" level: 1–20), through Pillow."""
    quality = int(torch.randint(1, 16, (), generator=generator))
    pixels = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(image.dtype) / 255


def colour_change(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Strong colour change: hue shift 0.15–0.5 either way, saturation ×0.3–2, brightness ×0.5–0.75 or ×1.3–1.6."""
    out = TF.adjust_hue(image.clamp(0, 1), _uniform(generator, 0.15, 0.5) * _random_sign(generator))
    out = TF.adjust_saturation(out, _uniform(generator, 0.3, 2.0))
    darker = float(torch.rand((), generator=generator)) < 0.5
    brightness = _uniform(generator, 0.5, 0.75) if darker else _uniform(generator, 1.3, 1.6)
    return TF.adjust_brightness(out, brightness).clamp(0, 1)


HARD_TRANSFORMS: dict[str, HardTransform] = {
    "elastic": elastic,
    "large_rotation": large_rotation,
    "cut_erase": cut_erase,
    "heavy_noise": heavy_noise,
    "blur": blur,
    "jpeg": jpeg,
    "swirl": swirl,
    "colour_change": colour_change,
}

# When the drawn transforms leave the region nearly as it was (blur or a warp of a flat area), the
# mask would label unchanged pixels anomalous; these are added in turn until enough pixels changed.
FALLBACK_TRANSFORMS = ("colour_change", "heavy_noise")
CHANGED_PIXEL_DELTA = 4 / 255  # by default a pixel counts as changed when a channel moved by more than this
MIN_CHANGED_FRACTION = 0.5


def changed_fraction(before: torch.Tensor, after: torch.Tensor, region: torch.Tensor,
                     min_change: float = CHANGED_PIXEL_DELTA) -> float:
    """Fraction of the pixels of `region` (h, w) bool where some channel changed by > `min_change`."""
    changed = (after - before).abs().amax(0) > min_change
    return float(changed[region].float().mean()) if bool(region.any()) else 1.0


def apply_hard_transforms(crop: torch.Tensor, region: torch.Tensor, k_hard: int, generator: torch.Generator,
                          min_change: float = CHANGED_PIXEL_DELTA) -> tuple[torch.Tensor, list[str]]:
    """Applies `k_hard` distinct transforms drawn from `HARD_TRANSFORMS` to a crop (3, h, w).

    `region` (h, w) bool marks the pixels that will be used (the mask inside the crop). If fewer
    than half of the region's pixels changed by more than `min_change`, `FALLBACK_TRANSFORMS` are added.
    Returns the crop and the names applied.
    """
    if not 1 <= k_hard <= len(HARD_TRANSFORMS):
        raise ValueError(f"--config k_hard={k_hard}: expected 1..{len(HARD_TRANSFORMS)}")
    names = list(HARD_TRANSFORMS)
    chosen = [names[i] for i in torch.randperm(len(names), generator=generator)[:k_hard].tolist()]
    out = crop
    for name in chosen:
        out = HARD_TRANSFORMS[name](out, generator).clamp(0, 1)
    for name in FALLBACK_TRANSFORMS:
        if changed_fraction(crop, out, region, min_change) >= MIN_CHANGED_FRACTION:
            break
        out = HARD_TRANSFORMS[name](out, generator).clamp(0, 1)
        chosen.append(name)
    return out, chosen
