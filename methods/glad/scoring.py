"""GLAD's anomaly map: DINO-feature distances between the input and its reconstruction (official `main.py`, `test`).

Both images are mapped to [0, 1] and ImageNet-normalized; for each chosen DINO block (3, 6, 9, 12 of
ViT-B/8) every input patch gets 1 − its largest cosine similarity to any reconstruction patch, upsampled
bilinearly to the image and summed over blocks (transistor, VisA pcb1 and pcb4 add the reverse
direction). `v` > 0 adds the channel-mean absolute pixel difference scaled to the map's maximum; the
sum is blurred (Gaussian, σ = 6, kernel 2·⌊4σ + 0.5⌋ + 1) and multiplied by the object mask.

Object mask (official `dataset.py`): for a few classes the foreground is the side of the Otsu threshold
of the grey image opposite the background ("dark": objects darker than the background, MVTec screw
and capsule), dilated by a Gaussian filter (σ = 6) thresholded at 0 and smoothed by it again; every
other class uses the whole image. The Otsu threshold and the binarizations are a non-differentiable
step: `NonDifferentiable` with the identity surrogate on the grey image.

Differences from the official code, each for the harness's contracts: the pixel distance is scaled
by each image's own map maximum (the official code uses the batch's, which makes a score depend on
its batch neighbours), and the object mask is computed from the image being scored, inside the
forward pass (the official dataset computes it once from the clean file).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from robustad.methods.glad.reconstruction import patch_distance_map

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # cv2.COLOR_RGB2GRAY
MASK_SIGMA = 6.0


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, 1, H, W) with kernel 2·⌊4σ + 0.5⌋ + 1 (kornia's `gaussian_blur2d` in the
    official code), reflect-padded; the kernel is capped to the image for tiny images."""
    if sigma <= 0:
        return maps
    size = 2 * int(4 * sigma + 0.5) + 1
    limit = 2 * ((min(maps.shape[-2:]) - 1) // 2) + 1
    return TF.gaussian_blur(maps, [min(size, limit)] * 2, [sigma, sigma])


def grey(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) grey levels in [0, 1] of images (B, 3, H, W)."""
    return (images * images.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)


def otsu_threshold(levels: torch.Tensor) -> torch.Tensor:
    """(B,) Otsu thresholds of 8-bit grey images (B, 1, H, W) in [0, 255]: the level maximizing the
    between-class variance (cv2.THRESH_OTSU)."""
    values = levels.round().clamp(0, 255).long().flatten(1)
    hist = torch.zeros(values.shape[0], 256, device=levels.device).scatter_add_(
        1, values, torch.ones_like(values, dtype=torch.float32))
    prob = hist / hist.sum(1, keepdim=True)
    bins = torch.arange(256, device=levels.device, dtype=torch.float32)
    weight = prob.cumsum(1)
    mean = (prob * bins).cumsum(1)
    total = mean[:, -1:]
    between = (total * weight - mean) ** 2 / (weight * (1 - weight)).clamp_min(1e-12)
    return between.argmax(1).float()


def object_mask(grey_images: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, 1, H, W) object mask of grey images (B, 1, H, W) in [0, 1]; mode "dark" or "light"."""
    levels = grey_images * 255
    threshold = otsu_threshold(levels).view(-1, 1, 1, 1)
    background = (levels.round() > threshold).float()  # cv2.THRESH_BINARY: above the threshold
    foreground = 1 - background if mode == "dark" else background
    dilated = (gaussian_blur(foreground, MASK_SIGMA) > 1e-6).float()
    return gaussian_blur(dilated, MASK_SIGMA)


def feature_distance_map(dino, images: torch.Tensor, reconstruction: torch.Tensor, bidirectional: bool,
                         pixel_weight: float, sigma: float) -> torch.Tensor:
    """(B, 1, H, W) GLAD map of images in [0, 1] and their reconstructions in [−1, 1] (before the mask)."""
    size = images.shape[-2:]
    source = imagenet_normalize(images)
    rebuilt = imagenet_normalize((reconstruction + 1) / 2)
    total = 0
    for tokens_in, tokens_rec in zip(dino(source), dino(rebuilt)):
        side = int(round(tokens_in.shape[1] ** 0.5))
        forward = patch_distance_map(tokens_in, tokens_rec).view(-1, 1, side, side)
        total = total + F.interpolate(forward, size=size, mode="bilinear", align_corners=True)
        if bidirectional:
            backward = patch_distance_map(tokens_rec, tokens_in).view(-1, 1, side, side)
            total = total + F.interpolate(backward, size=size, mode="bilinear", align_corners=True)
    if pixel_weight > 0:
        distance = (source - rebuilt).abs().mean(1, keepdim=True)
        scale = total.flatten(1).amax(1) / distance.flatten(1).amax(1).clamp_min(1e-12)
        total = total + pixel_weight * scale.view(-1, 1, 1, 1) * distance
    return gaussian_blur(total, sigma)
