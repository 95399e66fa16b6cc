"""PrincipaLS (Lo, Oza, Patel, "Adversarially Robust One-class Novelty Detection", TPAMI 2022).

https://arxiv.org/abs/2108.11168. The published repository (shaoyuanlo/PrincipaLS) holds no code:
this is implemented from the paper; every value it does not give is chosen here and listed on
`docs/methods/principals.md`.

- A convolutional autoencoder (`depth` stride-2 4×4 convolutions, widths w·2^i, BatchNorm and
  LeakyReLU 0.2 in the encoder; the mirror with transposed convolutions, BatchNorm and ReLU in the
  decoder; a sigmoid output), images in [0, 1] as they are.
- Its latent passes through the PrincipaLS module (`principal_latent_space.py`): Vector-PCA over
  the channel vectors, then Spatial-PCA over the principal latent maps, components learned
  incrementally in training and fixed in evaluation.
- PGD adversarial training (Madry et al.): for every batch of normal images, L∞ PGD (random start,
  α = 2.5ε/steps) maximizes their reconstruction error; the autoencoder is trained to reconstruct
  those adversarial images (the min-max of the score itself). `adv_train=false` trains on the clean
  images.
- S(x) = the reconstruction error, the mean squared difference between x and its reconstruction.
  M(x) = S(x) as one cell per image (a detection-only method). The paper's per-pixel
  reconstruction-error map is not offered: `localizes` is a class-level declaration of the
  Detector contract, so a map could not be switched on per run without a second registered method.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.baselines.common import batches, module_device, stack_images
from robustad.methods.config_fields import in_range
from robustad.methods.detector import DetectorConfig
from robustad.methods.registry import register_method
from robustad.methods.robust_detection.detection_only import ImageScoreDetector
from robustad.methods.robust_detection.principal_latent_space import PrincipalLatentSpace
from robustad.methods.robust_detection.training_attack import pgd_training_examples


@dataclasses.dataclass
class PrincipaLSConfig(DetectorConfig):
    image_size: int = in_range(224, low=8)
    width: int = in_range(64, low=1)  # channels of the first encoder stage
    depth: int = in_range(4, low=1)  # stride-2 stages; the latent is (w·2^(depth-1), size/2^depth, size/2^depth)
    vector_components: int = in_range(1, low=1)  # Vector-PCA components kept
    spatial_components: int = in_range(32, low=1)  # Spatial-PCA components kept
    pca_momentum: float = in_range(0.1, low=0, high=1, low_open=True)  # running statistics' EMA rate
    epochs: int = in_range(100, low=1)
    batch_size: int = in_range(32, low=1)
    lr: float = in_range(1e-3, low=0, low_open=True)  # Adam
    adv_train: bool = True
    adv_eps: float = in_range(8 / 255, low=0)
    adv_steps: int = in_range(10, low=0)


class ConvAutoencoder(nn.Module):
    """Encoder to (w·2^(depth−1), s/2^depth, s/2^depth), the PrincipaLS module, decoder back to (3, s, s)."""

    def __init__(self, image_size: int, width: int, depth: int, vector_components: int, spatial_components: int,
                 momentum: float):
        super().__init__()
        widths = [width * 2**i for i in range(depth)]
        encoder, cin = [], 3
        for cout in widths:
            encoder += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
            cin = cout
        self.encoder = nn.Sequential(*encoder)
        side = image_size // 2**depth
        self.principal = PrincipalLatentSpace(widths[-1], side, side, vector_components, spatial_components, momentum)
        decoder = []
        for cout in reversed(widths[:-1]):
            decoder += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        decoder += [nn.ConvTranspose2d(cin, 3, 4, stride=2, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.principal(self.encoder(images)))


@register_method("principals")
class PrincipaLS(ImageScoreDetector):
    """PrincipaLS: an adversarially trained autoencoder with cascade PCA in its latent; S(x) = reconstruction error."""

    name = "principals"
    display_name = "PrincipaLS"
    config_class = PrincipaLSConfig
    profiles = {
        Profile.PAPER: PrincipaLSConfig(),
        Profile.QUICK: PrincipaLSConfig(image_size=64, width=16, depth=3, spatial_components=16, epochs=30,
                                        batch_size=16, adv_steps=5),
    }

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        side = cfg.image_size // 2**cfg.depth
        if side < 1 or cfg.image_size % 2**cfg.depth:
            raise ValueError(f"method {self.name!r}: --config image_size={cfg.image_size} must be a multiple of "
                             f"2^depth = {2**cfg.depth} (depth={cfg.depth})")
        channels = cfg.width * 2 ** (cfg.depth - 1)
        for option, value, limit in (("vector_components", cfg.vector_components, channels),
                                     ("spatial_components", cfg.spatial_components, side * side)):
            if value > limit:
                raise ValueError(f"method {self.name!r}: --config {option}={value} exceeds the latent's {limit} "
                                 f"dimensions (width={cfg.width}, depth={cfg.depth}, image_size={cfg.image_size})")
        self.autoencoder = ConvAutoencoder(cfg.image_size, cfg.width, cfg.depth, cfg.vector_components,
                                           cfg.spatial_components, cfg.pca_momentum)

    def reconstruction_errors(self, images: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error per image (B,)."""
        return (self.autoencoder(images) - images).pow(2).flatten(1).mean(dim=1)

    def image_scores(self, images: torch.Tensor) -> torch.Tensor:
        if int(self.autoencoder.principal.vector.updates) == 0:
            raise RuntimeError(f"{self.name}: call fit() (or load a checkpoint) before scoring")
        return self.reconstruction_errors(images)

    def fit(self, train_set) -> None:
        cfg = self.config
        device = module_device(self)
        gen = derived_generator()  # follows the cell's seed (robustad.core.seeding)
        images = stack_images(train_set)
        opt = torch.optim.Adam(self.autoencoder.parameters(), lr=cfg.lr)
        self.train()
        for epoch in range(cfg.epochs):
            for index in batches(len(images), cfg.batch_size, gen):
                inputs = images[index].to(device)
                if cfg.adv_train and int(self.autoencoder.principal.vector.updates) > 0:
                    inputs = pgd_training_examples(self, lambda x: self.reconstruction_errors(x).sum(), inputs,
                                                   cfg.adv_eps, cfg.adv_steps, gen)
                loss = self.reconstruction_errors(inputs).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.eval()
