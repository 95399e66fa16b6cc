"""Foreign patch interpolation (FPI) pseudo anomalies (Tan et al., "Detecting Outliers with Foreign
Patch Interpolation", MELBA 2022, https://arxiv.org/abs/2011.04197), for PatchGuard's Table 6 ablation.

A square patch of the image is linearly interpolated with the same patch of another training image:
x' = (1 − f)·x + f·x_foreign inside the patch, with the foreign fraction f ~ U(0.05, 0.95). As in
the authors' code (jemtan/FPI, `self_sup_task.py`): the half-width is an integer in [0.05W, 0.2W),
the centre is uniform in the central 80% of the image, and the label covers the patch pixels where
the two images differ. FPI's own label is the continuous f; PatchGuard needs a binary mask, so the
mask here is that set of differing pixels (pixels outside it are unchanged). Images (B, 3, H, W) in
[0, 1]; the foreign image is drawn among the other prepared training images (a single training
image is interpolated with its 180°-rotated self).
"""
from __future__ import annotations

import torch

from robustad.methods.patchguard.pseudo_anomalies import (
    PseudoAnomalyGenerator,
    check_batch,
    check_images,
    draw_other_indices,
    register_generator,
    rotated_rectangle_masks,
    uniform,
)


@register_generator("fpi")
class ForeignPatchInterpolation(PseudoAnomalyGenerator):
    """FPI (Tan et al., MELBA 2022): a square patch interpolated with the same patch of another image."""

    name = "fpi"
    HALF_WIDTH = (0.05, 0.2)  # of the image width
    CORE = 0.8  # patch centres lie in the central 80% of the image
    FOREIGN_FRACTION = (0.05, 0.95)

    def __init__(self):
        self.train_images = torch.empty(0)

    def prepare(self, images: torch.Tensor) -> None:
        """Keeps the training images (N, 3, H, W) as the source of foreign patches."""
        check_images(images, "prepare(images)")
        self.train_images = images.detach().float().cpu()

    def __call__(self, images: torch.Tensor, indices: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(images, indices, self.train_images.shape[0], tuple(self.train_images.shape[-2:]))
        device = images.device
        images = images.detach().float().cpu()
        count, (height, width) = images.shape[0], images.shape[-2:]
        indices = indices.cpu()
        other = draw_other_indices(indices, self.train_images.shape[0], generator)
        foreign = self.train_images[other]
        if self.train_images.shape[0] == 1:
            foreign = foreign.flip(-1, -2)
        low, high = (round(f * width) for f in self.HALF_WIDTH)
        half = torch.randint(max(1, low), max(2, high), (count,), generator=generator).float()
        offset_x, offset_y = (1 - self.CORE) * width / 2, (1 - self.CORE) * height / 2
        centre_x = (offset_x + torch.rand(count, generator=generator) * self.CORE * width).floor()
        centre_y = (offset_y + torch.rand(count, generator=generator) * self.CORE * height).floor()
        # rows/columns centre - half ... centre + half - 1, as the authors' slicing
        centres = torch.stack((centre_x - 0.5, centre_y - 0.5), dim=1)
        patches = rotated_rectangle_masks(centres, torch.stack((2 * half, 2 * half), 1), torch.zeros(count), height, width)
        fraction = uniform(generator, *self.FOREIGN_FRACTION, count).view(-1, 1, 1, 1)
        differs = (images != foreign).any(1, keepdim=True)
        masks = patches * differs.float()
        out = torch.where(masks.bool(), (1 - fraction) * images + fraction * foreign, images)
        return out.clamp(0, 1).to(device), masks.to(device)
