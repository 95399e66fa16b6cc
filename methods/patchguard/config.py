"""PatchGuard's configuration: one dataclass, four presets (`paper`, `quick`, `long`, `official`).

PatchGuard (Nafez et al., "PatchGuard: Adversarially Robust Anomaly Detection and Localization
through Vision Transformers and Pseudo Anomalies", CVPR 2025, https://arxiv.org/abs/2506.09237).
The defaults are the paper's. Every ablation of the paper is a field, set with `--config KEY=VALUE`:

- clean training (Table 7): `adv_train=false`
- α (Table 5): `alpha=0` ... `alpha=5`
- δ (Table 8): `delta_scale=0.5|1|2` (δ = delta_scale / N, N = number of patches)
- regularized layer (Table 12): `reg_layers=-3` (ViT blocks, 1-based, negatives count from the end)
- ViT size (Table 9): `vit_embed_dim=768 vit_depth=12 vit_heads=12` (ViT-B)
- without the discriminator (Table 19): `discriminator=false`
- pseudo-anomaly generator (Table 6): `pseudo_anomaly=ours|cutpaste|fpi|nsa|glass` (`glass`: GLASS's
  local anomaly synthesis, textures from `texture_source` / `dtd_root`)
- convolutional backbones instead of the ViT (Table 10, appendix C.4): `backbone=resnet50 alpha=0`
  (each ViT patch scored by a ResNet-50 with a binary classification layer; `backbone_init`,
  `backbone_weights`) and `backbone=unet alpha=0` (pixel logits; S(x) the mean of the top k/N of the
  pixels). They have no attention: `alpha` must be 0 (refused otherwise, so a record never claims a
  regularizer that was not applied); the ViT and discriminator fields are unused with them.
- BigBird block-sparse attention in the ViT (Table 11, appendix C.5): `attention=bigbird` (with R)
  and `attention=bigbird alpha=0` (without); blocks of `bigbird_block_size` tokens, each query block
  sees `bigbird_window_blocks` neighbours, `bigbird_random_blocks` random blocks (fixed per model),
  and `bigbird_global_blocks` global blocks (`bigbird.py`)
- the training attack on L itself (eq. 6) instead of the code's flip margin: `train_attack_loss=ce`

Where the official code (github.com/rohban-lab/PatchGuard) differs from the paper, the paper is the
default and the official choice an option: `patch_label_rule=any`, `reg_type=kl` with
`reg_layers=6,9,12` and `kl_weights=0.005,0.01,0.05`, `top_k=3`, `layer_scale_init=1e-5`, and
`weight_decay=0.01` (its `train_model.py` never passes its `--wd 1e-5` to AdamW).

`official` is the official code as shipped: its network (`arch=official`, `official_model.py`, whose
state_dict is the official module's), its recipe, its cut-paste pseudo anomalies
(`pseudo_anomaly=official`) and its training attack in train mode; `weights=PATH` loads the authors'
released checkpoints instead of training (`docs/methods/patchguard-official.md`).

One field is robustad's own, kept because the CPU presets need it: `anomaly_min_change`, the pixel
change that half of a pseudo anomaly's mask must exceed (else a colour change, then heavy noise,
are added; `hard_transforms.py`). A mask over unchanged pixels is a wrong label, and one within 2ε
of its normal source is a wrong label for adversarial training (the attack can make them meet);
`quick` and `long` use 2ε = 16/255, the default 4/255 only refuses near-unchanged regions.
Presets and what they measured: `docs/methods/patchguard.md`; the recipes tried at CPU scale and
left out of the product: `docs/findings/patchguard-cpu-scale.md`.
"""
from __future__ import annotations

import dataclasses

from robustad.core.profiles import Profile
from robustad.methods.config_fields import ConfigValueError, in_range, one_of
from robustad.methods.detector import DetectorConfig

ARCHS = ("robustad", "official")
REG_TYPES = ("paper", "kl")
PATCH_LABEL_RULES = ("fraction", "any")
PRECISIONS = ("fp32", "bf16")
PSEUDO_ANOMALIES = ("ours", "cutpaste", "fpi", "nsa", "glass", "official")
BACKBONES = ("vit", "resnet50", "unet")
ATTENTIONS = ("dense", "bigbird")
TEXTURE_SOURCES = ("dtd", "train", "procedural")
FOREGROUNDS = ("auto", "resnet18", "efficientnet_lite0", "full")
TRAIN_ATTACK_LOSSES = ("margin", "ce")
TRAIN_ATTACK_MODES = ("eval", "train")


