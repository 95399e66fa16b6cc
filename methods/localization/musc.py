"""MuSc (Li et al., "MuSc: Zero-Shot Industrial Anomaly Classification and Segmentation with Mutual
Scoring of the Unlabeled Images", ICLR 2024): zero-shot, transductive localization.

https://arxiv.org/abs/2401.16753; official code xrli-U/MuSc (MIT), `models/musc.py`.

No training. Patch tokens of a frozen ViT (CLIP ViT-L-14-336 at 518 px, blocks 5/11/17/23) are
aggregated by LNAMD for r ∈ {1, 3, 5}, each patch is scored by MSM against every reference image (its
nearest-patch distance, averaged over the 30 % closest references), the scores are averaged over
layers and r: that is M(x), (B, 37, 37) at 518 px. S(x) is the maximum of M, min–max normalized by
the references' own scores and refined by RsCIN over the class embeddings (`mutual_scoring.py`).

Threat model (`references`, recorded in the config):
- `test` (the paper's zero-shot protocol, the `paper` default): the references are the clean test
  images, handed over once by the runner (`set_test_references`) before the clean pass and fixed for
  the attack. Each scored image is compared with every reference except its own clean copy, taken to
  be the reference nearest to it in pixel space (L2): an adversarial image lies within ε of its clean
  copy, far closer than any other test image. The attacker perturbs only the scored image; the
  references' features, scores and class embeddings are computed once from the clean images, so a score
  depends neither on the batch nor on its order. Exactly one reference is always left out, so a clean
  image is scored against the same N − 1 images as in the official code (which scores the whole test
  set at once, each image against all others).
- `train` (few-shot): the normal training images (all, or `train_references` of them drawn with the
  cell's seed) are the references, stored in the checkpoint; nothing is left out.

Fewer than 4 references give the official code an empty 30 % interval (NaN); here at
least one reference always counts.

Profiles: `paper` is the official config (needs open_clip and the cached OpenAI CLIP weights);
`quick` runs a tiny random timm ViT at 64 px offline: it checks the plumbing only, not MuSc.
"""
from __future__ import annotations

import dataclasses
import weakref

import torch
import torch.nn.functional as F
from robustad.core.profiles import Profile
from robustad.core.seeding import derived_generator
from robustad.methods.baselines.common import resize_buffers, stack_images
from robustad.methods.config_fields import in_range, one_of
from robustad.methods.detector import Detector, DetectorConfig
from robustad.methods.localization.inputs import check_images
from robustad.methods.localization.mutual_scoring import interval_mean, lnamd, nearest_patch_distances, rscin
from robustad.methods.localization.vit_tokens import OpenClipTokens, TinyTimmTokens, check_clip_weights
from robustad.methods.registry import register_method

TINY_BACKBONE = "tiny"
RSCIN_K = {"visa": (1, 8, 9)}  # the official per-dataset k lists; every other dataset uses (1, 2, 3)


@dataclasses.dataclass
class MuScConfig(DetectorConfig):
    image_size: int = in_range(518, low=8)
    backbone: str = "ViT-L-14-336"  # an open_clip model name, or "tiny" (a random timm ViT built in code)
    pretrained: str = "openai"  # the open_clip weights tag looked up in the caches
    backbone_weights: str = ""  # a weights file instead of the cache
    quick_gelu: bool = False  # the official 518 px tower runs nn.GELU (see vit_tokens.py)
    feature_layers: tuple[int, ...] = (5, 11, 17, 23)  # 0-based blocks, the official `feature_layers`
    aggregation_degrees: tuple[int, ...] = (1, 3, 5)  # LNAMD's r list
    interval_low: float = in_range(0.0, low=0)  # MSM: mean over references ranked in [low, high)
    interval_high: float = in_range(0.3, low=0, low_open=True)
    rscin_k: tuple[int, ...] = (1, 2, 3)  # RsCIN's k list ((1, 8, 9) on VisA); 0 switches RsCIN off
    references: str = one_of("test", ("test", "train"))
    train_references: int = in_range(0, low=0)  # references=train: how many training images (0: all)
    reference_chunk: int = in_range(8, low=1)  # references per distance block (memory only)
    vit_patch_size: int = in_range(8, low=1)  # backbone=tiny only
    vit_embed_dim: int = in_range(64, low=8)
    vit_depth: int = in_range(4, low=1)
    vit_heads: int = in_range(2, low=1)


