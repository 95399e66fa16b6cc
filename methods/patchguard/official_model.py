"""The official PatchGuard network (rohban-lab/PatchGuard, `patchguard.py`), rebuilt on timm's public API.

`arch=official` builds this network instead of `model.PatchGuardNet`; its `state_dict` has the
official module's keys, so the authors' released `patchguard_<dataset>_<class>.pth` files load
into it unchanged (`released_weights.py`). What it reproduces:

- backbone: the timm VisionTransformer that `timm.create_model("vit_small_patch14_dinov2.lvd142m",
  pretrained=False, num_classes=0, img_size=224)` builds (patch 14, width 384, depth 12, 6 heads,
  a class token, LayerScale 1e-5); here constructed from `VisionTransformer` with those arguments
  (`config.patch_size`, `vit_*`, `layer_scale_init`), so tiny sizes work too;
- features: images normalized with the ImageNet mean/std inside the model; the final LayerNorm of
  the patch tokens (class token removed) after each block of `feature_layers` (1-based),
  concatenated along the channels; blocks after the last one are not run;
- discriminator: a learned positional encoding (N, D) drawn from N(0, 1) added first; blocks of
  post-norm self-attention, `LayerNorm(x + Dropout(MHA(x)))`, then `x + Dropout(MLP(x))` (MLP
  D → hidden → D, GELU, dropout inside); `nn.Linear(D, 1)` on each patch.

The official code swaps the forward of the regularized blocks' attention for one that keeps the
softmax; here a forward hook recomputes it only when asked for (`attention_layers`), the class
token's row and column removed, as the official `FeatureExtractor` returns it.
"""
from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from robustad.methods.patchguard.config import PatchGuardConfig
from robustad.methods.patchguard.model import DISCRIMINATOR, IMAGENET_MEAN, IMAGENET_STD, recorded_attention

OFFICIAL_TIMM_MODEL = "vit_small_patch14_dinov2.lvd142m"  # the official `--hf_path`


class OfficialFeatureExtractor(nn.Module):
    """Normalized images → the LayerNorm'ed patch tokens of `feature_layers`, concatenated (B, N, D·L)."""

    def __init__(self, config: PatchGuardConfig):
        super().__init__()
        # what vit_small_patch14_dinov2 passes to VisionTransformer, with the official overrides
        self.pretrained_model = VisionTransformer(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.vit_embed_dim,
            depth=config.vit_depth,
            num_heads=config.vit_heads,
            init_values=config.layer_scale_init or None,
            num_classes=0,
        )
        self.feature_blocks = tuple(config.feature_blocks)  # 0-based
        # not in the state_dict, as in the official module (plain tensors there)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        taps = self.pretrained_model.forward_intermediates(
            x, indices=list(self.feature_blocks), norm=True, stop_early=True, output_fmt="NLC",
            intermediates_only=True,
        )
        return torch.cat(taps, dim=-1)


class OfficialAttentionBlock(nn.Module):
    """Post-norm self-attention block: LayerNorm(x + Dropout(MHA(x))), then x + Dropout(MLP(x))."""

    def __init__(self, dim: int, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.layer_norm_1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        attended, attention = self.attn(x, x, x, need_weights=return_attention, average_attn_weights=False)
        x = self.layer_norm_1(x + self.dropout1(attended))
        return x + self.dropout2(self.linear(x)), attention


class OfficialDiscriminator(nn.Module):
    """Positional encoding N(0, 1) + post-norm attention blocks + Linear(D, 1) per patch → (B, N)."""

    def __init__(self, dim: int, hidden: int, num_patches: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.transformer_encoder = nn.Sequential(
            *[OfficialAttentionBlock(dim, hidden, heads, dropout) for _ in range(layers)]
        )
        self.output_layer = nn.Sequential(nn.Linear(dim, 1))
        self.positional_encodings = nn.Parameter(torch.randn(num_patches, dim))

    def forward(self, features: torch.Tensor, return_attention: bool = False):
        x = features + self.positional_encodings.unsqueeze(0)
        attention = None
        for block in self.transformer_encoder:
            x, attention = block(x, return_attention)
        return self.output_layer(x).squeeze(-1), attention


class OfficialPatchGuardNet(nn.Module):
    """The official `PatchGuard` module: images (B, 3, H, W) in [0, 1] → patch logits (B, g, g).

    `forward(images, attention_layers)` as `PatchGuardNet`'s: with 0-based ViT blocks and/or
    `DISCRIMINATOR`, also {layer: attention (B, heads, N, N)}, class token removed.
    """

    def __init__(self, config: PatchGuardConfig):
        super().__init__()
        if not config.discriminator:
            raise ValueError("--config arch=official: the official network always has its discriminator "
                             "(discriminator=false is an option of arch=robustad only)")
        self.grid = config.grid_size
        self.feature_extractor = OfficialFeatureExtractor(config)
        dim = config.vit_embed_dim * len(config.feature_blocks)
        self.discriminator = OfficialDiscriminator(dim, config.disc_mlp_dim, config.num_patches, config.disc_layers,
                                                   config.disc_heads, config.dropout)

    @property
    def vit(self) -> VisionTransformer:
        return self.feature_extractor.pretrained_model

    def forward(self, images: torch.Tensor, attention_layers: tuple = ()):
        blocks = tuple(i for i in attention_layers if i != DISCRIMINATOR)
        want_disc = DISCRIMINATOR in attention_layers
        last = max(self.feature_extractor.feature_blocks)
        if any(i > last for i in blocks):
            raise ValueError(f"the official network runs ViT blocks up to {last + 1} (its last feature layer); "
                             f"cannot return the attention of blocks {[i + 1 for i in blocks if i > last]}")
        with recorded_attention(self.vit, blocks) as attention:
            features = self.feature_extractor(images)
        logits, disc_attention = self.discriminator(features, want_disc)
        logits = logits.view(-1, self.grid, self.grid)
        if not attention_layers:
            return logits
        prefix = self.vit.num_prefix_tokens
        out = {i: attention[i][:, :, prefix:, prefix:] for i in blocks}
        if want_disc:
            out[DISCRIMINATOR] = disc_attention
        return logits, out
