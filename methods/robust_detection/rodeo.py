"""RODEO (Mirzaei et al., "RODEO: Robust Outlier Detection via Exposing Adaptive Out-of-Distribution
Samples", ICML 2024).

https://arxiv.org/abs/2501.16971; official code rohban-lab/RODEO (notebooks; the high-resolution
setting is `Notebooks/ND-HighResolution.ipynb`).

A two-class classifier, normal (0) against exposure (1), trained from scratch with PGD adversarial
training; S(x) = the outlier logit margin l₁(x) − l₀(x) (the official score, the softmax probability
of class 1, is a monotone function of it: the same AUROC, without the softmax's saturation under
attack). As the high-resolution notebook sets it:

- network: ResNet-18 from scratch (timm's `ResNet`, BasicBlock ×(2, 2, 2, 2), base width `width` = 64,
  which is torchvision's `resnet18`), a 2-way linear head, ImageNet normalization inside;
- data: every batch half normal images, half exposures (the notebook oversamples the normal set to
  the exposures' count and shuffles the union), horizontal flips with p = 0.5; images 224 px;
- adversarial training: `torchattacks.PGD` on the cross-entropy, ε = 2/255 (L∞), 10 steps,
  α = 2.5ε/10, uniform random start, made in eval mode; the model trains on the adversarial batch
  only (`training_attack.py`);
- optimizer: SGD lr 0.1, momentum 0.9, weight decay 5e-4; lr piecewise linear over training,
  0.1 → 0.01 at 1/3 → 0.001 at 2/3 → 0 at the end; 5 epochs, batch 128; training stops early after
  an epoch whose mean loss is below 1e-2.

Exposures. The authors' exposures come from GLIDE guided by CLIP with text prompts near the normal
class (their `GenerateExposures.ipynb`), plus Tiny ImageNet images; neither can be made offline.
`--config exposure_dir=DIR` trains against the images of a folder (e.g. the released exposures,
`exposure_folder.py`; `DIR/<category>` where that folder exists, so one option serves a grid);
without one, against robustad's own pseudo anomalies of the normal images, made fresh for every
batch: by default PatchGuard's generator (`pseudo_anomaly=ours`) with its least change at 2·adv_eps,
since an exposure within 2ε of its normal source cannot be told from it robustly (the training attack
makes them meet); `cutpaste|fpi|nsa|perlin` are the alternatives (PatchGuard's Table 6 generators in
`methods/patchguard/`, DRAEM's Perlin synthesis in `methods/baselines/synthesis.py`). The record's
config shows which: a non-empty `exposure_dir` is the folder, else `pseudo_anomaly`.

`adv_train=false` trains the same classifier on clean batches (the ablation the soundness check
compares with). The `quick` profile (64 px, width 16, 100 epochs of batch 32) trains at ε = 8/255,
the benchmark's test ε, against exposures changed by at least 16/255; what it learns at that scale:
`docs/methods/rodeo.md`.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.baselines.backbones import ImageNormalizer
from robustad.methods.baselines.common import batches, module_device, stack_images
from robustad.methods.config_fields import in_range, one_of
from robustad.methods.detector import DetectorConfig
from robustad.methods.registry import register_method
from robustad.methods.robust_detection.detection_only import ImageScoreDetector
from robustad.methods.robust_detection.exposure_folder import check_exposure_folder, load_exposures
from robustad.methods.robust_detection.training_attack import pgd_training_examples

PSEUDO_ANOMALIES = ("cutpaste", "fpi", "nsa", "perlin", "ours")


@dataclasses.dataclass
class RodeoConfig(DetectorConfig):
    image_size: int = in_range(224, low=32)
    width: int = in_range(64, low=1)  # ResNet-18 base channels (64: ResNet-18 itself)
    epochs: int = in_range(5, low=1)
    batch_size: int = in_range(128, low=2)  # per step: half normal images, half exposures
    lr: float = in_range(0.1, low=0, low_open=True)
    momentum: float = in_range(0.9, low=0, high=1)
    weight_decay: float = in_range(5e-4, low=0)
    loss_threshold: float = in_range(1e-2, low=0)  # stop after an epoch with a lower mean loss (0: never)
    hflip: bool = True
    adv_train: bool = True
    adv_eps: float = in_range(2 / 255, low=0)
    adv_steps: int = in_range(10, low=0)
    exposure_dir: str = ""  # folder of exposure images; empty: pseudo anomalies of the normal images
    pseudo_anomaly: str = one_of("ours", PSEUDO_ANOMALIES)  # used when exposure_dir is empty
    # pseudo_anomaly=ours (PatchGuard's generator): region sides as a fraction of the image (PatchGuard's
    # paper range), and the change that half of a region's pixels must exceed: 2·adv_eps, so that the
    # training attack cannot make an exposure and its normal source meet
    anomaly_size: tuple[float, float] = (0.05, 0.3)
    anomaly_min_change: float = in_range(4 / 255, low=0, high=1)


def build_resnet18(width: int, num_classes: int = 2) -> torch.nn.Module:
    """ResNet-18 (BasicBlock ×(2, 2, 2, 2)) with base width `width`, randomly initialized."""
    from timm.models.resnet import BasicBlock, ResNet

    channels = tuple(width * 2**i for i in range(4))
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, channels=channels, stem_width=width,
                  zero_init_last=False)


def category_folder(folder: str, category: str) -> str:
    """`folder/<category>` when it is a folder, else `folder`."""
    inner = Path(folder).expanduser() / category
    return str(Path(folder) / category) if category and inner.is_dir() else folder


def learning_rate(base: float, progress: float, epochs: int) -> float:
    """The notebook's schedule: linear from lr to lr/10 at epochs//3, lr/100 at 2·epochs//3, 0 at the end."""
    knots = [0.0, float(epochs // 3), float(epochs * 2 // 3), float(epochs)]
    values = [base, base / 10, base / 100, 0.0]
    for (x0, y0), (x1, y1) in zip(zip(knots, values), zip(knots[1:], values[1:])):
        if progress <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (progress - x0) / (x1 - x0)
    return 0.0


class PseudoExposures:
    """Exposures made from the normal images themselves by one of robustad's pseudo-anomaly generators."""

    def __init__(self, name: str, images: torch.Tensor, **options):
        """`options`: keyword arguments of PatchGuard's `create_pseudo_anomaly_generator` (its own
        generator, "ours", takes its region sizes and least change from them)."""
        self.name = name
        if name == "perlin":
            from robustad.methods.baselines.synthesis import TextureSource

            self.textures = TextureSource("procedural", images.shape[-1], images)
        else:
            from robustad.methods.patchguard.pseudo_anomalies import create_pseudo_anomaly_generator

            self.generator = create_pseudo_anomaly_generator(name, **options)
            self.generator.prepare(images)

    def __call__(self, normal: torch.Tensor, indices: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.name == "perlin":
            from robustad.methods.baselines.synthesis import perlin_anomalies

            return perlin_anomalies(normal, self.textures, gen, anomaly_probability=1.0)[0]
        return self.generator(normal, indices, gen)[0]


@register_method("rodeo")
class Rodeo(ImageScoreDetector):
    """RODEO: a ResNet-18 trained adversarially to tell normal images from exposures; S(x) the outlier margin."""

    name = "rodeo"
    display_name = "RODEO"
    config_class = RodeoConfig
    profiles = {
        Profile.PAPER: RodeoConfig(),
        Profile.QUICK: RodeoConfig(image_size=64, width=16, epochs=100, batch_size=32, adv_eps=8 / 255,
                                   anomaly_size=(0.05, 0.6), anomaly_min_change=16 / 255),
    }

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.normalize = ImageNormalizer()
        self.classifier = build_resnet18(self.config.width)

    @classmethod
    def check_before_run(cls, config, dataset, categories) -> None:
        """The exposure folder of every category, when given, exists and holds readable images."""
        config = config if config is not None else cls.profiles[Profile.QUICK]
        if config.exposure_dir:
            for folder in sorted({category_folder(config.exposure_dir, c) for c in categories or [""]}):
                check_exposure_folder(cls.name, folder)

    @classmethod
    def cell_overrides(cls, overrides, dataset, category):
        """`exposure_dir=DIR` becomes `DIR/<category>` where that folder exists (per-category exposures,
        as the authors release them), else stays `DIR` (one folder for every category)."""
        out = dict(overrides)
        if out.get("exposure_dir"):
            out["exposure_dir"] = category_folder(out["exposure_dir"], category)
        return out

    @property
    def exposure_source(self) -> str:
        """Which exposures this detector trains against, in words (as the record's config says)."""
        if self.config.exposure_dir:
            return f"exposure images from {self.config.exposure_dir}"
        return f"pseudo anomalies ({self.config.pseudo_anomaly}) of the normal training images"

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 2): normal, exposure."""
        return self.classifier(self.normalize(images))

    def image_scores(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.logits(images)
        return logits[:, 1] - logits[:, 0]

    def fit(self, train_set) -> None:
        cfg = self.config
        device = module_device(self)
        gen = derived_generator()  # follows the cell's seed (robustad.core.seeding)
        images = stack_images(train_set)
        if cfg.exposure_dir:
            exposures, pseudo = load_exposures(self.name, cfg.exposure_dir, cfg.image_size), None
        else:
            options = (dict(size_range=tuple(cfg.anomaly_size), min_change=cfg.anomaly_min_change)
                       if cfg.pseudo_anomaly == "ours" else {})
            exposures, pseudo = None, PseudoExposures(cfg.pseudo_anomaly, images, **options)
        half = max(1, cfg.batch_size // 2)
        steps = math.ceil(len(images) / half)
        opt = torch.optim.SGD(self.classifier.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
        self.train()
        for epoch in range(cfg.epochs):
            total, count = 0.0, 0
            for step, index in enumerate(batches(len(images), half, gen)):
                for group in opt.param_groups:
                    group["lr"] = learning_rate(cfg.lr, epoch + (step + 1) / steps, cfg.epochs)
                normal = images[index]
                if exposures is not None:
                    outliers = exposures[torch.randint(0, len(exposures), (len(index),), generator=gen)]
                else:
                    outliers = pseudo(normal, index, gen)
                inputs = torch.cat([normal, outliers]).to(device)
                targets = torch.cat([torch.zeros(len(index)), torch.ones(len(index))]).long().to(device)
                if cfg.hflip:
                    flip = (torch.rand(len(inputs), generator=gen) < 0.5).to(device)
                    inputs = torch.where(flip.view(-1, 1, 1, 1), inputs.flip(-1), inputs)
                if cfg.adv_train:
                    inputs = pgd_training_examples(self, lambda x: F.cross_entropy(self.logits(x), targets),
                                                   inputs, cfg.adv_eps, cfg.adv_steps, gen)
                loss = F.cross_entropy(self.logits(inputs), targets)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()) * len(inputs), count + len(inputs)
            if total / count < cfg.loss_threshold:
                break
        self.eval()
