"""GLASS's local anomaly synthesis (LAS) in image space: its Perlin masks, textures and blending.

Chen et al., "A Unified Anomaly Synthesis Strategy with Gradient Ascent for Industrial Anomaly
Detection and Localization", ECCV 2024, https://arxiv.org/abs/2407.09359; official code
github.com/cqylunlun/GLASS (`perlin.py`, `datasets/mvtec.py`), read for these details:

- mask: two Perlin noises (scales 2^a × 2^b, a, b ∈ {0, …, 5}), each rotated by U(−90°, 90°)
  (zeros outside the rotated noise) and thresholded at 0.5; with probability 1/3 each their union,
  their intersection, or the first alone; multiplied by the image's binary foreground mask (GLASS's
  `fg_mask` files for object classes, the whole image otherwise); drawn again while empty;
- texture: a DTD image (or another texture source, `synthesis.TextureSource`) with 3 distinct
  augmentations of GLASS's 9 (contrast, brightness, saturation + hue, horizontal flip, vertical flip,
  grayscale, autocontrast, equalize, rotation by U(−45°, 45°));
- blend: I' = (1 − m)·I + (1 − β)·m·T + β·m·I, β ~ N(0.5, 0.1²) clipped to [0.2, 0.8].

Shared pieces come from DRAEM's synthesis (`perlin.py`: the noise and the blend; `synthesis.py`:
the texture sources). Used for training data only, never on a scoring path. After `MAX_DRAWS`
empty masks (a tiny foreground) the foreground is dropped for that image.
"""
from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF

from robustad.methods.baselines.perlin import blend_anomaly, perlin_noise
from robustad.methods.baselines.synthesis import TextureSource, _rand, augment_texture

MAX_PERLIN_SCALE_LOG2 = 6  # scales 2^0 .. 2^5
THRESHOLD = 0.5
MAX_DRAWS = 64
BETA_MEAN, BETA_STD, BETA_RANGE = 0.5, 0.1, (0.2, 0.8)


def _jitter(factor_low: float, factor_high: float, adjust):
    return lambda t, g: adjust(t, _rand(g, factor_low, factor_high)).clamp(0, 1)


GLASS_AUGMENTATIONS = (
    _jitter(0.8, 1.2, TF.adjust_contrast),
    _jitter(0.8, 1.2, TF.adjust_brightness),
    lambda t, g: TF.adjust_hue(TF.adjust_saturation(t, _rand(g, 0.8, 1.2)), _rand(g, -0.2, 0.2)).clamp(0, 1),
    lambda t, g: TF.horizontal_flip(t),
    lambda t, g: TF.vertical_flip(t),
    lambda t, g: TF.rgb_to_grayscale(t, num_output_channels=3),
    lambda t, g: TF.autocontrast(t),
    lambda t, g: TF.equalize((t * 255).to(torch.uint8)).float() / 255,
    lambda t, g: TF.rotate(t, _rand(g, -45, 45)),
)


def thresholded_perlin(size: int, gen: torch.Generator) -> torch.Tensor:
    """One Perlin noise at a random scale, rotated by U(−90°, 90°), thresholded at 0.5: (size, size) in {0, 1}."""
    sy, sx = (2 ** torch.randint(0, MAX_PERLIN_SCALE_LOG2, (2,), generator=gen)).tolist()
    noise = perlin_noise(size, (min(sy, size), min(sx, size)), gen)
    noise = TF.rotate(noise[None], _rand(gen, -90, 90), interpolation=TF.InterpolationMode.BILINEAR)[0]
    return (noise > THRESHOLD).float()


def glass_mask(size: int, gen: torch.Generator, foreground: torch.Tensor | None = None) -> torch.Tensor:
    """GLASS's LAS mask (size, size) in {0, 1}: two Perlin masks combined, times the foreground (H, W)."""
    for _ in range(MAX_DRAWS):
        first, second = thresholded_perlin(size, gen), thresholded_perlin(size, gen)
        choice = float(torch.rand(1, generator=gen))
        mask = torch.maximum(first, second) if choice > 2 / 3 else first * second if choice > 1 / 3 else first
        if foreground is not None:
            mask = mask * foreground.to(mask)
        if mask.any():
            return mask
    return glass_mask(size, gen, None) if foreground is not None else mask


def glass_local_anomalies(images: torch.Tensor, textures: TextureSource, gen: torch.Generator,
                          foreground: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """LAS on every image of a batch (B, 3, H, W) in [0, 1]: (anomalous images, masks (B, 1, H, W)).

    `foreground`: binary maps (B, H, W) where anomalies may go (None: anywhere). Pixels outside the
    mask are unchanged.
    """
    out, masks = images.clone(), torch.zeros_like(images[:, :1])
    size = images.shape[-1]
    for i in range(images.shape[0]):
        mask = glass_mask(size, gen, None if foreground is None else foreground[i]).to(images)
        texture = augment_texture(textures.raw(gen), gen, GLASS_AUGMENTATIONS).to(images)
        beta = float(torch.empty(1).normal_(BETA_MEAN, BETA_STD, generator=gen).clamp(*BETA_RANGE))
        out[i] = blend_anomaly(images[i], texture, mask, beta)
        masks[i, 0] = mask
    return out, masks
