"""The attention regularizer R of PatchGuard (paper §5.2, eq. 4) and the official code's KL variant.

R(x) = 1 / Σ_i Σ_j Σ_k A_ijk · 1(A_ijk ≤ δ), A: one layer's attention (heads i, output patch j,
input patch k), δ = 1/N by default. Minimizing R raises the small attention coefficients, which (the
rows being softmaxes) pushes each row toward uniform, i.e. a higher attention degree. For uniform
attention R = 1 / (heads · N); it grows without bound as attention becomes one-hot.

The official code (rohban-lab/PatchGuard, loss.py) instead uses KL(uniform ‖ A), averaged over all
coefficients, on blocks 6, 9 and 12 with weights 0.005, 0.01 and 0.05; it is 0 for uniform attention.
"""
from __future__ import annotations

import math

import torch

KL_EPS = 1e-8  # the official code's log(A + 1e-8)


def _check(attention: torch.Tensor) -> None:
    if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"attention must have shape (B, heads, N, N), got {tuple(attention.shape)}")


def attention_r(attention: torch.Tensor, delta: float) -> torch.Tensor:
    """R of eq. 4 per image, shape (B,), for attention (B, heads, N, N) and threshold δ."""
    _check(attention)
    attention = attention.float()
    small = attention * (attention <= delta)
    return 1.0 / small.flatten(1).sum(dim=1).clamp_min(1e-8)


def kl_to_uniform(attention: torch.Tensor) -> torch.Tensor:
    """KL(uniform ‖ A) per image (B,), averaged over heads, rows and coefficients (official `reduction='mean'`)."""
    _check(attention)
    attention = attention.float()
    n = attention.shape[-1]
    uniform = 1.0 / n
    return (uniform * (math.log(uniform) - torch.log(attention + KL_EPS))).flatten(1).mean(dim=1)


def attention_regularizer(
    attention: dict, *, reg_type: str, delta: float, kl_weights: tuple[float, ...] = (1.0,)
) -> torch.Tensor:
    """The regularization term per image (B,) summed over the regularized layers.

    `attention` maps a layer key to its attention (B, heads, N, N), in the order of `kl_weights`
    (one weight for all layers, or one per layer). `reg_type` is "paper" (eq. 4) or "kl".
    """
    if not attention:
        raise ValueError("attention_regularizer needs the attention of at least one layer")
    maps = list(attention.values())
    if reg_type == "paper":
        return sum(attention_r(a, delta) for a in maps)
    if reg_type == "kl":
        weights = kl_weights if len(kl_weights) == len(maps) else tuple(kl_weights[:1]) * len(maps)
        return sum(w * kl_to_uniform(a) for w, a in zip(weights, maps))
    raise ValueError(f"reg_type={reg_type!r}: expected paper or kl")
