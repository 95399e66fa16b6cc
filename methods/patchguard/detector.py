"""The `patchguard` Detector: PatchGuard (CVPR 2025, https://arxiv.org/abs/2506.09237).

M(x): patch logits (B, g, g) of a ViT + attention discriminator (16×16 at 224 px, paper profile).
S(x): the mean of the top-k patch logits (k = 5). Pixel map: M bilinearly upsampled to image size
and Gaussian-smoothed (σ = 6, radius 7 at 224 px, scaled with the image size; official code).
The ablation backbones (`backbone=resnet50|unet`, `cnn_backbones.py`, Table 10) replace the network:
ResNet-50 gives the same patch grid, the U-Net pixel logits (B, H, W), whose S(x) is the mean of the
top k/N of the pixels (paper appendix C.4).
`fit` trains from scratch on normal images and their pseudo anomalies with PGD adversarial
training (see `adversarial_training.py`); every paper ablation is a config field (`config.py`).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur
from tqdm.auto import tqdm

from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.detector import Detector
from robustad.methods.patchguard.adversarial_training import training_step
from robustad.methods.patchguard.config import PROFILES, PatchGuardConfig
from robustad.methods.patchguard.model import PatchGuardNet
from robustad.methods.patchguard.released_weights import missing_released_weights, released_weights_file
from robustad.methods.patchguard.training_batches import training_batches
from robustad.methods.registry import register_method


def symmetric_gaussian_filter(maps: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """`scipy.ndimage.gaussian_filter(maps, sigma, radius=radius, axes=(1, 2))` on (B, H, W) in torch:
    the same normalized kernel, borders extended by mirroring with the edge pixel repeated ("reflect")."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(maps.dtype)
    out = maps
    for dim in (1, 2):
        size = out.shape[dim]
        index = torch.arange(-radius, size + radius, device=maps.device)
        period = 2 * size
        index = index % period
        index = torch.where(index >= size, period - 1 - index, index)  # d c b a | a b c d | d c b a
        padded = out.index_select(dim, index)
        out = sum(kernel[k] * padded.narrow(dim, k, size) for k in range(2 * radius + 1))
    return out


def build_pseudo_anomaly_generator(config: PatchGuardConfig):
    """The pseudo-anomaly generator named by the config (`pseudo_anomalies.py`, paper §5.1)."""
    from robustad.methods.patchguard.pseudo_anomalies import create_pseudo_anomaly_generator

    return create_pseudo_anomaly_generator(
        config.pseudo_anomaly,
        foreground=config.foreground,
        gradcam_weights=config.gradcam_weights or None,
        cache_dir=None,
        k_soft=config.k_soft,
        k_hard=config.k_hard,
        size_range=config.anomaly_size,
        min_change=config.anomaly_min_change,
        official_min_side=config.official_min_side,
        texture_source=config.texture_source,
        dtd_root=config.dtd_root,
    )


def generator_config(config: PatchGuardConfig, train_set) -> PatchGuardConfig:
    """`config` with foreground="auto" resolved to "full" on texture datasets.

    A dataset format with `whole_image_foreground` (textures, WFDD, DTD-Synthetic) is all
    foreground, as in the official code; no Grad-CAM network (or its weights) is needed there.
    """
    whole = getattr(getattr(train_set, "format", None), "whole_image_foreground", False)
    if config.foreground == "auto" and whole:
        return dataclasses.replace(config, foreground="full")
    return config


def training_images(train_set, image_size: int, patch_size: int) -> torch.Tensor:
    """The normal images of `train_set` stacked as (N, 3, image_size, image_size) in [0, 1]."""
    if len(train_set) == 0:
        raise ValueError("patchguard.fit: the training set has no images (expected normal images of one category)")
    images = []
    for index in range(len(train_set)):
        item = train_set[index]
        if int(item.get("label", 0)) != 0:
            continue
        image = item["image"]
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"patchguard.fit: item {index} ({item.get('path', '?')}) has image shape "
                             f"{tuple(image.shape)}, expected (3, H, W)")
        if min(image.shape[-2:]) < patch_size:
            raise ValueError(f"patchguard.fit: item {index} ({item.get('path', '?')}) is {tuple(image.shape[-2:])} px, "
                             f"smaller than one patch ({patch_size} px)")
        if tuple(image.shape[-2:]) != (image_size, image_size):
            image = F.interpolate(image[None].float(), size=(image_size, image_size), mode="bilinear",
                                  antialias=True, align_corners=False)[0].clamp(0, 1)
        images.append(image.float())
    if not images:
        raise ValueError("patchguard.fit: the training set has no normal (label 0) images")
    return torch.stack(images)


