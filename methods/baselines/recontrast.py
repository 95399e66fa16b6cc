"""ReContrast (Guo et al., NeurIPS 2023) and `recontrast-adv` (PatchGuard appendix E).

https://arxiv.org/abs/2306.02602; official code guojiajeremy/ReContrast.

- Two encoders from the same ImageNet WideResNet-50 (layer1..layer3): one trainable (lr 1e-5,
  BatchNorm in train mode), one frozen. RD4AD's one-class bottleneck fuses each encoder's three
  levels (strided 3×3 convolutions to layer3's grid, concatenation, a stride-2 stage of
  `bottleneck_blocks` = 3 residual bottleneck blocks); a reverse ResNet decoder
  (`decoder_blocks` = 3, 4, 6 up-sampling residual blocks) with two sets of 1×1 output heads
  reconstructs the levels. Both encoders go through the shared bottleneck and decoder as one
  batch; head set a (trainable encoder's input) reconstructs the frozen encoder's features and
  head set b (frozen encoder's input) the trainable encoder's ("reconstructive contrast").
- Loss: global cosine distance between the flattened feature maps (targets detached), with the
  hard-mining gradient modulation of the official `global_cosine_hm` (points whose cosine distance
  is below mean + α·std get no gradient, α warming from −3 to 1 over the first 10%); AdamW
  (lr 2e-3 bottleneck + decoder, 1e-5 encoder, wd 1e-5), 2000 iterations, batch 16, 256 px.
- M(x): Σ over the 6 level pairs of (1 − cosine similarity), bilinearly upsampled to the image,
  (B, H, W) on the pixel grid. Pixel map: M smoothed by a Gaussian of σ = 4 px; S(x): the maximum
  of that smoothed map (official evaluation).

`recontrast-adv`: both encoders start from an adversarially trained ResNet-50 (e.g. RobustBench
`Salman2020Do_R50`), and PGD (`adv_steps` = 100 in the paper profile, ε = 8/255 L∞) on the mean of
the final anomaly map makes adversarial training images; the loss on them is added to the clean
loss. With `backbone_init=scratch` both encoders start random (identical), as the frozen one stays.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.baselines.adversarial_variant import register_adversarial_variant
from robustad.methods.baselines.backbones import BackboneConfig, build_resnet, freeze
from robustad.methods.baselines.common import (
    batches,
    module_device,
    pgd_examples,
    stack_images,
)
from robustad.methods.baselines.smoothing import gaussian_blur
from robustad.methods.config_fields import in_range
from robustad.methods.detector import Detector
from robustad.methods.registry import register_method
from torch import nn
from torchvision.models.resnet import Bottleneck

LEVELS = ("layer1", "layer2", "layer3")


@dataclasses.dataclass
class ReContrastConfig(BackboneConfig):
    image_size: int = in_range(256, low=8)
    backbone: str = "wide_resnet50_2"
    bottleneck_blocks: int = in_range(3, low=1)
    decoder_blocks: tuple[int, ...] = in_range((3, 4, 6), low=1)  # per decoder stage, deepest first
    iterations: int = in_range(2000, low=1)
    batch_size: int = in_range(16, low=1)
    lr: float = in_range(2e-3, low=0, low_open=True)
    encoder_lr: float = in_range(1e-5, low=0)
    weight_decay: float = in_range(1e-5, low=0)
    encoder_bn_train: bool = True
    hard_mining_alpha: float = in_range(1.0, low=0, high=1)  # final α of the gradient modulation
    hard_mining_factor: float = in_range(0.0, low=0, high=1)  # gradient kept on easy points
    smoothing_sigma: float = in_range(4.0, low=0)
    adversarial: bool = False
    adv_eps: float = in_range(8 / 255, low=0)
    adv_steps: int = in_range(100, low=0)


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """A residual bottleneck block whose 3×3 convolution is a 2×2 transposed one when up-sampling."""

    def __init__(self, cin: int, cout: int, width: int, upsample: bool):
        super().__init__()
        middle = nn.ConvTranspose2d(width, width, 2, 2, bias=False) if upsample else nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            middle, nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = None
        if upsample or cin != cout:
            conv = nn.ConvTranspose2d(cin, cout, 2, 2, bias=False) if upsample else nn.Conv2d(cin, cout, 1, bias=False)
            self.skip = nn.Sequential(conv, nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.skip is None else self.skip(x)
        return F.relu(self.body(x) + identity)


class OneClassBottleneck(nn.Module):
    """RD4AD's multi-scale fusion + one-class embedding: three levels in, one (2·c3)-channel map out."""

    def __init__(self, channels: list[int], blocks: int, base_width: int):
        super().__init__()
        c1, c2, c3 = channels
        self.down1 = nn.Sequential(conv_bn_relu(c1, c2, 2), conv_bn_relu(c2, c3, 2))
        self.down2 = conv_bn_relu(c2, c3, 2)
        planes = c3 // 2
        downsample = nn.Sequential(nn.Conv2d(3 * c3, planes * 4, 1, 2, bias=False), nn.BatchNorm2d(planes * 4))
        stage = [Bottleneck(3 * c3, planes, 2, downsample, base_width=base_width)]
        stage += [Bottleneck(planes * 4, planes, base_width=base_width) for _ in range(blocks - 1)]
        self.stage = nn.Sequential(*stage)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        l1, l2, l3 = levels
        return self.stage(torch.cat([self.down1(l1), self.down2(l2), l3], dim=1))


