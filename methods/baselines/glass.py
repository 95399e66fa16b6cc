"""GLASS (Chen et al., ECCV 2024) and `glass-adv` (PatchGuard appendix E).

https://arxiv.org/abs/2407.09359; official code cqylunlun/GLASS.

SimpleNet's structure (frozen ImageNet WideResNet-50 layer2 + layer3 local features, D = 1536,
a linear feature adaptor, a two-layer discriminator whose sigmoid is the anomaly probability)
trained with two anomaly syntheses:

- Global (GAS): normal features + N(0, 0.015²), then `gas_steps` = 20 steps of normalized
  gradient ascent (step 0.001) on the discriminator's loss for them, projected every 5 steps onto
  the ring 0.5 ≤ ‖g − f‖ ≤ 1 around their normal feature f (the "manifold" mode; the official
  "hypersphere" mode, chosen per class from a spreadsheet, is not included). Loss L_n + L_gas: BCE
  (normal → 0, GAS → 1).
- Local (LAS): Perlin-noise texture anomalies in image space (`synthesis.py`, texture source
  recorded in the config), labels on the feature grid; focal loss (γ = 2) on the hardest half
  (`hard_fraction` = 0.5) of their patches: L_las.

Adam (adaptor, lr 1e-4, wd 1e-5) and AdamW (discriminator, lr 2e-4); 640 epochs; batch 8; 288 px.
M(x): the discriminator's logit per patch on layer2's grid (B, h, w); S(x): its maximum (the same
ranking as the official maximum probability); pixel map: sigmoid(M) upsampled bilinearly and
smoothed with a Gaussian of σ = 4 px.

`glass-adv`: an adversarially trained extractor (robust WideResNet-50, e.g. RobustBench
`Salman2020Do_50_2`) and PGD examples (`adv_steps` = 100 in the paper profile, ε = 8/255 L∞)
that maximize L_n on the normal images and L_las on the LAS images; their losses are added to the
clean ones.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.baselines.adversarial_variant import register_adversarial_variant
from robustad.methods.baselines.backbones import BackboneConfig
from robustad.methods.baselines.common import (
    batches,
    module_device,
    pgd_examples,
    stack_images,
)
from robustad.methods.baselines.simplenet import AdaptedFeatureDiscriminator
from robustad.methods.baselines.smoothing import gaussian_blur
from robustad.methods.baselines.synthesis import TextureSource, perlin_anomalies
from robustad.methods.config_fields import in_range, one_of
from robustad.methods.registry import register_method


@dataclasses.dataclass
class GlassConfig(BackboneConfig):
    image_size: int = in_range(288, low=8)
    backbone: str = "wide_resnet50_2"
    layers: tuple[str, ...] = ("layer2", "layer3")
    pretrain_dim: int = in_range(1536, low=1)
    target_dim: int = in_range(1536, low=1)
    hidden_dim: int = in_range(1024, low=1)
    noise_std: float = in_range(0.015, low=0)
    gas_steps: int = in_range(20, low=0)
    gas_step_size: float = in_range(0.001, low=0)
    gas_radius: float = in_range(0.5, low=0)  # the ring [r, 2r] around the normal feature
    hard_fraction: float = in_range(0.5, low=0, high=1)  # focal loss on the patches at or above this quantile of error
    adaptor_lr: float = in_range(1e-4, low=0, low_open=True)
    discriminator_lr: float = in_range(2e-4, low=0, low_open=True)
    weight_decay: float = in_range(1e-5, low=0)
    epochs: int = in_range(640, low=1)
    batch_size: int = in_range(8, low=1)
    texture_source: str = one_of("dtd", ("dtd", "train", "procedural"))  # dtd | train | procedural
    dtd_root: str = ""
    smoothing_sigma: float = in_range(4.0, low=0)
    adversarial: bool = False
    adv_eps: float = in_range(8 / 255, low=0)
    adv_steps: int = in_range(100, low=0)


def binary_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss of binary logits (N,) against targets (N,) in {0, 1}."""
    log_pt = -F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (-(1 - log_pt.exp()) ** gamma * log_pt).mean()


