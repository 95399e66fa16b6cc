"""DRAEM (Zavrtanik et al., ICCV 2021) and `draem-adv` (PatchGuard appendix E).

https://arxiv.org/abs/2108.07610; official code VitjanZ/DRAEM.

- Reconstructive sub-network: a 5-level convolutional encoder-decoder without skips (base width
  128). Discriminative sub-network: a 6-level U-Net (base width 64) on the concatenation of the
  reconstruction and the input, two output channels. Both see images in [0, 1] unnormalized.
- Training: Perlin-noise anomalies with a texture source (`synthesis.py`; DTD in the paper,
  `texture_source` records which one), loss = L2 + SSIM (reconstruction of the anomaly-free image)
  + focal loss (γ = 2) of the segmentation; Adam lr 1e-4, ×0.2 at 80% and 90% of 700 epochs,
  batch 8, 256 px. The quick profile trains 40 epochs at lr 1e-3: at lr 1e-4 so short a run does
  not learn (measured on the synthetic test tree: pixel AUROC 47 at 1e-4, 98 at 1e-3).
- M(x) = l₁ − l₀, the logit difference of the two output channels, on the pixel grid (B, H, W);
  its sigmoid is DRAEM's softmax anomaly probability. Pixel map: that probability.
  S(x): the maximum of the probability map averaged over 21×21 windows (official code).

`draem-adv`: PGD (`adv_steps` = 100 in the paper profile, ε = 8/255 L∞) on the focal loss of the
anomaly map makes adversarial versions of the augmented training images; both sub-networks train
on clean + adversarial images (their losses summed, as PatchGuard's own training does).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.baselines.adversarial_variant import register_adversarial_variant
from robustad.methods.baselines.common import (
    batches,
    module_device,
    pgd_examples,
    stack_images,
)
from robustad.methods.baselines.synthesis import TextureSource, perlin_anomalies
from robustad.methods.config_fields import in_range, one_of
from robustad.methods.detector import Detector, DetectorConfig
from robustad.methods.registry import register_method
from torch import nn


@dataclasses.dataclass
class DraemConfig(DetectorConfig):
    image_size: int = in_range(256, low=8)
    recon_width: int = in_range(128, low=1)
    disc_width: int = in_range(64, low=1)
    epochs: int = in_range(700, low=1)
    batch_size: int = in_range(8, low=1)
    lr: float = in_range(1e-4, low=0, low_open=True)
    texture_source: str = one_of("dtd", ("dtd", "train", "procedural"))  # dtd | train | procedural
    dtd_root: str = ""
    score_window: int = in_range(21, low=1)
    adversarial: bool = False
    adv_eps: float = in_range(8 / 255, low=0)
    adv_steps: int = in_range(100, low=0)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


def up_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class ReconstructiveNetwork(nn.Module):
    """Encoder (w, 2w, 4w, 8w, 8w; four 2× poolings) and decoder back to 3 channels, no skips."""

    def __init__(self, width: int):
        super().__init__()
        w = width
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w]
        self.encoder = nn.ModuleList(conv_block(cin, cout) for cin, cout in zip([3] + widths[:-1], widths))
        self.decoder = nn.Sequential(
            up_block(8 * w, 8 * w), conv_block(8 * w, 4 * w),
            up_block(4 * w, 4 * w), conv_block(4 * w, 2 * w),
            up_block(2 * w, 2 * w), conv_block(2 * w, w),
            up_block(w, w), conv_block(w, w),
            nn.Conv2d(w, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.encoder):
            x = block(F.max_pool2d(x, 2) if i else x)
        return self.decoder(x)


class DiscriminativeNetwork(nn.Module):
    """U-Net (w, 2w, 4w, 8w, 8w, 8w; five 2× poolings) from 6 input channels to 2 logit channels."""

    def __init__(self, width: int):
        super().__init__()
        w = width
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w]
        self.encoder = nn.ModuleList(conv_block(cin, cout) for cin, cout in zip([6] + widths[:-1], widths))
        # (up: in → out channels, then the block on [up, skip])
        plan = [(8 * w, 8 * w, 8 * w), (8 * w, 4 * w, 8 * w), (4 * w, 2 * w, 4 * w), (2 * w, w, 2 * w), (w, w, w)]
        self.ups = nn.ModuleList(up_block(cin, cout) for cin, cout, _ in plan)
        self.merges = nn.ModuleList(conv_block(cout + skip, cout) for _, cout, skip in plan)
        self.head = nn.Conv2d(w, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        for up, merge, skip in zip(self.ups, self.merges, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def focal_loss(logits: torch.Tensor, masks: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss of 2-channel logits (B, 2, H, W) against binary masks (B, 1, H, W)."""
    log_p = F.log_softmax(logits, dim=1)
    target = masks.long()
    log_pt = log_p.gather(1, target)
    return (-(1 - log_pt.exp()) ** gamma * log_pt).mean()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two image batches in [0, 1] with a Gaussian window (Wang et al., 2004)."""
    offsets = torch.arange(window, dtype=a.dtype, device=a.device) - window // 2
    g = torch.exp(-0.5 * (offsets / sigma) ** 2)
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(a.shape[1], 1, window, window).contiguous()

    def blur(x):
        return F.conv2d(x, kernel, padding=window // 2, groups=a.shape[1])

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return value.mean()


@register_method("draem")
class Draem(Detector):
    """DRAEM: reconstructive + discriminative sub-networks trained on Perlin-noise anomalies."""

    name = "draem"
    display_name = "DRAEM"
    config_class = DraemConfig
    profiles = {
        Profile.PAPER: DraemConfig(),
        Profile.QUICK: DraemConfig(image_size=64, recon_width=16, disc_width=16, epochs=40, lr=1e-3,
                                   texture_source="train"),
    }

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        if self.config.image_size % 32:
            raise ValueError(f"method {self.name!r}: image_size must be a multiple of 32, got {self.config.image_size}")
        self.reconstruction = ReconstructiveNetwork(self.config.recon_width)
        self.segmentation = DiscriminativeNetwork(self.config.disc_width)

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """The discriminative sub-network's 2-channel logits (B, 2, H, W)."""
        return self.segmentation(torch.cat([self.reconstruction(images), images], dim=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.segment(images)
        return logits[:, 1] - logits[:, 0]

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        k = int(self.config.score_window)
        pooled = F.avg_pool2d(torch.sigmoid(logits).unsqueeze(1), k, stride=1, padding=k // 2)
        return pooled.flatten(1).amax(dim=1)

    def anomaly_map(self, logits: torch.Tensor, size) -> torch.Tensor:
        return super().anomaly_map(torch.sigmoid(logits), size)

    # -- training ------------------------------------------------------------------------------
    def losses(self, inputs: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        recon = self.reconstruction(inputs)
        seg = self.segmentation(torch.cat([recon, inputs], dim=1))
        return F.mse_loss(recon, targets) + (1 - ssim(recon, targets)) + focal_loss(seg, masks)

    def fit(self, train_set) -> None:
        cfg = self.config
        device = module_device(self)
        gen = derived_generator()  # follows the cell's seed (robustad.core.seeding)
        images = stack_images(train_set)
        textures = TextureSource(cfg.texture_source, cfg.image_size, images, cfg.dtd_root, self.name)
        opt = torch.optim.Adam(self.parameters(), lr=cfg.lr)
        milestones = [int(cfg.epochs * 0.8), int(cfg.epochs * 0.9)]
        schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.2)
        self.train()
        for _ in range(cfg.epochs):
            for index in batches(len(images), cfg.batch_size, gen):
                clean = images[index]
                inputs, masks = perlin_anomalies(clean, textures, gen)
                clean, inputs, masks = clean.to(device), inputs.to(device), masks.to(device)
                loss = self.losses(inputs, clean, masks)
                if cfg.adversarial:
                    adv = pgd_examples(self, lambda x: focal_loss(self.segment(x), masks), inputs,
                                       cfg.adv_eps, cfg.adv_steps)
                    loss = loss + self.losses(adv, clean, masks)
                opt.zero_grad()
                loss.backward()
                opt.step()
            schedule.step()
        self.eval()


DraemAdv = register_adversarial_variant(
    Draem, "DRAEM adversarially trained with PGD on the focal loss of its map (PatchGuard appendix E).",
    changes=dict(adversarial=True),
    quick=dict(adv_steps=5),
)
