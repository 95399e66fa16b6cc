"""GLASS's local anomaly synthesis as PatchGuard's pseudo-anomaly generator (`pseudo_anomaly=glass`, Table 6).

Chen et al., GLASS, ECCV 2024 (https://arxiv.org/abs/2407.09359, code cqylunlun/GLASS). Its
input-space synthesis (LAS: Perlin masks, augmented textures, blending;
`methods/baselines/glass_synthesis.py`, shared with robustad's `glass` baseline pieces) replaces
PatchGuard's hard transforms; the rest of the pipeline is unchanged (paper §6.2, Table 6). GLASS's
global synthesis (gradient ascent on features) has no image-space counterpart and is not part of it.

Masks: GLASS multiplies its Perlin masks by binary foreground masks (its `fg_mask` files, for object
classes). Here the foreground is PatchGuard's own, as for every generator of Table 6: the dataset's
foreground masks when it ships them, else G(x) (`foreground.py`) thresholded at 0.25 of its maximum
(the region "ours" draws its anchors from), the whole image on texture datasets. The returned masks
are GLASS's pixel masks (its `mask_l`); PatchGuard's patch-label rule turns them into patch targets.

Textures (`texture_source`): `dtd` (GLASS's setting; `dtd_root` must hold DTD's images), `train`
(other normal training images; offline, the `quick` profile) or `procedural` (offline Perlin colour
textures).
"""
from __future__ import annotations

import torch

from robustad.methods.baselines.glass_synthesis import glass_local_anomalies
from robustad.methods.baselines.synthesis import TextureSource
from robustad.methods.patchguard.pseudo_anomalies import ForegroundAwareGenerator, check_batch, register_generator


@register_generator("glass")
class GlassLocalGenerator(ForegroundAwareGenerator):
    """GLASS's LAS inside PatchGuard's foreground: `set_training_images` (textures), then the foreground
    (`prepare` or `set_foreground_maps`, as "ours"), then calls on batches."""

    name = "glass"

    def __init__(self, foreground: str = "auto", gradcam_weights: str | None = None, cache_dir: str | None = None,
                 k_soft: int = 3, texture_source: str = "dtd", dtd_root: str = ""):
        super().__init__(foreground=foreground, gradcam_weights=gradcam_weights, cache_dir=cache_dir, k_soft=k_soft)
        self.texture_source, self.dtd_root = texture_source, dtd_root
        self.textures: TextureSource | None = None

    def set_training_images(self, images: torch.Tensor) -> None:
        """The normal training images (N, 3, H, W): the `train` texture source, and the texture size."""
        self.textures = TextureSource(self.texture_source, images.shape[-1], images, self.dtd_root, "patchguard")

    def prepare(self, images: torch.Tensor) -> None:
        if self.textures is None:
            self.set_training_images(images)
        super().prepare(images)

    def __call__(self, images: torch.Tensor, indices: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(images, indices, self.anchor_regions.shape[0], tuple(self.anchor_regions.shape[-2:]))
        if self.textures is None:
            raise RuntimeError("pseudo_anomaly=glass: call set_training_images(train_images) before generating")
        device = images.device
        foreground = self.anchor_regions[indices.cpu()].float()
        anomalous, masks = glass_local_anomalies(images.detach().float().cpu(), self.textures, generator, foreground)
        return anomalous.to(device), masks.to(device)
