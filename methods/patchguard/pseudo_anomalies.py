"""Pseudo-anomaly generators for PatchGuard training: the interface, the registry and "ours".

Nafez et al., PatchGuard, CVPR 2025, https://arxiv.org/abs/2506.09237, §5.1 (Fig. 3 ②) and the
ablation of Table 6, which swaps the generator: `GENERATORS` = ours | cutpaste | fpi | nsa | glass. Every
generator returns images in [0, 1] and their exact masks: a pixel outside the mask is unchanged.

Usage (what training calls)::

    generator = create_pseudo_anomaly_generator("ours", foreground="auto")
    generator.prepare(train_images)                        # (N, 3, H, W), once before training
    anomalous, masks = generator(batch, indices, rng)      # (B, 3, H, W), (B, 1, H, W) in {0, 1}

"ours" (`ForegroundAwareGenerator`), as the paper describes it: the foreground map G(x)
(`foreground.py`) marks where anomalies may go; an anchor is drawn uniformly among the pixels where
G(x) ≥ 0.25·max G(x) (the paper says "sampled from it" without a threshold); a rectangle of width
w ~ U(0.05W, 0.3W) and height h ~ U(0.05H, 0.3H), centred on the anchor and rotated by
θ ~ U(−45°, 45°), is the mask; `k_hard` = 2 hard transforms (`hard_transforms.py`) are applied in
sequence inside it only (Eq. 1). The official code differs: it crops a patch at one foreground
point, distorts it (1 colour jitter + 0–4 other transforms at a random light/medium/heavy level),
rotates it by U(−90°, 90°) and pastes it at another foreground point, with per-category pixel bounds
on its size; its foreground masks are downloaded, binary, and dilated by 10 px. Such masks (or any
other map) can be used through `ForegroundAwareGenerator.set_foreground_maps` instead of `prepare`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robustad.core.registry import Registry
from robustad.methods.patchguard.foreground import ForegroundEstimator
from robustad.methods.patchguard.hard_transforms import CHANGED_PIXEL_DELTA, apply_hard_transforms

GENERATORS = ("ours", "cutpaste", "fpi", "nsa", "glass", "official")

PSEUDO_ANOMALY_GENERATORS: Registry = Registry("pseudo-anomaly generator")
register_generator = PSEUDO_ANOMALY_GENERATORS.register


class PseudoAnomalyGenerator:
    """Base class: `prepare` once with the normal training images, then call on batches of them."""

    name: ClassVar[str] = "generator"

    def prepare(self, images: torch.Tensor) -> None:
        """Called once before training with all normal training images (N, 3, H, W) in [0, 1];
        computes (or loads from the disk cache) whatever the generator needs."""
        check_images(images, "prepare(images)")

    def __call__(self, images: torch.Tensor, indices: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-anomalous versions of `images` (B, 3, H, W), which are the prepared images at
        `indices` (B,), and their exact masks (B, 1, H, W) in {0, 1}; deterministic given
        `generator` (a CPU torch.Generator). Images stay in [0, 1]."""
        raise NotImplementedError


