"""A convolutional stem for the ViT's patch embedding (`--config patch_embed=conv`; not in the
PatchGuard paper or its code).

Xiao et al., "Early Convolutions Help Transformers See Better" (NeurIPS 2021, arXiv:2106.14881):
replacing the ViT's single patch-size-stride convolution by a few stride-2 3×3 convolutions
makes from-scratch training converge faster and less sensitive to the optimizer, at a few percent
of the compute. Here: a kernel = stride = r convolution for the odd part r of the patch size (7
for the paper's patch 14), then one stride-2 3×3 convolution per factor 2, each + GELU, channels
doubling up to the embedding width, and a final 1×1 convolution; the output grid is the plain ViT's (image /
patch), so tokens, discriminator and patch logits are unchanged. No normalization layer: batch
statistics would mix the clean and adversarial halves of a training batch.
"""
from __future__ import annotations

from torch import nn


def conv_stem(patch_size: int, embed_dim: int, in_channels: int = 3) -> nn.Sequential:
    """Maps (B, in_channels, H, W) to (B, embed_dim, H / patch_size, W / patch_size)."""
    halvings, rest = 0, patch_size
    while rest % 2 == 0:
        halvings, rest = halvings + 1, rest // 2
    kinds = ["rest"] * (rest > 1) + ["halve"] * halvings
    layers: list[nn.Module] = []
    channels = in_channels
    for i, kind in enumerate(kinds):
        width = max(8, embed_dim // 2 ** (len(kinds) - 1 - i))
        if kind == "rest":  # non-overlapping r×r first, at full resolution: cheap
            layers += [nn.Conv2d(channels, width, kernel_size=rest, stride=rest), nn.GELU()]
        else:
            layers += [nn.Conv2d(channels, width, kernel_size=3, stride=2, padding=1), nn.GELU()]
        channels = width
    layers.append(nn.Conv2d(channels, embed_dim, kernel_size=1))
    return nn.Sequential(*layers)