def precomputed_foreground(train_set, image_size: int) -> torch.Tensor | None:
    """The dataset's precomputed foreground masks (N, H, W) for the normal training images, or None.

    The official code ships binary `foreground_mask/` folders for some datasets; with
    `foreground="auto"` they replace Grad-CAM when every training image has one.
    """
    if not hasattr(train_set, "foreground_mask"):
        return None
    maps = []
    labels = getattr(train_set, "labels", None)
    for index in range(len(train_set)):
        if labels is not None and int(labels[index]) != 0:
            continue
        mask = train_set.foreground_mask(index)
        if mask is None:
            return None
        if tuple(mask.shape[-2:]) != (image_size, image_size):
            mask = F.interpolate(mask[None].float(), size=(image_size, image_size), mode="nearest")[0]
        maps.append(mask[0].float())
    return torch.stack(maps) if maps else None


@register_method("patchguard")
class PatchGuard(Detector):
    """PatchGuard: adversarially trained ViT + attention discriminator on pseudo anomalies."""

    name = "patchguard"
    display_name = "PatchGuard"
    table_order = 100
    config_class = PatchGuardConfig
    profiles = PROFILES

    def __init__(self, config: PatchGuardConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.released_weights: dict | None = None  # {"path", "sha256", "source"} with weights=
        if self.config.arch == "official":
            from robustad.methods.patchguard.official_model import OfficialPatchGuardNet

            self.net = OfficialPatchGuardNet(self.config)
        elif self.config.backbone != "vit":
            from robustad.methods.patchguard.cnn_backbones import build_network

            self.net = build_network(self.config)
        else:
            self.net = PatchGuardNet(self.config)
        if self.config.weights:
            from robustad.methods.patchguard.released_weights import load_released_weights

            self.released_weights = load_released_weights(self.net, self.config.weights)
            self.eval()

    # -- hooks of the Detector contract ----------------------------------------------------------
    @property
    def given_weights(self) -> dict | None:
        return self.released_weights

    @classmethod
    def cell_overrides(cls, overrides: dict, dataset: str, category: str) -> dict:
        """`weights=DIR` becomes this cell's file in DIR, `patchguard_<dataset>_<category>.pth` (the
        authors' release names them so)."""
        overrides = dict(overrides)
        weights = overrides.get("weights")
        if weights and Path(str(weights)).expanduser().is_dir():
            overrides["weights"] = str(released_weights_file(Path(str(weights)).expanduser(), cls.name, dataset,
                                                             category))
        return overrides

    @classmethod
    def check_before_run(cls, config, dataset: str, categories: list[str]) -> None:
        """The files the ablation variants name (`check_variant_files`); with `weights=DIR`, every category's
        `patchguard_<dataset>_<category>.pth` in DIR (else one error naming all missing files); a file given
        must exist and serve one category only."""
        if config is None:
            return
        cls.check_variant_files(config)
        if not config.weights:
            return
        weights = config.weights
        path = Path(str(weights)).expanduser()
        if path.is_dir():
            missing = missing_released_weights(path, cls.name, dataset, categories)
            if missing:
                raise ValueError(f"--config weights={weights}: no file for {len(missing)} of {len(categories)} "
                                 f"categories: {', '.join(p.name for p in missing)} (expected "
                                 f"{cls.name}_{dataset}_<category>.pth per category)")
        elif not path.is_file():
            raise ValueError(f"--config weights={weights}: no such file or folder")
        elif len(categories) > 1:
            raise ValueError(f"--config weights={weights}: one file for {len(categories)} categories "
                             f"({', '.join(categories)}); give a folder of {cls.name}_{dataset}_<category>.pth files")

    @classmethod
    def check_variant_files(cls, config: PatchGuardConfig) -> None:
        """The files the ablation variants name: GLASS's DTD folder, the ResNet-50's ImageNet weights."""
        if config.pseudo_anomaly == "glass" and config.texture_source == "dtd":
            from robustad.methods.baselines.synthesis import TextureSource

            try:
                TextureSource("dtd", 8, torch.empty(0), config.dtd_root, cls.name)
            except FileNotFoundError as error:
                raise ValueError(f"--config pseudo_anomaly=glass: {error}") from None
        if config.backbone == "resnet50" and config.backbone_init == "pretrained":
            from pathlib import Path

            from robustad.methods.baselines.backbones import cached_torchvision_file

            given = config.backbone_weights.strip()
            if given and not Path(given).expanduser().is_file():
                raise ValueError(f"--config backbone_weights={given}: no such file (a resnet50 state dict)")
            if not given and cached_torchvision_file("resnet50") is None:
                raise ValueError(
                    "--config backbone=resnet50 needs ImageNet ResNet-50 weights: put torchvision's "
                    "resnet50-0676ba61.pth in the torch hub cache "
                    f"({Path(torch.hub.get_dir()) / 'checkpoints'}), or --config backbone_weights=PATH, or "
                    "--config backbone_init=scratch (random weights, recorded in the result)")

    @classmethod
    def cost_prior(cls, config, profile: Profile) -> tuple[float, float] | None:
        """Measured rates (docs/findings/patchguard-cpu-scale.md, attack-engine-performance.md): `quick` on a
        2-core CPU fits in fp32 at ~2.9 s per epoch of 64 images (~13.5 s per image for 300 epochs) and runs
        PGD-20 on 49 images in 2.6 s; `long` fits ~67 s per image, its attacks 1.76x quick's; `paper` on
        one H200: 0.26 s per step of 16 + 16 images for 300 epochs, PGD at 1168 image·steps/s; `official`:
        1000 epochs (not measured). Given weights: no fit."""
        fit, attack = {
            Profile.QUICK: (13.5, 2.6 / (49 * 20)),
            Profile.LONG: (67.0, 1.76 * 2.6 / (49 * 20)),
            Profile.PAPER: (300 * 0.26 / 16, 1 / 1168),
            Profile.OFFICIAL: (1000 * 0.26 / 16, 1 / 1168),
        }[Profile.parse(profile)]
        return (0.0 if config is not None and config.weights else fit), attack

    exposes_attention = True

    def attention_degrees(self, images: torch.Tensor, layer: int | str = -1) -> torch.Tensor:
        """Attention degree (B,) of `layer` (1-based ViT block, negative from the end, or "discriminator")."""
        from robustad.methods.patchguard.attention_degree import image_attention_degrees

        return image_attention_degrees(self, images, layer)

    # -- M(x), S(x), pixel map --------------------------------------------------------------
    def _check_images(self, images: torch.Tensor) -> None:
        size = self.config.image_size
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"patchguard expects images of shape (B, 3, {size}, {size}), got {tuple(images.shape)}")
        if min(images.shape[-2:]) < self.config.patch_size:
            raise ValueError(f"patchguard: images of {tuple(images.shape[-2:])} px are smaller than one patch "
                             f"({self.config.patch_size} px)")
        if tuple(images.shape[-2:]) != (size, size):
            raise ValueError(f"patchguard was built for {size}×{size} images, got {tuple(images.shape[-2:])} "
                             f"(resize to detector.image_size)")

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """S(x), (B,): the top-k mean of the patch logits; with backbone=unet the mean of the top k/N
        of the pixel logits (paper appendix C.4: p = k/N, N the ViT's number of patches)."""
        if self.config.backbone != "unet":
            return super().score(logits)
        flat = logits.flatten(1)
        count = max(1, round(flat.shape[1] * self.config.top_k / self.config.num_patches))
        return flat.topk(min(count, flat.shape[1]), dim=1).values.mean(dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """M(x): patch logits (B, g, g), g = image_size / patch_size, or pixel logits (B, H, W) with
        backbone=unet; differentiable in x."""
        self._check_images(images)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            logits = self.net(images)
        return logits.float()

    def forward_with_attention(self, images: torch.Tensor, layers: tuple):
        """(M(x), {layer: attention (B, heads, N, N)}) for 0-based ViT blocks and/or "discriminator"."""
        self._check_images(images)
        if self.config.backbone != "vit":
            raise ValueError(f"patchguard with backbone={self.config.backbone} has no attention "
                             f"(the attention degree is a ViT's)")
        logits, attention = self.net(images, tuple(layers))
        return logits.float(), attention

    def anomaly_map(self, logits: torch.Tensor, size) -> torch.Tensor:
        """M bilinearly upsampled to `size` and Gaussian-smoothed, (B, H, W); σ, radius scale with size."""
        upsampled = super().anomaly_map(logits, size)
        height = upsampled.shape[-2]
        sigma = self.config.smoothing_sigma * height / 224
        radius = max(1, round(self.config.smoothing_radius * height / 224))
        if sigma <= 0:
            return upsampled
        if self.config.arch == "official":  # scipy.ndimage.gaussian_filter's border rule, as the official get_auc
            return symmetric_gaussian_filter(upsampled, sigma, radius)
        return gaussian_blur(upsampled.unsqueeze(1), [2 * radius + 1] * 2, [sigma, sigma]).squeeze(1)

    # -- training ---------------------------------------------------------------------------
    def _observe(self, after_epoch, epoch: int, device: torch.device) -> None:
        """Calls `after_epoch(epoch)` in eval mode without touching the fit's random state."""
        was_training = self.training
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            self.eval()
            try:
                after_epoch(epoch)
            finally:
                self.train(was_training)

    def fit(self, train_set, after_epoch=None) -> None:
        """Trains from scratch on the normal images of `train_set` (paper §5; AdamW, cosine lr).

        `after_epoch(epoch)`, if given, is called after each epoch (1-based) with the weights of that
        moment, e.g. to measure a learning curve. It runs in eval mode on a fork of torch's random
        state, so whatever it does (an attack, a forward pass) leaves the trained model as without it.
        """
        config = self.config
        if self.released_weights is not None:
            raise RuntimeError(
                f"patchguard.fit: this detector holds the authors' released weights ({config.weights}); it is "
                f"evaluated as it is, not trained (drop --config weights= to train the official recipe)")
        images = training_images(train_set, config.image_size, config.patch_size)
        device = next(self.parameters()).device
        generator = derived_generator()  # follows the cell's seed (robustad.core.seeding)
        pseudo = build_pseudo_anomaly_generator(generator_config(config, train_set))
        given = precomputed_foreground(train_set, config.image_size) if config.foreground == "auto" else None
        if hasattr(pseudo, "set_training_images"):
            pseudo.set_training_images(images)  # pseudo_anomaly=glass: its texture source
        if given is not None and hasattr(pseudo, "set_foreground_maps"):
            pseudo.set_foreground_maps(given)  # the dataset's precomputed foreground_mask/ files
        else:
            pseudo.prepare(images)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, config.epochs), eta_min=config.lr * config.lr_final_factor
        )
        batch_size = min(config.batch_size, len(images))
        steps_per_epoch = max(1, len(images) // batch_size)  # drop the last partial batch
        progress = tqdm(total=config.epochs, desc="patchguard fit", disable=None)
        total = 0.0
        # on an accelerator, the next batches' pseudo anomalies are drawn while this one trains (same draws)
        for batch in training_batches(images, pseudo, generator, batch_size, config.epochs,
                                      prefetch=device.type != "cpu"):
            total += training_step(self, optimizer, batch.normal.to(device), batch.anomalous.to(device).float(),
                                   batch.masks.to(device).float())
            if batch.step < steps_per_epoch - 1:
                continue
            if not math.isfinite(total):
                raise FloatingPointError(
                    f"patchguard.fit diverged: the training loss is {total} in epoch {batch.epoch + 1} of {config.epochs} "
                    f"(train_precision={config.train_precision}, lr={config.lr}); try --config "
                    f"train_precision=fp32 or a lower lr"
                )
            schedule.step()
            progress.update(1)
            progress.set_postfix(loss=f"{total / steps_per_epoch:.3g}")
            total = 0.0
            if after_epoch is not None:
                self._observe(after_epoch, batch.epoch + 1, device)
        progress.close()
        self.eval()
