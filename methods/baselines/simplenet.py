"""SimpleNet (Liu et al., CVPR 2023) and `simplenet-adv` (PatchGuard appendix E).

https://arxiv.org/abs/2303.15140; official code DonaldRR/SimpleNet.

- Features: PatchCore's locally aggregated layer2 + layer3 features of a frozen ImageNet
  WideResNet-50 (`pretrain_dim` = `target_dim` = 1536), at 288 px in the paper profile.
- Feature adaptor: one linear layer (D → D). Discriminator: Linear(D, 1024) → BatchNorm →
  LeakyReLU(0.2) → Linear(1024, 1, no bias).
- Training: anomalous features = adapted normal features + N(0, σ² = 0.015²) (σ is absolute, so
  it only fits WideResNet-50's feature scale: with another backbone set `noise_relative`, e.g.
  0.2 × the features' standard deviation; EfficientNet-Lite0 features on textures/brick have
  std 4.7, where σ = 0.015 left the pixel AUROC at chance); truncated L1 loss
  max(0, 0.5 − D(normal)) + max(0, 0.5 + D(anomalous)); Adam, adaptor lr 1e-4, discriminator lr
  2e-4 (weight decay 1e-5), 160 epochs (40 meta-epochs × 4), batch 8.
- M(x) = −D(adaptor(features)) on layer2's grid (B, h, w); S(x) = its maximum; pixel map: bilinear
  upsampling and a Gaussian of σ = 4 px.

`simplenet-adv`: an adversarially robust WideResNet-50 extractor (e.g. RobustBench
`Salman2020Do_50_2`) and embedding-space adversarial training of the discriminator: each batch's
normal and noise-anomaly features are also perturbed by PGD (`adv_steps`, an L2 ball per feature
vector of radius `adv_eps_ratio` × the expected Gaussian-noise norm σ·√D) to maximize the
discriminator loss, and the discriminator trains on clean + adversarial features (PatchGuard found
input-space adversarial training ineffective for it).
"""
from __future__ import annotations

import dataclasses
import math

import torch
from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.baselines.adversarial_variant import register_adversarial_variant
from robustad.methods.baselines.backbones import BackboneConfig, build_cnn, freeze
from robustad.methods.baselines.common import (
    LocalPatchFeatures,
    batches,
    feature_pgd,
    module_device,
    stack_images,
)
from robustad.methods.baselines.smoothing import gaussian_blur
from robustad.methods.config_fields import in_range
from robustad.methods.detector import Detector
from robustad.methods.registry import register_method
from torch import nn


@dataclasses.dataclass
class SimpleNetConfig(BackboneConfig):
    image_size: int = in_range(288, low=8)
    backbone: str = "wide_resnet50_2"
    layers: tuple[str, ...] = ("layer2", "layer3")
    pretrain_dim: int = in_range(1536, low=1)
    target_dim: int = in_range(1536, low=1)
    hidden_dim: int = in_range(1024, low=1)
    noise_std: float = in_range(0.015, low=0)
    noise_relative: float = in_range(0.0, low=0)  # > 0: σ = noise_relative × std of the training features (other backbones)
    margin: float = in_range(0.5, low=0)
    adaptor_lr: float = in_range(1e-4, low=0, low_open=True)
    discriminator_lr: float = in_range(2e-4, low=0, low_open=True)
    weight_decay: float = in_range(1e-5, low=0)
    epochs: int = in_range(160, low=1)
    batch_size: int = in_range(8, low=1)
    smoothing_sigma: float = in_range(4.0, low=0)
    adversarial: bool = False  # embedding-space adversarial training of the discriminator
    adv_steps: int = in_range(10, low=0)
    adv_eps_ratio: float = in_range(0.5, low=0)


def xavier(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
    return module


def mlp_discriminator(dim: int, hidden: int) -> nn.Sequential:
    """SimpleNet's / GLASS's two-layer discriminator, one logit per feature vector."""
    return xavier(nn.Sequential(
        nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1, bias=False)
    ))