@dataclasses.dataclass
class PatchGuardConfig(DetectorConfig):
    """PatchGuard hyper-parameters; the defaults are the paper's (§5, §6 "Implementation")."""

    # -- network: "robustad" (model.py) or the official module (official_model.py) -------------
    arch: str = one_of("robustad", ARCHS)
    weights: str = ""  # arch=official: the authors' released state_dict (a file, or a folder of them); no fit
    feature_layers: tuple = (-1,)  # ViT blocks (1-based) whose normed patch tokens feed the discriminator
    disc_layers: int = in_range(1, low=1)  # attention blocks of the discriminator
    # -- backbone: timm VisionTransformer, random init (paper: ViT-S, patch 14, 224 px) --------
    image_size: int = in_range(224, low=8)
    patch_size: int = in_range(14, low=1)
    vit_embed_dim: int = in_range(384, low=1)
    vit_depth: int = in_range(12, low=1)
    vit_heads: int = in_range(6, low=1)
    layer_scale_init: float = in_range(0.0, low=0)  # 0: no LayerScale (paper); the official dinov2 arch uses 1e-5
    # -- attention of the ViT: dense (paper) or BigBird block-sparse (Table 11, bigbird.py) ---
    attention: str = one_of("dense", ATTENTIONS)
    bigbird_block_size: int = in_range(16, low=1)  # tokens per block; N must be a multiple
    bigbird_window_blocks: int = in_range(3, low=1)  # the query's block and its neighbours (odd)
    bigbird_random_blocks: int = in_range(3, low=0)  # per query block, head and layer; fixed per model
    bigbird_global_blocks: int = in_range(2, low=0)  # the first and last blocks: see and are seen by all
    # -- convolutional backbones instead of the ViT (Table 10, appendix C.4, cnn_backbones.py) --
    backbone: str = one_of("vit", BACKBONES)
    backbone_init: str = one_of("pretrained", ("pretrained", "scratch"))  # resnet50: ImageNet weights or random
    backbone_weights: str = ""  # resnet50: a state-dict path; "": the torch hub cache, never downloaded
    resnet_width: int = in_range(64, low=1)  # resnet50: first-stage channels, later stages scaled alike (64: He et al.)
    unet_width: int = in_range(64, low=1)  # channels of the U-Net's first level (Ronneberger et al.: 64)
    unet_levels: int = in_range(4, low=1)  # down-samplings (Ronneberger et al.: 4)
    # -- attention discriminator: one self-attention layer + shared MLP (paper §5.2, app. I) ---
    discriminator: bool = True  # False: the shared MLP sits on the ViT's last block (Table 19)
    disc_heads: int = in_range(4, low=1)
    disc_mlp_dim: int = in_range(2048, low=1)
    dropout: float = in_range(0.2, low=0, high=1, high_open=True)
    # -- loss: Σ_patches BCE + α·R (eq. 3-5) ----------------------------------------------------
    alpha: float = in_range(1.0, low=0)
    delta_scale: float = in_range(1.0, low=0, low_open=True)  # δ = delta_scale / N
    reg_type: str = one_of("paper", REG_TYPES)  # "paper": R of eq. 4; "kl": KL(uniform ‖ A) of the official code
    reg_layers: tuple = (-1,)  # ViT blocks, 1-based; -1 is the last block
    reg_discriminator: bool = False  # also regularize the discriminator's attention layer
    kl_weights: tuple = in_range((1.0,), low=0)  # per regularized layer, reg_type="kl" only (official: .005,.01,.05)
    patch_label_rule: str = one_of("fraction", PATCH_LABEL_RULES)  # "fraction": > 5% of its pixels; "any": official
    # -- pseudo anomalies (paper §5.1) ----------------------------------------------------------
    pseudo_anomaly: str = one_of("ours", PSEUDO_ANOMALIES)
    foreground: str = one_of("auto", FOREGROUNDS)
    gradcam_weights: str = ""  # a ResNet-18 state-dict path; "" lets the generator decide
    k_soft: int = in_range(3, low=1)
    k_hard: int = in_range(2, low=1, high=8)
    # rectangle side range, fraction of the image side (paper §5.1)
    anomaly_size: tuple = in_range((0.05, 0.3), low=0, high=1, low_open=True, length=2, ordered=True)
    anomaly_min_change: float = in_range(4 / 255, low=0, high=1, high_open=True)  # see the module docstring
    # pseudo_anomaly=official: smallest side of a cut-paste patch, pixels at 224 px (its per-category bounds)
    official_min_side: int = in_range(14, low=1)
    # pseudo_anomaly=glass: where GLASS's textures come from (GLASS: DTD; methods/baselines/synthesis.py)
    texture_source: str = one_of("dtd", TEXTURE_SOURCES)
    dtd_root: str = ""
    # -- adversarial training (paper §5.3, eq. 6-7) ---------------------------------------------
    adv_train: bool = True
    train_eps: float = in_range(8 / 255, low=0)
    train_steps: int = in_range(10, low=1)
    train_step_size: float = in_range(0.0, low=0)  # 0: 2.5·ε/steps (the official code)
    train_attack_loss: str = one_of("margin", TRAIN_ATTACK_LOSSES)  # the flip loss PGD maximizes during training
    train_attack_mode: str = one_of("eval", TRAIN_ATTACK_MODES)  # "train": dropout on while attacking (official)
    # the training PGD's forward + input gradient through torch.compile (attacks/compiled_step.py);
    # a speed option: pays off once a fit's steps amortize the compilation (default off)
    train_attack_compile: bool = False
    # -- optimizer: AdamW, cosine decay to lr·lr_final_factor -----------------------------------
    epochs: int = in_range(300, low=0)
    batch_size: int = in_range(16, low=1)
    lr: float = in_range(8e-4, low=0, low_open=True)
    weight_decay: float = in_range(1e-5, low=0)
    lr_final_factor: float = in_range(0.0125, low=0, high=1)
    train_precision: str = one_of("fp32", PRECISIONS)  # "bf16": CPU/GPU autocast during training
    # -- scoring (paper §5.2; official: Gaussian σ = 6, radius 7 at 224 px) ----------------------
    top_k: int = in_range(5, low=1)
    smoothing_sigma: float = in_range(6.0, low=0)  # at 224 px; scaled with image_size
    smoothing_radius: int = in_range(7, low=0)  # at 224 px; scaled with image_size
    precision: str = one_of("fp32", PRECISIONS)  # forward/scoring precision

    def __post_init__(self):
        super().__post_init__()
        self.reg_layers = tuple(int(i) for i in self.reg_layers)
        self.feature_layers = tuple(int(i) for i in self.feature_layers)
        for layer in self.feature_layers:
            if layer == 0 or abs(layer) > self.vit_depth:
                raise ConfigValueError("feature_layers", self.feature_layers,
                                       f"blocks 1..{self.vit_depth} or -1..-{self.vit_depth} (from the end)")
        if self.arch == "robustad" and self.feature_blocks != (self.vit_depth - 1,):
            raise ConfigValueError("feature_layers", self.feature_layers,
                                   "the last block only with arch=robustad (several layers: arch=official)")
        if self.arch == "robustad" and self.disc_layers != 1:
            raise ConfigValueError("disc_layers", self.disc_layers, "1 with arch=robustad (more: arch=official)")
        if self.weights and self.arch != "official":
            raise ConfigValueError("weights", self.weights, "arch=official too (released weights are of the "
                                   "official network: --profile official or --config arch=official)")
        if self.arch == "official":
            last = max(self.feature_blocks)
            late = [i + 1 for i in self.regularized_blocks if i > last]
            if late:
                raise ConfigValueError("reg_layers", self.reg_layers,
                                       f"blocks up to the last feature layer ({last + 1}) with arch=official; "
                                       f"{late} are never run")
        if self.image_size < self.patch_size or self.image_size % self.patch_size:
            raise ConfigValueError("image_size", self.image_size, f"a multiple of patch_size={self.patch_size}")
        if self.vit_embed_dim % self.vit_heads:
            raise ConfigValueError("vit_embed_dim", self.vit_embed_dim, f"a multiple of vit_heads={self.vit_heads}")
        disc_width = self.vit_embed_dim * (len(self.feature_layers) if self.arch == "official" else 1)
        if self.discriminator and disc_width % self.disc_heads:
            raise ConfigValueError("disc_heads", self.disc_heads, f"a divisor of the discriminator's width {disc_width}")
        for layer in self.reg_layers:
            if layer == 0 or abs(layer) > self.vit_depth:
                raise ConfigValueError("reg_layers", self.reg_layers,
                                       f"blocks 1..{self.vit_depth} or -1..-{self.vit_depth} (from the end)")
        regularized = len(self.reg_layers) + int(self.reg_discriminator)
        if self.reg_type == "kl" and len(self.kl_weights) not in (1, regularized):
            raise ConfigValueError("kl_weights", self.kl_weights,
                                   f"one weight, or one per regularized layer ({regularized})")
        if self.reg_discriminator and not self.discriminator:
            raise ConfigValueError("reg_discriminator", True, "false when discriminator=false (nothing to regularize)")
        self._check_variants()

    def _check_variants(self) -> None:
        """The backbone and attention variants (Tables 10 and 11): what they combine with."""
        if self.backbone != "vit":
            if self.arch != "robustad":
                raise ConfigValueError("backbone", self.backbone, "vit with arch=official")
            if self.alpha != 0:
                raise ConfigValueError("alpha", self.alpha, f"0 with backbone={self.backbone} (a CNN has no "
                                       f"attention to regularize; paper appendix C.4): --config alpha=0")
            if self.attention != "dense":
                raise ConfigValueError("attention", self.attention, f"dense with backbone={self.backbone}")
        if self.backbone == "resnet50" and self.resnet_width != 64 and self.backbone_init != "scratch":
            raise ConfigValueError("resnet_width", self.resnet_width,
                                   "64 with backbone_init=pretrained (ImageNet weights exist for ResNet-50 "
                                   "only); a narrower ResNet-50 needs --config backbone_init=scratch")
        if self.backbone == "unet" and self.image_size % 2**self.unet_levels:
            raise ConfigValueError("unet_levels", self.unet_levels,
                                   f"at most log2 of a power of two dividing image_size={self.image_size}")
        if self.attention == "bigbird":
            if self.arch != "robustad":
                raise ConfigValueError("attention", self.attention, "dense with arch=official")
            if self.num_patches % self.bigbird_block_size:
                raise ConfigValueError("bigbird_block_size", self.bigbird_block_size,
                                       f"a divisor of the number of patches N={self.num_patches}")
            if self.bigbird_window_blocks % 2 == 0:
                raise ConfigValueError("bigbird_window_blocks", self.bigbird_window_blocks, "an odd number")
            blocks = self.num_patches // self.bigbird_block_size
            if self.bigbird_global_blocks > blocks:
                raise ConfigValueError("bigbird_global_blocks", self.bigbird_global_blocks,
                                       f"at most the number of blocks ({blocks})")

    @property
    def grid_size(self) -> int:
        """Patches per side: image_size // patch_size (16 in the paper)."""
        return self.image_size // self.patch_size

    @property
    def logit_grid(self) -> int:
        """Cells per side of M(x): image_size for backbone=unet (pixels), else grid_size (patches)."""
        return self.image_size if self.backbone == "unet" else self.grid_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def delta(self) -> float:
        """δ of eq. 4: delta_scale / N."""
        return self.delta_scale / self.num_patches

    @property
    def feature_blocks(self) -> tuple[int, ...]:
        """`feature_layers` as 0-based ViT block indices, in the given order (the concatenation's)."""
        return tuple(i - 1 if i > 0 else self.vit_depth + i for i in self.feature_layers)

    @property
    def regularized_blocks(self) -> tuple[int, ...]:
        """`reg_layers` as 0-based ViT block indices, sorted, without repeats."""
        return tuple(sorted({i - 1 if i > 0 else self.vit_depth + i for i in self.reg_layers}))


