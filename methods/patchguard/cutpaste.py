"""CutPaste pseudo anomalies (Li et al., "CutPaste: Self-Supervised Learning for Anomaly Detection
and Localization", CVPR 2021, https://arxiv.org/abs/2104.04015), for PatchGuard's Table 6 ablation.

A patch is cut from a random place of the image, colour-jittered (brightness, contrast, saturation,
hue 0.1 each) and pasted at another random place. Two variants, drawn with equal chance (like the
paper's 3-way model, which trains on both):
- "normal": an axis-aligned rectangle of area U(0.02, 0.15)·HW and aspect ratio w/h log-uniform in
  (0.3, 1/0.3), wholly inside the image;
- "scar": a thin rectangle, width U(2, 16) and height U(10, 25) pixels at 256 px (scaled to the image,
  at least 2 px), rotated by U(−45°, 45°) with its content.
The mask is the pasted region (the rotated rectangle for a scar). Images (B, 3, H, W) in [0, 1].
"""
from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as TF

from robustad.methods.patchguard.hard_transforms import warp
from robustad.methods.patchguard.pseudo_anomalies import (
    PseudoAnomalyGenerator,
    check_batch,
    register_generator,
    rotated_rectangle_masks,
)

VARIANTS = ("normal", "scar", "both")


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def colour_jitter(image: torch.Tensor, generator: torch.Generator, strength: float = 0.1) -> torch.Tensor:
    """torchvision's ColorJitter(strength, strength, strength, strength), drawn from `generator`."""
    image = TF.adjust_brightness(image, _uniform(generator, 1 - strength, 1 + strength))
    image = TF.adjust_contrast(image, _uniform(generator, 1 - strength, 1 + strength))
    image = TF.adjust_saturation(image, _uniform(generator, 1 - strength, 1 + strength))
    return TF.adjust_hue(image, _uniform(generator, -strength, strength)).clamp(0, 1)


def paste_rotated(image: torch.Tensor, patch: torch.Tensor, centre: tuple[float, float],
                  angle_degrees: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pastes `patch` (3, h, w), rotated by `angle_degrees` about its centre, centred at `centre` (x, y)
    of `image` (3, H, W). Returns the image and the mask (1, H, W) of the pasted pixels."""
    h, w = patch.shape[-2:]
    height, width = image.shape[-2:]
    angle = math.radians(angle_degrees)
    centres = torch.tensor([centre], dtype=torch.float32)
    mask = rotated_rectangle_masks(centres, torch.tensor([[float(w), float(h)]]), torch.tensor([angle]), height, width)[0]
    ys = torch.arange(height, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, -1)
    dx, dy = xs - centre[0], ys - centre[1]
    cos, sin = math.cos(angle), math.sin(angle)
    # patch coordinates of each image pixel: the inverse of the rotation the mask uses
    source_x = dx * cos - dy * sin + (w - 1) / 2
    source_y = dx * sin + dy * cos + (h - 1) / 2
    pasted = warp(patch, source_x.expand(height, width), source_y.expand(height, width))
    return torch.where(mask.bool(), pasted, image), mask


@register_generator("cutpaste")
class CutPasteGenerator(PseudoAnomalyGenerator):
    """CutPaste (Li et al., CVPR 2021): a jittered patch of the image pasted elsewhere; normal or scar."""

    name = "cutpaste"
    AREA_RATIO = (0.02, 0.15)
    ASPECT_RATIO = 0.3  # w/h log-uniform in (0.3, 1/0.3)
    SCAR_WIDTH = (2.0, 16.0)  # pixels at 256 px
    SCAR_HEIGHT = (10.0, 25.0)
    SCAR_ANGLE = 45.0

    def __init__(self, variant: str = "both"):
        if variant not in VARIANTS:
            raise ValueError(f"cutpaste variant {variant!r}: expected one of {', '.join(VARIANTS)}")
        self.variant = variant

    def _patch_size(self, height: int, width: int, scar: bool, generator: torch.Generator) -> tuple[int, int]:
        if scar:
            w = _uniform(generator, *self.SCAR_WIDTH) * width / 256
            h = _uniform(generator, *self.SCAR_HEIGHT) * height / 256
            return max(2, round(h)), max(2, round(w))
        area = _uniform(generator, *self.AREA_RATIO) * height * width
        aspect = math.exp(_uniform(generator, math.log(self.ASPECT_RATIO), -math.log(self.ASPECT_RATIO)))
        w = min(width, max(1, round(math.sqrt(area * aspect))))
        h = min(height, max(1, round(math.sqrt(area / aspect))))
        return h, w

    def cut_paste(self, image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One CutPaste anomaly of an image (3, H, W): the image and its mask (1, H, W)."""
        height, width = image.shape[-2:]
        scar = self.variant == "scar" or (self.variant == "both" and float(torch.rand((), generator=generator)) < 0.5)
        h, w = self._patch_size(height, width, scar, generator)
        top = int(torch.randint(0, height - h + 1, (), generator=generator))
        left = int(torch.randint(0, width - w + 1, (), generator=generator))
        patch = colour_jitter(image[:, top:top + h, left:left + w], generator)
        angle = _uniform(generator, -self.SCAR_ANGLE, self.SCAR_ANGLE) if scar else 0.0
        # destination: the patch's bounding box (after rotation) stays inside the image
        half_x = (abs(w * math.cos(math.radians(angle))) + abs(h * math.sin(math.radians(angle)))) / 2
        half_y = (abs(w * math.sin(math.radians(angle))) + abs(h * math.cos(math.radians(angle)))) / 2
        low_x, high_x = min(half_x - 0.5, (width - 1) / 2), max(width - half_x - 0.5, (width - 1) / 2)
        low_y, high_y = min(half_y - 0.5, (height - 1) / 2), max(height - half_y - 0.5, (height - 1) / 2)
        if scar:
            centre = (_uniform(generator, low_x, high_x), _uniform(generator, low_y, high_y))
        else:  # pixel-aligned, so the pasted patch is an exact copy of the jittered one
            centre = (int(torch.randint(0, width - w + 1, (), generator=generator)) + (w - 1) / 2,
                      int(torch.randint(0, height - h + 1, (), generator=generator)) + (h - 1) / 2)
        return paste_rotated(image, patch, centre, angle)

    def __call__(self, images: torch.Tensor, indices: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(images, indices, None, None)
        device = images.device
        results = [self.cut_paste(image, generator) for image in images.detach().float().cpu()]
        out = torch.stack([r[0] for r in results])
        masks = torch.stack([r[1] for r in results])
        return out.to(device), masks.to(device)
