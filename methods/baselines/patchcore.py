"""PatchCore (Roth et al., CVPR 2022) and its adversarial adaptation `patchcore-adv` (PatchGuard app. E).

https://arxiv.org/abs/2106.08265; official code amazon-science/patchcore-inspection.

- Features: locally aggregated layer2 + layer3 patch features of an ImageNet WideResNet-50
  (`LocalPatchFeatures`, 3×3 neighbourhoods, `pretrain_dim` = `target_dim` = 1024 in the paper
  profile), on layer2's grid (stride 8: 28×28 at 224 px).
- Memory bank: an approximate greedy coreset (`coreset_ratio` = 0.1 of all training patches,
  farthest-point selection on a 128-d random projection).
- M(x): each patch's L2 distance to its nearest memory patch, (B, h, w).
- S(x): the maximum patch distance s* reweighted as the paper's eq. 7:
  s = (1 − exp‖m_test − m*‖ / Σ_{m ∈ N_b(m*)} exp‖m_test − m‖) · s*, with N_b(m*) the b = 9 nearest
  memory patches of the matched m* (itself included, as anomalib does). The reweighting needs the
  test patch's features, so `forward` attaches the weights to the M it returns; `score` uses
  them when given that very tensor (the usual `score(forward(x))` path, including attacks) and
  falls back to the official code's plain maximum otherwise (or with `reweight=False`).
- Pixel map: M bilinearly upsampled, then a Gaussian of σ = 4 px (official code).

`patchcore-adv` replaces the extractor with an adversarially trained ResNet-50 (e.g. RobustBench's
`Salman2020Do_R50`, --config backbone_weights=robustbench:Salman2020Do_R50 or a local file);
PatchGuard found adding adversarial normal samples to the memory bank did not help, so training
is otherwise unchanged. With `backbone_init=scratch` the extractor stays random (PatchCore never
trains its backbone), which is only a smoke-test setting.
"""
from __future__ import annotations

import dataclasses
import weakref

import torch
from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.baselines.adversarial_variant import register_adversarial_variant
from robustad.methods.baselines.backbones import BackboneConfig, build_cnn, freeze
from robustad.methods.baselines.common import (
    LocalPatchFeatures,
    module_device,
    resize_buffers,
    stack_images,
)
from robustad.methods.baselines.smoothing import gaussian_blur
from robustad.methods.config_fields import in_range
from robustad.methods.detector import Detector
from robustad.methods.registry import register_method


@dataclasses.dataclass
class PatchCoreConfig(BackboneConfig):
    image_size: int = in_range(224, low=8)
    backbone: str = "wide_resnet50_2"
    layers: tuple[str, ...] = ("layer2", "layer3")
    pretrain_dim: int = in_range(1024, low=1)
    target_dim: int = in_range(1024, low=1)
    coreset_ratio: float = in_range(0.1, low=0, high=1, low_open=True)
    coreset_projection_dim: int = in_range(128, low=1)
    reweight: bool = True
    reweight_neighbours: int = in_range(9, low=1)  # b of eq. 7
    smoothing_sigma: float = in_range(4.0, low=0)
    batch_size: int = in_range(16, low=1)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (N, M), differentiable also where a row of `a` equals a row of `b`."""
    squared = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2 * a @ b.T
    return squared.clamp_min(1e-12).sqrt()


@torch.no_grad()
def greedy_coreset(features: torch.Tensor, ratio: float, projection_dim: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of an approximate greedy (farthest-point) coreset of `ratio`·N rows of `features` (N, D)."""
    n = features.shape[0]
    count = max(1, min(n, int(round(n * ratio))))
    if count >= n:
        return torch.arange(n, device=features.device)
    if projection_dim and projection_dim < features.shape[1]:
        projection = torch.randn(features.shape[1], projection_dim, generator=generator).to(features)
        reduced = features @ projection / projection_dim**0.5
    else:
        reduced = features
    start = int(torch.randint(0, n, (1,), generator=generator))
    chosen = [start]
    nearest = (reduced - reduced[start]).pow(2).sum(1)
    for _ in range(count - 1):
        index = int(nearest.argmax())
        chosen.append(index)
        nearest = torch.minimum(nearest, (reduced - reduced[index]).pow(2).sum(1))
    return torch.tensor(chosen, device=features.device)


