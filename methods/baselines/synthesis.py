"""Perlin-noise anomalies with a texture source, as DRAEM and GLASS's local synthesis make them.

DRAEM (Zavrtanik et al., ICCV 2021, §3.2) pastes an augmented DTD texture into a thresholded
Perlin-noise mask: I_a = (1 − m)·I + (1 − β)·m·T + β·m·I, β ~ U(0, 0.8), and leaves half of the
training images without an anomaly. The texture source is a config choice, stored with the result:

- `dtd`: images of the Describable Textures Dataset under `dtd_root` (any *.jpg / *.png below it),
  the published setting; download it yourself (https://www.robots.ox.ac.uk/~vgg/data/dtd/).
- `train`: other normal training images of the same category, offline.
- `procedural`: coloured multi-octave Perlin textures, offline.

Each texture gets three random augmentations of DRAEM's list (gamma, brightness, sharpness,
hue/saturation, solarize, posterize, invert, autocontrast, equalize, rotation).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from robustad.methods.baselines.perlin import blend_anomaly, perlin_mask, perlin_noise

TEXTURE_SOURCES = ("dtd", "train", "procedural")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _rand(gen: torch.Generator, low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand(1, generator=gen))


AUGMENTATIONS = (
    lambda t, g: TF.adjust_gamma(t, _rand(g, 0.5, 2.0)),
    lambda t, g: (t * _rand(g, 0.8, 1.2) + _rand(g, -0.12, 0.12)).clamp(0, 1),
    lambda t, g: TF.adjust_sharpness(t, _rand(g, 0.0, 2.0)),
    lambda t, g: TF.adjust_saturation(TF.adjust_hue(t, _rand(g, -0.2, 0.2)), _rand(g, 0.5, 1.5)),
    lambda t, g: TF.solarize(t, 0.5),
    lambda t, g: (t * 255).to(torch.uint8).bitwise_and(0xF0).float() / 255,  # posterize to 4 bits
    lambda t, g: 1.0 - t,
    lambda t, g: TF.autocontrast(t),
    lambda t, g: TF.equalize((t * 255).to(torch.uint8)).float() / 255,
    lambda t, g: TF.rotate(t, _rand(g, -45, 45)),
)


def augment_texture(texture: torch.Tensor, gen: torch.Generator, augmentations=AUGMENTATIONS) -> torch.Tensor:
    """Three distinct random augmentations of `augmentations` (DRAEM's by default), in random order."""
    for index in torch.randperm(len(augmentations), generator=gen)[:3].tolist():
        texture = augmentations[index](texture, gen)
    return texture.clamp(0, 1)


def procedural_texture(size: int, gen: torch.Generator) -> torch.Tensor:
    """A coloured three-octave Perlin texture (3, size, size) in [0, 1]."""
    channels = []
    for _ in range(3):
        noise = sum(
            perlin_noise(size, (2 ** (octave + 1),) * 2, gen) / 2**octave for octave in range(3)
        )
        channels.append(noise)
    texture = torch.stack(channels)
    texture = (texture - texture.amin()) / (texture.amax() - texture.amin()).clamp_min(1e-6)
    return texture


class TextureSource:
    """Yields (3, size, size) textures from the chosen source (see module docstring)."""

    def __init__(self, source: str, size: int, train_images: torch.Tensor, dtd_root: str = "", method: str = ""):
        if source not in TEXTURE_SOURCES:
            raise ValueError(
                f"--config texture_source={source!r} for method {method!r}: expected one of "
                f"{', '.join(TEXTURE_SOURCES)}"
            )
        self.source, self.size, self.train_images = source, size, train_images
        self.files: list[Path] = []
        if source == "dtd":
            root = Path(dtd_root).expanduser() if dtd_root else None
            if root is not None and root.is_dir():
                self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise FileNotFoundError(
                    f"method {method!r} uses DTD textures but --config dtd_root={dtd_root!r} holds no images; "
                    "download DTD (https://www.robots.ox.ac.uk/~vgg/data/dtd/) and pass its folder, or use "
                    "--config texture_source=train (other normal training images) or "
                    "--config texture_source=procedural (offline Perlin textures)"
                )

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        """A texture with three of DRAEM's augmentations."""
        return augment_texture(self.raw(gen), gen)

    def raw(self, gen: torch.Generator) -> torch.Tensor:
        """A texture (3, size, size) in [0, 1] as the source gives it, before any augmentation."""
        if self.source == "dtd":
            from robustad.datasets.image_io import load_image

            path = self.files[int(torch.randint(0, len(self.files), (1,), generator=gen))]
            texture = load_image(path, self.size)
        elif self.source == "train":
            texture = self.train_images[int(torch.randint(0, len(self.train_images), (1,), generator=gen))].cpu()
        else:
            texture = procedural_texture(self.size, gen)
        return texture


def perlin_anomalies(
    images: torch.Tensor,
    textures: TextureSource,
    gen: torch.Generator,
    anomaly_probability: float = 0.5,
    max_opacity: float = 0.8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DRAEM's augmentation of a batch (B, 3, H, W): (augmented images, masks (B, 1, H, W))."""
    out, masks = images.clone(), torch.zeros_like(images[:, :1])
    size = images.shape[-1]
    for i in range(images.shape[0]):
        if float(torch.rand(1, generator=gen)) >= anomaly_probability:
            continue
        mask = perlin_mask(size, gen).to(images)
        opacity = _rand(gen, 0.0, max_opacity)
        out[i] = blend_anomaly(images[i], textures.sample(gen).to(images), mask, opacity)
        masks[i, 0] = mask
    return out, masks