class AdaptedFeatureDiscriminator(Detector):
    """SimpleNet's structure, shared with GLASS: frozen local features → linear adaptor → patch MLP.

    Subclasses set `name`, `config_class`, `profiles` and define `forward` (the sign of the
    discriminator's output) and `fit`. S(x) is the maximum of M(x).
    """

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        extractor = freeze(build_cnn(self.name, cfg, tuple(cfg.layers)))
        self.features = LocalPatchFeatures(extractor, cfg.pretrain_dim, cfg.target_dim)
        self.adaptor = xavier(nn.Linear(cfg.target_dim, cfg.target_dim))
        self.discriminator = mlp_discriminator(cfg.target_dim, cfg.hidden_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.extractor.eval()
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Adapted patch features (B, h, w, D)."""
        return self.adaptor(self.features(images))

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.flatten(1).amax(dim=1)


@register_method("simplenet")
class SimpleNet(AdaptedFeatureDiscriminator):
    """SimpleNet: feature adaptor + discriminator trained against Gaussian-noise feature anomalies."""

    name = "simplenet"
    display_name = "SimpleNet"
    config_class = SimpleNetConfig
    profiles = {
        Profile.PAPER: SimpleNetConfig(),
        Profile.QUICK: SimpleNetConfig(image_size=96, pretrain_dim=512, target_dim=512, hidden_dim=256, epochs=8),
    }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """M(x) = −D(adaptor(features)) per patch (the discriminator scores normal features high)."""
        feats = self.embed(images)
        return -self.discriminator(feats.flatten(0, 2)).view(feats.shape[:3])

    def anomaly_map(self, logits: torch.Tensor, size) -> torch.Tensor:
        return gaussian_blur(super().anomaly_map(logits, size), self.config.smoothing_sigma)

    # -- training ------------------------------------------------------------------------------
    def discriminator_loss(self, normal: torch.Tensor, anomalous: torch.Tensor) -> torch.Tensor:
        """The truncated L1 loss (normal scores above +margin, anomalous below −margin)."""
        m = self.config.margin
        scores = self.discriminator(torch.cat([normal, anomalous]))[:, 0]
        n = normal.shape[0]
        return (m - scores[:n]).clamp_min(0).mean() + (m + scores[n:]).clamp_min(0).mean()

    def fit(self, train_set) -> None:
        cfg = self.config
        device = module_device(self)
        gen = derived_generator()  # follows the cell's seed (robustad.core.seeding)
        images = stack_images(train_set)
        self.eval()
        with torch.no_grad():
            cached = torch.cat([
                self.features(images[i:i + cfg.batch_size].to(device))
                for i in range(0, len(images), cfg.batch_size)
            ])  # (N, h, w, D), the frozen backbone's features
        adaptor_opt = torch.optim.AdamW(self.adaptor.parameters(), lr=cfg.adaptor_lr)
        disc_opt = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.discriminator_lr,
                                    weight_decay=cfg.weight_decay)
        sigma = self.noise_sigma(cached)
        adv_eps = cfg.adv_eps_ratio * sigma * math.sqrt(cfg.target_dim)
        self.train()
        for _ in range(cfg.epochs):
            for index in batches(len(cached), cfg.batch_size, gen):
                normal = self.adaptor(cached[index].reshape(-1, cfg.target_dim))
                noise = torch.randn(normal.shape, generator=gen).to(normal) * sigma
                anomalous = normal + noise
                loss = self.discriminator_loss(normal, anomalous)
                if cfg.adversarial:
                    loss = loss + self.adversarial_loss(normal.detach(), anomalous.detach(), adv_eps)
                adaptor_opt.zero_grad()
                disc_opt.zero_grad()
                loss.backward()
                adaptor_opt.step()
                disc_opt.step()
        self.eval()

    def noise_sigma(self, features: torch.Tensor) -> float:
        """σ of the Gaussian feature anomalies: `noise_std` (the paper's 0.015, calibrated on ImageNet
        WideResNet-50 features), or `noise_relative` × the training features' standard deviation."""
        if self.config.noise_relative > 0:
            return self.config.noise_relative * float(features.std())
        return self.config.noise_std

    def adversarial_loss(self, normal: torch.Tensor, anomalous: torch.Tensor, eps: float) -> torch.Tensor:
        """Discriminator loss on PGD-perturbed normal and anomalous features (embedding space)."""
        n = normal.shape[0]
        both = torch.cat([normal, anomalous])
        self.discriminator.eval()  # BatchNorm statistics stay those of clean features during PGD
        adv = feature_pgd(lambda f: self.discriminator_loss(f[:n], f[n:]), both, eps, self.config.adv_steps)
        self.discriminator.train()
        return self.discriminator_loss(adv[:n], adv[n:])


SimpleNetAdv = register_adversarial_variant(
    SimpleNet, "SimpleNet with a robust WideResNet-50 and embedding-space adversarial training (PatchGuard app. E).",
    changes=dict(robust_backbone=True, adversarial=True),
    quick=dict(adv_steps=5),
)
