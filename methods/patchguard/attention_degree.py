"""Attention degree of PatchGuard's layers (PatchGuard paper §1 and appendix C.2; Figure 2).

The attention degree of a layer under an image is the average number of input tokens each output
token attends to (§1); appendix C.2 counts a token as attended when its coefficient is at least the
uniform value 1/N. So uniform attention has degree N (the maximum) and identity attention degree 1.
We average over heads and output tokens.

A sparse layer (BigBird, Table 11) is measured over its pattern's nonzero entries: row j of a
pattern with n_j allowed entries counts the entries of the pattern at or above 1/n_j (the row's
uniform value), so uniform attention over the pattern has degree mean_j n_j, and identity attention
still 1. `image_attention_degrees` (and so `bench attention-degree`) takes the pattern from the model.

PatchGuard exposes these degrees through the Detector contract (`attention_degrees`); the paper's
Figure 2 (`bench attention-degree`) is drawn from them by `bench/evaluation/attention_degree.py`.
"""
from __future__ import annotations

import torch

from robustad.methods.patchguard.model import DISCRIMINATOR

RELATIVE_TOLERANCE = 1e-4  # softmax rounding: a uniform row must count as attended everywhere


def attention_degree(attention: torch.Tensor, threshold: float | None = None,
                     pattern: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image attention degree (B,) of attention (B, heads, N, N); threshold defaults to 1/N.

    With a sparse `pattern` (bool, (heads, N, N) or (N, N)) only its entries count, and the default
    threshold of row j is 1/n_j, n_j its pattern entries."""
    if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"attention must have shape (B, heads, N, N), got {tuple(attention.shape)}")
    if pattern is None:
        threshold = 1.0 / attention.shape[-1] if threshold is None else float(threshold)
        attended = attention.float() >= threshold * (1 - RELATIVE_TOLERANCE)
    else:
        if pattern.dtype != torch.bool or tuple(pattern.shape[-2:]) != tuple(attention.shape[-2:]):
            raise ValueError(f"pattern must be a bool (heads, N, N) or (N, N) matching the attention "
                             f"{tuple(attention.shape)}, got {pattern.dtype} {tuple(pattern.shape)}")
        pattern = pattern.to(attention.device)
        if threshold is None:
            threshold = 1.0 / pattern.sum(dim=-1, keepdim=True).clamp_min(1).float()
        attended = (attention.float() >= threshold * (1 - RELATIVE_TOLERANCE)) & pattern
    return attended.sum(dim=-1).float().mean(dim=(1, 2))


def layer_key(detector, layer: int | str):
    """`layer` (1-based ViT block, negative from the end, or "discriminator") as the model's key."""
    if layer == DISCRIMINATOR:
        return DISCRIMINATOR
    depth = detector.config.vit_depth
    layer = int(layer)
    if layer == 0 or abs(layer) > depth:
        raise ValueError(f"attention layer {layer}: expected 1..{depth}, -1..-{depth} or 'discriminator'")
    return layer - 1 if layer > 0 else depth + layer


@torch.no_grad()
def image_attention_degrees(detector, images: torch.Tensor, layer: int | str = -1) -> torch.Tensor:
    """Attention degree (B,) of `layer` (default: the last ViT block) for images (B, 3, H, W)."""
    key = layer_key(detector, layer)
    _, attention = detector.forward_with_attention(images, (key,))
    pattern_of = getattr(detector.net, "attention_pattern", None)
    return attention_degree(attention[key], pattern=pattern_of(key) if pattern_of else None)