@register_method("patchcore")
class PatchCore(Detector):
    """PatchCore: nearest-neighbour distances to a coreset memory bank of ImageNet patch features."""

    name = "patchcore"
    display_name = "PatchCore"
    config_class = PatchCoreConfig
    profiles = {
        Profile.PAPER: PatchCoreConfig(),
        Profile.QUICK: PatchCoreConfig(image_size=96, pretrain_dim=512, target_dim=512),
    }

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        extractor = freeze(build_cnn(self.name, cfg, tuple(cfg.layers)))
        self.features = LocalPatchFeatures(extractor, cfg.pretrain_dim, cfg.target_dim)
        self.register_buffer("memory_bank", torch.zeros(0, cfg.target_dim))
        self.register_buffer("memory_neighbours", torch.zeros(0, cfg.reweight_neighbours, dtype=torch.long))
        self._weights_for = None
        self._weights = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        resize_buffers(self, state_dict, prefix, ("memory_bank", "memory_neighbours"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.extractor.eval()  # the backbone is never trained (BatchNorm statistics fixed)
        return self

    # -- training ------------------------------------------------------------------------------
    def fit(self, train_set) -> None:
        cfg = self.config
        device = module_device(self)
        images = stack_images(train_set)
        gen = derived_generator()  # follows the cell's seed (robustad.core.seeding)
        self.eval()
        with torch.no_grad():
            patches = torch.cat([
                self.features(images[i:i + cfg.batch_size].to(device)).reshape(-1, cfg.target_dim)
                for i in range(0, len(images), cfg.batch_size)
            ])
            bank = patches[greedy_coreset(patches, cfg.coreset_ratio, cfg.coreset_projection_dim, gen)]
            b = min(cfg.reweight_neighbours, bank.shape[0])
            neighbours = torch.cat([
                pairwise_distances(bank[i:i + 4096], bank).topk(b, dim=1, largest=False).indices
                for i in range(0, bank.shape[0], 4096)
            ])
        if b < cfg.reweight_neighbours:  # a tiny bank: repeat the farthest neighbour
            neighbours = torch.cat([neighbours, neighbours[:, -1:].expand(-1, cfg.reweight_neighbours - b)], 1)
        self.memory_bank = bank
        self.memory_neighbours = neighbours

    # -- scoring (differentiable) --------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.memory_bank.shape[0] == 0:
            raise RuntimeError(f"{self.name}: call fit() (or load a checkpoint) before scoring")
        feats = self.features(images)
        b, h, w, d = feats.shape
        flat = feats.reshape(-1, d)
        distances = torch.cat([
            pairwise_distances(flat[i:i + 8192], self.memory_bank).min(dim=1).values.unsqueeze(1)
            for i in range(0, flat.shape[0], 8192)
        ])[:, 0]
        logits = distances.view(b, h, w)
        if self.config.reweight:
            self._weights = self._reweighting(feats.reshape(b, h * w, d), logits.reshape(b, -1))
            self._weights_for = weakref.ref(logits)
        return logits

    def _reweighting(self, feats: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
        """Eq. 7's factor (B,) for each image's most anomalous patch."""
        top = distances.argmax(dim=1)
        test_patch = feats[torch.arange(feats.shape[0]), top]  # (B, D)
        nearest = pairwise_distances(test_patch.detach(), self.memory_bank).argmin(dim=1)
        neighbourhood = self.memory_bank[self.memory_neighbours[nearest]]  # (B, b, D), m* first
        dist = (test_patch.unsqueeze(1) - neighbourhood).pow(2).sum(-1).clamp_min(1e-12).sqrt()
        return 1.0 - torch.softmax(dist, dim=1)[:, 0]

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """max patch distance, times eq. 7's weight when `logits` came straight from `forward`."""
        top = logits.flatten(1).amax(dim=1)
        if self.config.reweight and self._weights_for is not None and self._weights_for() is logits:
            return self._weights * top
        return top

    def anomaly_map(self, logits: torch.Tensor, size) -> torch.Tensor:
        return gaussian_blur(super().anomaly_map(logits, size), self.config.smoothing_sigma)


PatchCoreAdv = register_adversarial_variant(
    PatchCore, "PatchCore with an adversarially trained ResNet-50 extractor (PatchGuard appendix E).",
    changes=dict(backbone="resnet50", robust_backbone=True),
)
