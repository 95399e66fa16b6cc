"""The attention regularizer R of PatchGuard (paper §5.2, eq. 4) and the official code's KL variant.

R(x) = 1 / Σ_i Σ_j Σ_k A_ijk · 1(A_ijk ≤ δ), A: one layer's attention (heads i, output patch j,
input patch k), δ = 1/N by default. Minimizing R raises the small attention coefficients, which (the
rows being softmaxes) pushes each row toward uniform, i.e. a higher attention degree. For uniform
attention R = 1 / (heads · N); it grows without bound as attention becomes one-hot.

The official code (rohban-lab/PatchGuard, loss.py) instead uses KL(uniform ‖ A), averaged over all
coefficients, on blocks 6, 9 and 12 with weights 0.005, 0.01 and 0.05; it is 0 for uniform attention.

A sparse layer (BigBird, `bigbird.py`, Table 11) is read over its pattern's nonzero entries: its
boolean `pattern` (heads, N, N) gives each row its n_j allowed entries, uniform attention over the
pattern is the reference, and both terms are read relative to it. In R the threshold of row j is
δ·N/n_j (δ = 1/N gives 1/n_j, the row's uniform value) and only pattern entries count; the KL is to
the uniform distribution over the row's pattern, averaged over the pattern's entries. With a full
pattern both reduce to the dense definitions.
"""
from __future__ import annotations

import math

import torch

KL_EPS = 1e-8  # the official code's log(A + 1e-8)


def _check(attention: torch.Tensor) -> None:
    if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"attention must have shape (B, heads, N, N), got {tuple(attention.shape)}")


def _check_pattern(attention: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    if pattern.dtype != torch.bool or tuple(pattern.shape[-2:]) != tuple(attention.shape[-2:]):
        raise ValueError(f"pattern must be a bool (heads, N, N) or (N, N) matching the attention "
                         f"{tuple(attention.shape)}, got {pattern.dtype} {tuple(pattern.shape)}")
    return pattern.to(attention.device)


def attention_r(attention: torch.Tensor, delta: float, pattern: torch.Tensor | None = None) -> torch.Tensor:
    """R of eq. 4 per image, shape (B,), for attention (B, heads, N, N) and threshold δ.

    With a sparse `pattern` (bool, (heads, N, N) or (N, N)): row j's threshold is δ·N/n_j, n_j its
    pattern entries, and entries outside the pattern are left out (see the module docstring)."""
    _check(attention)
    attention = attention.float()
    if pattern is None:
        small = attention * (attention <= delta)
    else:
        pattern = _check_pattern(attention, pattern)
        row_threshold = delta * attention.shape[-1] / pattern.sum(dim=-1, keepdim=True).clamp_min(1)
        small = attention * ((attention <= row_threshold) & pattern)
    return 1.0 / small.flatten(1).sum(dim=1).clamp_min(1e-8)


def kl_to_uniform(attention: torch.Tensor, pattern: torch.Tensor | None = None) -> torch.Tensor:
    """KL(uniform ‖ A) per image (B,), averaged over heads, rows and coefficients (official `reduction='mean'`).

    With a sparse `pattern`: the uniform distribution over each row's pattern entries, averaged over
    the pattern's entries."""
    _check(attention)
    attention = attention.float()
    if pattern is None:
        n = attention.shape[-1]
        uniform = 1.0 / n
        return (uniform * (math.log(uniform) - torch.log(attention + KL_EPS))).flatten(1).mean(dim=1)
    pattern = _check_pattern(attention, pattern).expand_as(attention)
    uniform = 1.0 / pattern.sum(dim=-1, keepdim=True).clamp_min(1).float()
    terms = torch.where(pattern, uniform * (torch.log(uniform) - torch.log(attention + KL_EPS)), 0.0)
    return terms.flatten(1).sum(dim=1) / pattern[0].sum()


def attention_regularizer(
    attention: dict, *, reg_type: str, delta: float, kl_weights: tuple[float, ...] = (1.0,),
    patterns: dict | None = None,
) -> torch.Tensor:
    """The regularization term per image (B,) summed over the regularized layers.

    `attention` maps a layer key to its attention (B, heads, N, N), in the order of `kl_weights`
    (one weight for all layers, or one per layer). `reg_type` is "paper" (eq. 4) or "kl".
    `patterns` maps a layer key to its sparse pattern (None or absent: dense).
    """
    if not attention:
        raise ValueError("attention_regularizer needs the attention of at least one layer")
    patterns = patterns or {}
    keys = list(attention)
    if reg_type == "paper":
        return sum(attention_r(attention[k], delta, patterns.get(k)) for k in keys)
    if reg_type == "kl":
        weights = kl_weights if len(kl_weights) == len(keys) else tuple(kl_weights[:1]) * len(keys)
        return sum(w * kl_to_uniform(attention[k], patterns.get(k)) for w, k in zip(weights, keys))
    raise ValueError(f"reg_type={reg_type!r}: expected paper or kl")