@register_method("glass")
class Glass(AdaptedFeatureDiscriminator):
    """GLASS: SimpleNet's discriminator trained on global (gradient-ascent) and local (Perlin) anomalies."""

    name = "glass"
    display_name = "GLASS"
    config_class = GlassConfig
    profiles = {
        Profile.PAPER: GlassConfig(),
        Profile.QUICK: GlassConfig(image_size=96, pretrain_dim=512, target_dim=512, hidden_dim=256, epochs=8,
                                   gas_steps=5, texture_source="train"),
    }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """M(x) = D(adaptor(features)) per patch: the logit of the anomaly probability."""
        feats = self.embed(images)
        return self.discriminator(feats.flatten(0, 2)).view(feats.shape[:3])

    def anomaly_map(self, logits: torch.Tensor, size) -> torch.Tensor:
        return gaussian_blur(super().anomaly_map(torch.sigmoid(logits), size), self.config.smoothing_sigma)

    # -- losses ----------------------------------------------------------------------------------
    def normal_loss(self, normal_images: torch.Tensor) -> torch.Tensor:
        """L_n: BCE of the discriminator on normal patches against label 0."""
        logits = self.discriminator(self.embed(normal_images).flatten(0, 2))[:, 0]
        return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))

    def las_loss(self, las_images: torch.Tensor, patch_labels: torch.Tensor) -> torch.Tensor:
        """L_las: focal loss on the hardest `hard_fraction` of the LAS patches."""
        logits = self.discriminator(self.embed(las_images).flatten(0, 2))[:, 0]
        labels = patch_labels.flatten()
        if self.config.hard_fraction > 0:
            error = (torch.sigmoid(logits) - labels) ** 2
            hard = error >= torch.quantile(error.detach(), self.config.hard_fraction)
            logits, labels = logits[hard], labels[hard]
        return binary_focal_loss(logits, labels)

    def gas_features(self, normal: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Global anomaly synthesis: noised normal features pushed by gradient ascent, kept in a ring."""
        cfg = self.config
        anchor = normal.detach()
        gas = anchor + torch.randn(anchor.shape, generator=gen).to(anchor) * cfg.noise_std
        for step in range(cfg.gas_steps):
            gas.requires_grad_(True)
            logits = self.discriminator(gas)[:, 0]
            loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            (grad,) = torch.autograd.grad(loss, gas)
            gas = gas.detach() + cfg.gas_step_size * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-10)
            if (step + 1) % 5 == 0:
                offset = gas - anchor
                length = offset.norm(dim=1, keepdim=True)
                gas = anchor + offset * length.clamp(cfg.gas_radius, 2 * cfg.gas_radius) / length.clamp_min(1e-10)
        return gas.detach()

    def fit(self, train_set) -> None:
        cfg = self.config
        device = module_device(self)
        gen = derived_generator()  # follows the cell's seed (robustad.core.seeding)
        images = stack_images(train_set)
        textures = TextureSource(cfg.texture_source, cfg.image_size, images, cfg.dtd_root, self.name)
        adaptor_opt = torch.optim.Adam(self.adaptor.parameters(), lr=cfg.adaptor_lr, weight_decay=cfg.weight_decay)
        disc_opt = torch.optim.AdamW(self.discriminator.parameters(), lr=cfg.discriminator_lr)
        self.train()
        for _ in range(cfg.epochs):
            for index in batches(len(images), cfg.batch_size, gen):
                clean = images[index]
                las, masks = perlin_anomalies(clean, textures, gen, anomaly_probability=1.0)
                clean, las, masks = clean.to(device), las.to(device), masks.to(device)
                normal = self.embed(clean)
                labels = (F.adaptive_avg_pool2d(masks, normal.shape[1:3])[:, 0] > 0.5).float()
                normal = normal.flatten(0, 2)
                gas = normal + (self.gas_features(normal, gen) - normal.detach())
                logits = self.discriminator(torch.cat([normal, gas]))[:, 0]
                targets = torch.cat([torch.zeros(len(normal)), torch.ones(len(gas))]).to(logits)
                loss = F.binary_cross_entropy_with_logits(logits, targets) + self.las_loss(las, labels)
                if cfg.adversarial:
                    adv_clean = pgd_examples(self, self.normal_loss, clean, cfg.adv_eps, cfg.adv_steps)
                    adv_las = pgd_examples(self, lambda x: self.las_loss(x, labels), las, cfg.adv_eps, cfg.adv_steps)
                    loss = loss + self.normal_loss(adv_clean) + self.las_loss(adv_las, labels)
                adaptor_opt.zero_grad()
                disc_opt.zero_grad()
                loss.backward()
                adaptor_opt.step()
                disc_opt.step()
        self.eval()


GlassAdv = register_adversarial_variant(
    Glass, "GLASS with a robust extractor and PGD on L_n and L_las (PatchGuard appendix E).",
    changes=dict(robust_backbone=True, adversarial=True),
    quick=dict(adv_steps=5),
)