PAPER = PatchGuardConfig()

# The paper's code path sized for a 2-core CPU: 64 px, 8 px patches, a 4-block ViT of width 96, PGD-5
# in training, the official code's larger pseudo-anomaly regions, the 2ε floor on pseudo-anomaly change.
# Trained in fp32: most x86 CPUs emulate bf16 (several times slower), and one precision everywhere
# gives every host the same model.
QUICK = PatchGuardConfig(
    image_size=64,
    patch_size=8,
    vit_embed_dim=96,
    vit_depth=4,
    vit_heads=3,
    disc_heads=2,
    disc_mlp_dim=384,
    epochs=300,
    train_steps=5,
    anomaly_size=(0.05, 0.6),
    anomaly_min_change=16 / 255,
    bigbird_block_size=4,  # 16 blocks of 4 of the 64 patches, as the paper profile's 16 blocks of 16
    backbone_init="scratch",  # backbone=resnet50 offline: no ImageNet weights
    resnet_width=16,  # backbone=resnet50 at a quarter of ResNet-50's width, as the ViT at a quarter of ViT-S's
    unet_width=16,
    texture_source="train",  # pseudo_anomaly=glass offline: other normal training images as textures
)

# `quick` with twice the width and three times the epochs (about an hour per category on 2 cores).
LONG = dataclasses.replace(QUICK, vit_embed_dim=192, epochs=900)

# The official code as shipped (rohban-lab/PatchGuard, main.py defaults and train_model.py): its
# network (`official_model.py`: dinov2 ViT-S/14 with class token and LayerScale, features of block 12,
# discriminator with 4 heads), KL(uniform ‖ A) on blocks 6, 9, 12, a patch anomalous when any pixel
# is, top-3 scoring, AdamW with the default weight decay 0.01 (its --wd is never passed), 1000 epochs,
# PGD-10 in training, its cut-paste pseudo anomalies. `weights=PATH` evaluates the authors' release.
OFFICIAL = PatchGuardConfig(
    arch="official",
    feature_layers=(12,),
    layer_scale_init=1e-5,
    reg_type="kl",
    reg_layers=(6, 9, 12),
    kl_weights=(0.005, 0.01, 0.05),
    patch_label_rule="any",
    top_k=3,
    weight_decay=0.01,
    epochs=1000,
    pseudo_anomaly="official",
    train_attack_mode="train",
)

PROFILES = {Profile.PAPER: PAPER, Profile.QUICK: QUICK, Profile.LONG: LONG, Profile.OFFICIAL: OFFICIAL}