class ReverseDecoder(nn.Module):
    """De-ResNet: three up-sampling stages (to c3, c2, c1 channels) and two sets of 1×1 heads."""

    def __init__(self, channels: list[int], blocks: tuple[int, ...], width_ratio: float):
        super().__init__()
        c1, c2, c3 = channels
        stages, cin = [], 2 * c3
        for cout, count in zip((c3, c2, c1), blocks):
            width = max(1, int(cout * width_ratio))
            layers = [UpBlock(cin, cout, width, upsample=True)] + [UpBlock(cout, cout, width, False) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(c, c, 1) for c in (c1, c2, c3)) for _ in range(2)
        )

    def forward(self, x: torch.Tensor, head_set: int) -> list[torch.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        outs = outs[::-1]  # (level1, level2, level3)
        return [head(o) for head, o in zip(self.heads[head_set], outs)]


def cosine_distance_maps(targets: list[torch.Tensor], recons: list[torch.Tensor]) -> list[torch.Tensor]:
    return [1 - F.cosine_similarity(t, r, dim=1) for t, r in zip(targets, recons)]


def global_cosine_hm(targets, recons, alpha: float, factor: float) -> torch.Tensor:
    """Global cosine loss with hard-mining gradient modulation (targets detached; see module doc)."""
    loss = 0.0
    for target, recon in zip(targets, recons):
        target = target.detach()
        with torch.no_grad():
            point = 1 - F.cosine_similarity(target, recon, dim=1, eps=1e-8).unsqueeze(1)
            spread = point.std() if point.numel() > 1 else torch.zeros(())
            easy = point < point.mean() + alpha * spread
        recon = torch.where(easy, recon.detach() + factor * (recon - recon.detach()), recon)
        loss = loss + (1 - F.cosine_similarity(target.flatten(1), recon.flatten(1), dim=1)).mean()
    return loss


@register_method("recontrast")
class ReContrast(Detector):
    """ReContrast: a trainable/frozen encoder pair reconstructed by one decoder with a cosine loss."""

    name = "recontrast"
    display_name = "ReContrast"
    config_class = ReContrastConfig
    profiles = {
        Profile.PAPER: ReContrastConfig(),
        Profile.QUICK: ReContrastConfig(image_size=64, bottleneck_blocks=1,
                                        decoder_blocks=(1, 1, 1), iterations=150, batch_size=8),
    }

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        self.encoder = build_resnet(self.name, cfg, LEVELS)
        self.frozen_encoder = freeze(copy.deepcopy(self.encoder))
        channels = self.encoder.channels()
        wide = cfg.backbone.startswith("wide")
        self.bottleneck = OneClassBottleneck(channels, cfg.bottleneck_blocks, 128 if wide else 64)
        self.decoder = ReverseDecoder(channels, tuple(cfg.decoder_blocks), 0.5 if wide else 0.25)

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen_encoder.eval()
        if mode and not self.config.encoder_bn_train:
            self.encoder.eval()
        return self

    def encode_decode(self, images: torch.Tensor):
        """(targets, reconstructions): 6 feature maps each, frozen-encoder pairs first."""
        trainable = [self.encoder(images)[name] for name in LEVELS]
        frozen = [self.frozen_encoder(images)[name] for name in LEVELS]
        n = images.shape[0]
        fused = self.bottleneck([torch.cat([a, b]) for a, b in zip(trainable, frozen)])
        recon_of_frozen = self.decoder(fused[:n], head_set=0)
        recon_of_trainable = self.decoder(fused[n:], head_set=1)
        return frozen + trainable, recon_of_frozen + recon_of_trainable

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        targets, recons = self.encode_decode(images)
        size = images.shape[-2:]
        maps = [
            F.interpolate(d.unsqueeze(1), size=size, mode="bilinear", align_corners=True)
            for d in cosine_distance_maps(targets, recons)
        ]
        return torch.cat(maps, dim=1).sum(dim=1)

    def anomaly_map(self, logits: torch.Tensor, size) -> torch.Tensor:
        return gaussian_blur(super().anomaly_map(logits, size), self.config.smoothing_sigma)

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(logits, self.config.smoothing_sigma).flatten(1).amax(dim=1)

    # -- training ------------------------------------------------------------------------------
    def loss(self, images: torch.Tensor, alpha: float) -> torch.Tensor:
        targets, recons = self.encode_decode(images)
        f = self.config.hard_mining_factor
        return global_cosine_hm(targets[:3], recons[:3], alpha, f) / 2 + global_cosine_hm(targets[3:], recons[3:], alpha, f) / 2

    def fit(self, train_set) -> None:
        cfg = self.config
        device = module_device(self)
        gen = derived_generator()  # follows the cell's seed (robustad.core.seeding)
        images = stack_images(train_set)
        decoder_params = list(self.bottleneck.parameters()) + list(self.decoder.parameters())
        opt = torch.optim.AdamW(decoder_params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        encoder_opt = torch.optim.AdamW(self.encoder.parameters(), lr=cfg.encoder_lr, betas=(0.9, 0.999),
                                        weight_decay=cfg.weight_decay)
        self.train()
        step = 0
        warmup = max(1.0, 0.1 * cfg.iterations)
        while step < cfg.iterations:
            for index in batches(len(images), cfg.batch_size, gen):
                alpha = min(-3 + (cfg.hard_mining_alpha + 3) * step / warmup, cfg.hard_mining_alpha)
                batch = images[index].to(device)
                loss = self.loss(batch, alpha)
                if cfg.adversarial:
                    adv = pgd_examples(self, lambda x: self(x).mean(), batch, cfg.adv_eps, cfg.adv_steps)
                    loss = loss + self.loss(adv, alpha)
                opt.zero_grad()
                encoder_opt.zero_grad()
                loss.backward()
                opt.step()
                encoder_opt.step()
                step += 1
                if step >= cfg.iterations:
                    break
        self.eval()


ReContrastAdv = register_adversarial_variant(
    ReContrast, "ReContrast with robust ResNet-50 encoders and PGD on the final anomaly map (PatchGuard app. E).",
    changes=dict(backbone="resnet50", robust_backbone=True, adversarial=True),
    quick=dict(adv_steps=5),
)
