"""GeneralAD (Strater et al., ECCV 2024) and `generalad-adv` (PatchGuard appendix E).

https://arxiv.org/abs/2407.12427; official code LucStrater/GeneralAD (its MVTec AD job file).

- Features: the patch tokens of a frozen DINOv2 ViT (`vit_large_patch14_dinov2`, block 24, 518 px
  → 37×37 patches), passed through the ViT's final LayerNorm.
- Discriminator: learned positional encodings, one self-attention block (4 heads, post-LayerNorm,
  MLP hidden 2048, GELU, dropout 0.1) and a linear head without bias: one logit per patch.
- Training ("random" distortion, MVTec setting): BCE of normal features → 0, of features with
  Gaussian noise (σ = 0.25) on all patches → 1, and of features with noise on a random subset of
  patches (their own BCE terms for the clean and the noised patches); AdamW lr 5e-4, cosine decay
  to 0.2·lr, 160 epochs, batch 16.
- M(x): the patch logits (B, h, w); S(x): the mean of the top-k = 10 logits; pixel map: bilinear
  upsampling and a Gaussian of σ = 16 px (radius 18) at 518 px, scaled with the image size in the
  quick profile.

`generalad-adv`: a robust ImageNet ViT replaces DINOv2 (e.g. RobustBench
`Liu2023Comprehensive_ViT-B`, a `vit_base_patch16_224`), and the discriminator is trained
adversarially in embedding space: PGD (`adv_steps`, an L2 ball per patch feature of radius
`adv_eps_ratio` × the expected noise norm σ·√D) on its loss for both the normal and the distorted
features, trained on clean + adversarial features.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.baselines.adversarial_variant import register_adversarial_variant
from robustad.methods.baselines.backbones import BackboneConfig, ViTFeatures, freeze
from robustad.methods.baselines.common import (
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
class GeneralADConfig(BackboneConfig):
    image_size: int = in_range(518, low=8)
    top_k: int = in_range(10, low=1)
    backbone: str = "vit_large_patch14_dinov2"
    blocks: tuple[int, ...] = in_range((24,), low=1)
    vit_depth: int = in_range(0, low=0)  # 0: the architecture's depth (other values only for small from-scratch models)
    vit_patch_size: int = in_range(0, low=0)  # 0: the architecture's patch size
    hidden_dim: int = in_range(2048, low=1)
    heads: int = in_range(4, low=1)
    dropout: float = in_range(0.1, low=0, high=1, high_open=True)
    noise_std: float = in_range(0.25, low=0)
    lr: float = in_range(5e-4, low=0, low_open=True)
    lr_decay_factor: float = in_range(0.2, low=0)
    weight_decay: float = in_range(1e-5, low=0)
    epochs: int = in_range(160, low=1)
    batch_size: int = in_range(16, low=1)
    smoothing_sigma: float = in_range(16.0, low=0)
    smoothing_radius: int = in_range(18, low=0)
    adversarial: bool = False
    adv_steps: int = in_range(10, low=0)
    adv_eps_ratio: float = in_range(0.5, low=0)


class AttentionBlock(nn.Module):
    """Self-attention + MLP with post-LayerNorm on the attention branch (official `AttentionBlock`)."""

    def __init__(self, dim: int, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop_attention, self.drop_mlp = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(x, x, x, need_weights=False)
        x = self.norm(x + self.drop_attention(attended))
        return x + self.drop_mlp(self.mlp(x))


class PatchDiscriminator(nn.Module):
    """Positional encodings + one attention block + a bias-free linear head: (B, N, D) → (B, N)."""

    def __init__(self, dim: int, hidden: int, patches: int, heads: int, dropout: float):
        super().__init__()
        self.positions = nn.Parameter(torch.randn(patches, dim))
        self.block = AttentionBlock(dim, hidden, heads, dropout)
        self.head = nn.Linear(dim, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(features + self.positions)).squeeze(-1)


@register_method("generalad")
class GeneralAD(Detector):
    """GeneralAD: an attention discriminator on ViT patch features against noise-distorted features."""

    name = "generalad"
    display_name = "GeneralAD"
    config_class = GeneralADConfig
    profiles = {
        Profile.PAPER: GeneralADConfig(),
        Profile.QUICK: GeneralADConfig(image_size=112, backbone="vit_small_patch14_dinov2", blocks=(12,),
                                       hidden_dim=512, epochs=20, smoothing_sigma=3.5, smoothing_radius=4),
    }

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        vit_kwargs = {k: v for k, v in (("depth", cfg.vit_depth), ("patch_size", cfg.vit_patch_size)) if v}
        self.features = freeze(ViTFeatures(self.name, cfg, tuple(cfg.blocks), cfg.image_size, **vit_kwargs))
        grid = self.features.grid
        self.discriminator = PatchDiscriminator(self.features.embed_dim, cfg.hidden_dim, grid * grid, cfg.heads,
                                                cfg.dropout)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.features.grid
        return self.discriminator(self.features(images)).view(images.shape[0], grid, grid)

    def anomaly_map(self, logits: torch.Tensor, size) -> torch.Tensor:
        cfg = self.config
        return gaussian_blur(super().anomaly_map(logits, size), cfg.smoothing_sigma, cfg.smoothing_radius)

    # -- training ------------------------------------------------------------------------------
    def distorted(self, features: torch.Tensor, gen: torch.Generator):
        """(noise on every patch, noise on a random subset, that subset's mask (B, N) bool)."""
        b, n, _ = features.shape
        noise = torch.randn(features.shape, generator=gen).to(features) * self.config.noise_std
        counts = torch.randint(1, n + 1, (b,), generator=gen)
        ranks = torch.rand(b, n, generator=gen).argsort(dim=1).argsort(dim=1)
        subset = (ranks < counts.view(-1, 1)).to(features.device)
        return features + noise, features + noise * subset.unsqueeze(-1), subset

    def losses(self, normal, all_noised, partly_noised, subset) -> torch.Tensor:
        """The official loss: four BCE terms (normal, all noised, the subset's clean and noised patches)."""
        bce = F.binary_cross_entropy_with_logits
        s_normal, s_all = self.discriminator(normal), self.discriminator(all_noised)
        s_part = self.discriminator(partly_noised)
        loss = bce(s_normal, torch.zeros_like(s_normal)) + bce(s_all, torch.ones_like(s_all))
        if (~subset).any():
            loss = loss + bce(s_part[~subset], torch.zeros_like(s_part[~subset]))
        return loss + bce(s_part[subset], torch.ones_like(s_part[subset]))

    def fit(self, train_set) -> None:
        cfg = self.config
        device = module_device(self)
        gen = derived_generator()  # follows the cell's seed (robustad.core.seeding)
        images = stack_images(train_set)
        self.eval()
        with torch.no_grad():
            cached = torch.cat([self.features(images[i:i + cfg.batch_size].to(device))
                                for i in range(0, len(images), cfg.batch_size)])
        opt = torch.optim.AdamW(self.discriminator.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.epochs), cfg.lr * cfg.lr_decay_factor)
        adv_eps = cfg.adv_eps_ratio * cfg.noise_std * math.sqrt(self.features.embed_dim)
        self.train()
        for _ in range(cfg.epochs):
            for index in batches(len(cached), cfg.batch_size, gen):
                normal = cached[index]
                all_noised, partly_noised, subset = self.distorted(normal, gen)
                loss = self.losses(normal, all_noised, partly_noised, subset)
                if cfg.adversarial:
                    parts = torch.stack([normal, all_noised, partly_noised])
                    self.discriminator.eval()  # no dropout while the adversarial features are made
                    adv = feature_pgd(lambda f: self.losses(f[0], f[1], f[2], subset), parts, adv_eps, cfg.adv_steps)
                    self.discriminator.train()
                    loss = loss + self.losses(adv[0], adv[1], adv[2], subset)
                opt.zero_grad()
                loss.backward()
                opt.step()
            schedule.step()
        self.eval()


GeneralADAdv = register_adversarial_variant(
    GeneralAD, "GeneralAD on a robust ImageNet ViT with embedding-space adversarial training (PatchGuard app. E).",
    changes=dict(backbone="vit_base_patch16_224", robust_backbone=True, adversarial=True),
    paper=dict(image_size=224, blocks=(12,), smoothing_sigma=7.0, smoothing_radius=8),
    quick=dict(adv_steps=5),
)
