"""A diagnostic, not a method: PatchGuard trained on the `textures` test set's own defect process.

`TestDefectGenerator` is a pseudo-anomaly generator that draws the built-in dataset's test-time
defects (`datasets/surface_defects.py`: scratch, hole, stain, foreign texture, crack, one kind per
image, uniformly) on the training images, each with its exact mask. PatchGuard trained on it
(`patchguard_acceptance.py --pseudo-anomalies test-defects`) sees at training time what it is tested
on, which no real detector can: what that model keeps under attack says whether pseudo anomalies
more like the test defects could help on this data at this image size, model and training budget.
`MixedGenerator` gives each image either these defects or the configured pseudo anomalies.

The defects' sizes are set in pixels of the dataset's 128 px crops, so each image is upsampled to
`draw_size`, the defect drawn there, and its change brought back to the image size the way the
loader resizes (antialiased bilinear for the change, nearest for the mask). The defect is drawn on
the upsampled, slightly blurred image, not on the original crop.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from robustad.datasets.image_io import mask_tensor
from robustad.datasets.surface_defects import DEFECT_KINDS, apply_defect
from robustad.datasets.textures import TEXTURE_PHOTOS, load_photo
from robustad.methods.patchguard.pseudo_anomalies import PseudoAnomalyGenerator, check_batch, check_images


class TestDefectGenerator(PseudoAnomalyGenerator):
    """The `textures` test defects on given images; `foreign` takes its texture from another category's photo."""

    __test__ = False  # not a pytest class
    name = "test-defects"

    def __init__(self, category: str, draw_size: int = 128, kinds: tuple[str, ...] = DEFECT_KINDS):
        if category not in TEXTURE_PHOTOS:
            raise ValueError(f"test-defects: category {category!r} is not a textures category "
                             f"({', '.join(TEXTURE_PHOTOS)}); the test defect process exists for textures only")
        unknown = sorted(set(kinds) - set(DEFECT_KINDS))
        if unknown or not kinds:
            raise ValueError(f"test-defects: kinds {list(kinds)}: expected some of {', '.join(DEFECT_KINDS)}")
        self.draw_size = draw_size
        self.kinds = tuple(kinds)
        self.donors = [load_photo(name) for name in TEXTURE_PHOTOS if name != category]

    def prepare(self, images: torch.Tensor) -> None:
        check_images(images, "prepare(images)")

    def __call__(self, images: torch.Tensor, indices: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(images, indices, None, None)  # needs nothing from prepare
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        size = tuple(images.shape[-2:])
        large = F.interpolate(images.float(), size=(self.draw_size, self.draw_size), mode="bilinear",
                              align_corners=False).clamp(0, 1)
        outputs, masks = [], []
        for image, source in zip(images.float(), large):
            pixels = np.round(source.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            if (pixels == pixels[..., :1]).all():
                pixels = pixels[..., :1]  # a grey photo: the defects treat it as grey, as in the dataset
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
            donor = self.donors[int(rng.integers(len(self.donors)))]
            defective, mask = apply_defect(kind, pixels, rng, donor)
            change = torch.from_numpy((defective.astype(np.float32) - pixels) / 255).permute(2, 0, 1)
            change = F.interpolate(change[None].expand(-1, 3, -1, -1), size=size, mode="bilinear",
                                   antialias=True, align_corners=False)[0]
            outputs.append((image + change).clamp(0, 1))
            masks.append(mask_tensor(mask, size[0]))
        return torch.stack(outputs), torch.stack(masks)


class MixedGenerator(PseudoAnomalyGenerator):
    """Each image's anomaly from `first` with probability `share`, else from `second` (both exact masks)."""

    name = "mixed"

    def __init__(self, first: PseudoAnomalyGenerator, second: PseudoAnomalyGenerator, share: float = 0.5):
        if not 0 <= share <= 1:
            raise ValueError(f"mixed generator: share {share} must lie in [0, 1]")
        self.first, self.second, self.share = first, second, share

    def prepare(self, images: torch.Tensor) -> None:
        self.first.prepare(images)
        self.second.prepare(images)

    def __call__(self, images: torch.Tensor, indices: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.rand(len(images), generator=generator) < self.share
        first_images, first_masks = self.first(images, indices, generator)
        second_images, second_masks = self.second(images, indices, generator)
        chosen = pick.view(-1, 1, 1, 1)
        return (torch.where(chosen, first_images.float(), second_images.float()),
                torch.where(chosen, first_masks.float(), second_masks.float()))