def check_images(images: torch.Tensor, where: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{where}: expected images of shape (N, 3, H, W) in [0, 1], got {shape}")


def check_batch(images: torch.Tensor, indices: torch.Tensor, prepared_count: int | None,
                prepared_size: tuple[int, int] | None) -> None:
    """Validates a generator call against what `prepare` saw (None: nothing needed from it)."""
    check_images(images, "pseudo-anomaly generator")
    if indices.ndim != 1 or indices.shape[0] != images.shape[0]:
        raise ValueError(f"pseudo-anomaly generator: indices must have shape ({images.shape[0]},), got {tuple(indices.shape)}")
    if prepared_count is None:
        return
    if prepared_count == 0:
        raise RuntimeError("pseudo-anomaly generator: call prepare(train_images) before generating")
    if bool((indices < 0).any()) or bool((indices >= prepared_count).any()):
        raise IndexError(f"pseudo-anomaly generator: indices must lie in [0, {prepared_count}), got {indices.tolist()}")
    if prepared_size is not None and tuple(images.shape[-2:]) != prepared_size:
        raise ValueError(f"pseudo-anomaly generator: images are {tuple(images.shape[-2:])}, prepared ones {prepared_size}")


def uniform(generator: torch.Generator, low: float | torch.Tensor, high: float | torch.Tensor,
            count: int) -> torch.Tensor:
    """`count` draws of U(low, high) from `generator`."""
    return low + (high - low) * torch.rand(count, generator=generator)


def draw_other_indices(indices: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """For each index, a uniformly drawn different index in [0, count) (the same one when count == 1)."""
    if count == 1:
        return indices.clone()
    offsets = torch.randint(1, count, indices.shape, generator=generator)
    return (indices + offsets) % count


def rotated_rectangle_masks(centres: torch.Tensor, sizes: torch.Tensor, angles: torch.Tensor,
                            height: int, width: int) -> torch.Tensor:
    """Masks (B, 1, H, W) in {0, 1} of rectangles: centres (B, 2) as (x, y) in pixels, sizes (B, 2) as
    (w, h) in pixels, angles (B,) in radians (counter-clockwise on screen). A pixel (row y, column x) is
    inside when its centre (x, y) lies in the rotated rectangle."""
    ys = torch.arange(height, dtype=torch.float32).view(1, -1, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, -1)
    dx = xs - centres[:, 0].view(-1, 1, 1)
    dy = ys - centres[:, 1].view(-1, 1, 1)
    cos, sin = torch.cos(angles).view(-1, 1, 1), torch.sin(angles).view(-1, 1, 1)
    along = dx * cos - dy * sin  # y points down on screen, hence the signs
    across = dx * sin + dy * cos
    inside = (along.abs() <= sizes[:, 0].view(-1, 1, 1) / 2) & (across.abs() <= sizes[:, 1].view(-1, 1, 1) / 2)
    return inside.float()[:, None]


def bounding_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom/right exclusive, of a non-empty (H, W) mask."""
    rows = torch.nonzero(mask.any(1)).flatten()
    cols = torch.nonzero(mask.any(0)).flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@dataclass
class Rectangles:
    """Sampled rectangle parameters for a batch: anchors/centres (B, 2) as (x, y), sizes (B, 2) as
    (w, h) in pixels, angles (B,) in degrees."""

    centres: torch.Tensor
    sizes: torch.Tensor
    angles: torch.Tensor

    def masks(self, height: int, width: int) -> torch.Tensor:
        return rotated_rectangle_masks(self.centres, self.sizes, torch.deg2rad(self.angles), height, width)


@register_generator("ours")
class ForegroundAwareGenerator(PseudoAnomalyGenerator):
    """Foreground-aware pseudo anomalies (PatchGuard §5.1): hard transforms in a rotated rectangle on the foreground.

    Args: `foreground` ("auto" | "resnet18" | "efficientnet_lite0" | "full", default "auto"),
    `gradcam_weights` (ResNet-18 state dict, default None), `cache_dir` (foreground-map cache,
    default `$ROBUSTAD_CACHE` or ~/.cache/robustad), `k_soft` (soft copies for G(x), default 3),
    `k_hard` (hard transforms per anomaly, default 2; 1–8), `size_range` (w, h ~ U(low·W, high·W),
    default the paper's (0.05, 0.3); the official code draws larger cut-paste regions), `min_change`
    (fewer than half the mask's pixels changed by more than this: a colour change, then heavy noise,
    are added; default 4/255).
    """

    name = "ours"
    SIZE_RANGE = (0.05, 0.3)  # of the image width (height) for w (h)
    MAX_ANGLE = 45.0  # degrees
    FOREGROUND_THRESHOLD = 0.25  # anchors are drawn where G(x) >= this (G's maximum is 1)

    def __init__(self, foreground: str = "auto", gradcam_weights: str | None = None,
                 cache_dir: str | None = None, k_soft: int = 3, k_hard: int = 2,
                 size_range: tuple[float, float] = SIZE_RANGE, min_change: float = CHANGED_PIXEL_DELTA):
        if not 0 < size_range[0] <= size_range[1] <= 1:
            raise ValueError(f"anomaly size range {size_range}: expected 0 < low <= high <= 1")
        self.size_range = (float(size_range[0]), float(size_range[1]))
        if not 0 <= min_change < 1:
            raise ValueError(f"--config anomaly_min_change={min_change}: expected a pixel change in [0, 1), e.g. 16/255")
        self.min_change = float(min_change)
        if not isinstance(k_hard, int) or not 1 <= k_hard <= 8:
            raise ValueError(f"--config k_hard={k_hard!r}: expected an integer in 1..8")
        self.estimator = ForegroundEstimator(foreground, gradcam_weights, cache_dir, k_soft)
        self.k_hard = k_hard
        self.foreground_maps = torch.empty(0)
        self.anchor_regions = torch.empty(0, dtype=torch.bool)

    def prepare(self, images: torch.Tensor) -> None:
        """Computes (or loads from the cache) G(x) for every training image: `foreground_maps` (N, H, W)."""
        check_images(images, "prepare(images)")
        self.set_foreground_maps(self.estimator(images))

    def set_foreground_maps(self, maps: torch.Tensor) -> None:
        """Uses given foreground maps (N, H, W) in [0, 1] instead of computing them (tests, custom maps)."""
        maps = maps.detach().float().cpu()
        peak = maps.flatten(1).amax(1).view(-1, 1, 1)
        self.foreground_maps = maps
        # relative to each map's maximum, so a map that never reaches the threshold still has anchors
        self.anchor_regions = maps >= self.FOREGROUND_THRESHOLD * peak.clamp_max(1.0)
        self.anchor_regions |= ~self.anchor_regions.flatten(1).any(1).view(-1, 1, 1)  # all-zero map: anywhere

    def sample_rectangles(self, indices: torch.Tensor, generator: torch.Generator) -> Rectangles:
        """Anchors drawn uniformly from each image's foreground region; sizes and angles as in §5.1."""
        count = indices.shape[0]
        height, width = self.anchor_regions.shape[-2:]
        weights = self.anchor_regions[indices.cpu()].flatten(1).float()
        flat = torch.multinomial(weights, 1, generator=generator).flatten()
        centres = torch.stack(((flat % width).float(), (flat // width).float()), dim=1)
        low, high = self.size_range
        sizes = torch.stack((uniform(generator, low * width, high * width, count),
                             uniform(generator, low * height, high * height, count)), dim=1)
        angles = uniform(generator, -self.MAX_ANGLE, self.MAX_ANGLE, count)
        return Rectangles(centres, sizes, angles)

    def __call__(self, images: torch.Tensor, indices: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(images, indices, self.anchor_regions.shape[0], tuple(self.anchor_regions.shape[-2:]))
        device = images.device
        images = images.detach().float().cpu()
        rectangles = self.sample_rectangles(indices, generator)
        masks = rectangles.masks(*images.shape[-2:])
        out = images.clone()
        for b in range(images.shape[0]):
            region = masks[b, 0].bool()
            top, bottom, left, right = bounding_box(region)
            crop = images[b, :, top:bottom, left:right]
            inside = region[top:bottom, left:right]
            transformed, _ = apply_hard_transforms(crop, inside, self.k_hard, generator, self.min_change)
            out[b, :, top:bottom, left:right] = torch.where(inside, transformed, crop)
        return out.to(device), masks.to(device)


def create_pseudo_anomaly_generator(name: str, *, foreground: str = "auto", gradcam_weights: str | None = None,
                                    cache_dir: str | None = None, k_soft: int = 3,
                                    k_hard: int = 2,
                                    size_range: tuple[float, float] = ForegroundAwareGenerator.SIZE_RANGE,
                                    min_change: float = CHANGED_PIXEL_DELTA,
                                    official_min_side: int = 14, texture_source: str = "dtd",
                                    dtd_root: str = "") -> PseudoAnomalyGenerator:
    """Builds a generator by name (one of `GENERATORS`). The foreground options (`foreground`,
    `gradcam_weights`, `cache_dir`, `k_soft`) and `k_hard` configure "ours"; the other generators
    follow their own papers and ignore them (Table 6 keeps the rest of the pipeline fixed); "official"
    (the official code's cut-paste) takes the foreground options and `official_min_side`; "glass" the
    foreground options and its textures (`texture_source`, `dtd_root`)."""
    cls = PSEUDO_ANOMALY_GENERATORS.get(name)
    if name == "glass":
        return cls(foreground=foreground, gradcam_weights=gradcam_weights, cache_dir=cache_dir, k_soft=k_soft,
                   texture_source=texture_source, dtd_root=dtd_root)
    if name == "official":
        return cls(foreground=foreground, gradcam_weights=gradcam_weights, cache_dir=cache_dir, k_soft=k_soft,
                   min_side=official_min_side)
    if cls is ForegroundAwareGenerator:
        return cls(foreground=foreground, gradcam_weights=gradcam_weights, cache_dir=cache_dir,
                   k_soft=k_soft, k_hard=k_hard, size_range=size_range, min_change=min_change)
    return cls()


# The alternatives of Table 6 register themselves; imported last, as they build on the base above.
from robustad.methods.patchguard import cutpaste, fpi, glass_anomalies, nsa, official_cutpaste  # noqa: E402,F401