@register_method("musc")
class MuSc(Detector):
    """MuSc: mutual scoring of patch tokens against fixed clean references (see the module docstring)."""

    name = "musc"
    display_name = "MuSc"
    config_class = MuScConfig
    profiles = {
        Profile.PAPER: MuScConfig(),
        Profile.QUICK: MuScConfig(image_size=64, backbone=TINY_BACKBONE, feature_layers=(0, 1, 2, 3),
                                  vit_patch_size=8, vit_embed_dim=64, vit_depth=4, vit_heads=2),
    }
    uses_test_references = True

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        if any(int(r) < 1 or int(r) % 2 == 0 for r in cfg.aggregation_degrees) or not cfg.aggregation_degrees:
            raise ValueError(f"--config aggregation_degrees={cfg.aggregation_degrees}: odd sizes ≥ 1 (e.g. 1,3,5)")
        if cfg.backbone == TINY_BACKBONE:
            self.backbone = TinyTimmTokens(cfg.image_size, cfg.feature_layers, cfg.vit_patch_size, cfg.vit_embed_dim,
                                           cfg.vit_depth, cfg.vit_heads)
        else:
            self.backbone = OpenClipTokens(cfg.backbone, cfg.pretrained, cfg.backbone_weights, cfg.image_size,
                                           cfg.feature_layers, cfg.quick_gelu)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        if cfg.image_size % self.backbone.patch_size:
            raise ValueError(f"--config image_size={cfg.image_size}: a multiple of the patch size "
                             f"{self.backbone.patch_size}")
        self.grid = cfg.image_size // self.backbone.patch_size
        # the transductive switch follows the config: with references=train the runner's hook is not needed
        self.uses_test_references = cfg.references == "test"
        self.register_buffer("reference_images", torch.zeros(0, 3, cfg.image_size, cfg.image_size))
        self._references = None  # derived from reference_images on first use (see _reference_state)
        self._refined_for = None
        self._refined = None

    @classmethod
    def check_before_run(cls, config, dataset, categories) -> None:
        if config is not None and config.backbone != TINY_BACKBONE:
            check_clip_weights(config.backbone, config.pretrained, config.backbone_weights)

    @classmethod
    def cell_overrides(cls, overrides, dataset, category):
        out = dict(overrides)
        if "rscin_k" not in out and dataset in RSCIN_K:
            out["rscin_k"] = RSCIN_K[dataset]
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        resize_buffers(self, state_dict, prefix, ("reference_images",))
        self._references = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: never in training mode
        return self

    # -- references ----------------------------------------------------------------------------
    def fit(self, train_set) -> None:
        """references=train: keeps the normal training images as references; references=test: nothing."""
        if self.config.references != "train":
            return
        images = stack_images(train_set)
        count = self.config.train_references
        if count and count < len(images):
            order = torch.randperm(len(images), generator=derived_generator())[:count]
            images = images[order.sort().values]
        self._set_references(images)

    def set_test_references(self, images: torch.Tensor) -> None:
        """references=test: the clean test images (N, 3, H, W) every image is scored against."""
        if self.config.references == "test":
            self._set_references(images)

    def _set_references(self, images: torch.Tensor) -> None:
        check_images(f"{self.name} references", images, self.config.image_size)
        if len(images) < 2:
            raise ValueError(f"{self.name}: needs at least 2 reference images, got {len(images)}")
        self.reference_images = images.detach().to(self.reference_images)
        self._references = None

    @torch.no_grad()
    def _reference_state(self) -> dict:
        """Features, class embeddings and scores of the clean references, computed once per device."""
        device = self.reference_images.device
        if self._references is not None and self._references["device"] == device:
            return self._references
        if self.reference_images.shape[0] == 0:
            where = ("set_test_references() (the runner's transductive hook)" if self.config.references == "test"
                     else "fit() (or load a checkpoint)")
            raise RuntimeError(f"{self.name}: no reference images; call {where} before scoring")
        features, embeddings = [], []
        for start in range(0, len(self.reference_images), 8):
            feats, emb = self._features(self.reference_images[start:start + 8])
            features.append(feats)
            embeddings.append(emb)
        features = [torch.cat(parts) for parts in zip(*features)]  # per (r, layer): (N, P, C)
        state = {"device": device, "features": features, "embeddings": torch.cat(embeddings)}
        n = len(self.reference_images)
        maps = torch.stack([self._mutual_map([f[j] for f in features], state, torch.arange(n, device=device) != j)
                            for j in range(n)])
        scores = maps.amax(dim=1)
        state.update(score_min=scores.min(), score_range=(scores.max() - scores.min()).clamp_min(1e-12))
        state["scores"] = (scores - state["score_min"]) / state["score_range"]
        self._references = state
        return state

    def excluded_references(self, images: torch.Tensor) -> torch.Tensor | None:
        """Per image (B,), the index of the reference left out as its own clean copy (references=test:
        the nearest reference in pixel space); None with references=train."""
        if self.config.references != "test":
            return None
        refs = self.reference_images.flatten(1)
        distances = torch.cdist(images.detach().flatten(1).to(refs), refs)
        return distances.argmin(dim=1)

    # -- scoring (differentiable) --------------------------------------------------------------
    def _features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """LNAMD features per (r, layer), each (B, P, C), and the unit image embeddings (B, D)."""
        tokens, embedding = self.backbone(images)
        grid = (self.grid, self.grid)
        feats = [lnamd(layer, grid, int(r)) for r in self.config.aggregation_degrees for layer in tokens]
        return feats, embedding

    def _mutual_map(self, query: list[torch.Tensor], state: dict, keep: torch.Tensor) -> torch.Tensor:
        """MSM of one image (its (P, C) features per (r, layer)) against the kept references: (P,)."""
        cfg = self.config
        per_feature = [
            interval_mean(nearest_patch_distances(q, refs, cfg.reference_chunk)[:, keep], cfg.interval_low,
                          cfg.interval_high)
            for q, refs in zip(query, state["features"])
        ]
        # the official mean over layers, then over r: equal sizes make it one mean
        return torch.stack(per_feature).mean(dim=0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """M(x): (B, h, w) MSM scores; S(x) (`score`) adds RsCIN, per image, against the fixed references."""
        check_images(self.name, images, self.config.image_size)
        state = self._reference_state()
        feats, embedding = self._features(images)
        excluded = self.excluded_references(images)
        n = len(self.reference_images)
        maps, refined = [], []
        for b in range(images.shape[0]):
            keep = torch.ones(n, dtype=torch.bool, device=images.device)
            if excluded is not None:
                keep[excluded[b]] = False
            patch_scores = self._mutual_map([f[b] for f in feats], state, keep)
            maps.append(patch_scores)
            normalized = (patch_scores.max() - state["score_min"]) / state["score_range"]
            similarities = state["embeddings"][keep] @ embedding[b]
            refined.append(rscin(normalized, similarities, state["scores"][keep], tuple(self.config.rscin_k)))
        logits = torch.stack(maps).view(images.shape[0], self.grid, self.grid)
        self._refined, self._refined_for = torch.stack(refined), weakref.ref(logits)
        return logits

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """S(x): RsCIN's refined score when `logits` came straight from `forward`; otherwise the maximum of M
        (the score before RsCIN, the same ranking without the class-embedding neighbourhood)."""
        if self._refined_for is not None and self._refined_for() is logits:
            return self._refined
        return logits.flatten(1).amax(dim=1)

    def anomaly_map(self, logits: torch.Tensor, size) -> torch.Tensor:
        """M upsampled bilinearly with aligned corners, as the official code (no smoothing)."""
        size = (size, size) if isinstance(size, int) else tuple(size)
        return F.interpolate(logits.unsqueeze(1), size=size, mode="bilinear", align_corners=True).squeeze(1)
