"""MuSc's three scoring steps as pure, differentiable tensor functions (Li et al., ICLR 2024).

https://arxiv.org/abs/2401.16753; official code xrli-U/MuSc (`models/modules/_LNAMD.py`, `_MSM.py`,
`_RsCIN.py`), re-implemented here from its definitions:

- LNAMD (local neighbourhood aggregation with multiple degrees): each layer's patch tokens of an image
  are layer-normalized over all of (C, h, w) jointly (a fresh LayerNorm without affine parameters), then
  averaged channel-wise over an r×r neighbourhood with zero padding (the official unfold + adaptive
  average pooling of C·r² values to C is exactly this), then L2-normalized per patch.
- MSM (mutual scoring): a patch's score against one reference image is its distance to the nearest
  patch of that image; its anomaly score is the mean of those distances over the references whose
  distances rank in [`low`, `high`) fractions from the smallest (the official 0 and 30 %).
- RsCIN (re-scoring with constrained image-level neighbourhood): image scores, min–max normalized, are
  averaged over each image's k most similar images (class-token cosine similarity, itself included,
  weighted by similarity), and the results averaged over k ∈ `k_list`.

Every function takes one scored image at a time against a fixed set of references, so a score never
depends on which other images share its batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def lnamd(tokens: torch.Tensor, grid: tuple[int, int], r: int) -> torch.Tensor:
    """Aggregated, normalized patch features (B, P, C) of one layer's patch tokens (B, P, C), P = h·w."""
    b, p, c = tokens.shape
    h, w = grid
    normed = F.layer_norm(tokens, (p, c))  # == LayerNorm([C, h, w]) of the official code
    if r > 1:
        fmap = normed.transpose(1, 2).reshape(b, c, h, w)
        fmap = F.avg_pool2d(fmap, r, stride=1, padding=r // 2, count_include_pad=True)
        normed = fmap.reshape(b, c, p).transpose(1, 2)
    return F.normalize(normed, dim=-1, eps=1e-12)


def nearest_patch_distances(query: torch.Tensor, references: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """(P, N): for each patch of `query` (P, C), its Euclidean distance to the nearest patch of each
    reference image (N, Q, C). Memory stays at one chunk of references: the minimum's backward keeps
    only its indices, never the (P, N·Q) distance matrix."""
    q2 = query.pow(2).sum(-1, keepdim=True)  # (P, 1)
    out = []
    for start in range(0, references.shape[0], chunk):
        refs = references[start:start + chunk]  # (n, Q, C)
        n, patches, c = refs.shape
        flat = refs.reshape(n * patches, c)
        squared = q2 + flat.pow(2).sum(-1).unsqueeze(0) - 2.0 * query @ flat.T  # (P, n·Q)
        out.append(squared.view(-1, n, patches).min(dim=-1).values)
    return torch.cat(out, dim=1).clamp_min(1e-12).sqrt()


def interval_mean(distances: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """(P,): each row's mean over the values ranked [k_low, k_high) from the smallest, k = int(frac·N)
    as the official code counts them. At least one value is always kept (the official code takes the mean
    of an empty set, NaN, when fewer than 4 references remain)."""
    n = distances.shape[1]
    k_low = int(n * low) if low < 1 else int(low)
    k_high = int(n * high) if high < 1 else int(high)
    k_low, k_high = min(k_low, k_high), max(k_low, k_high)
    k_high = min(n, max(k_high, k_low + 1))
    k_low = min(k_low, k_high - 1)
    return distances.sort(dim=1).values[:, k_low:k_high].mean(dim=1)


def rscin(score: torch.Tensor, similarities: torch.Tensor, reference_scores: torch.Tensor,
          k_list: tuple[int, ...]) -> torch.Tensor:
    """RsCIN's refined score of one image.

    score: the image's own normalized score (scalar tensor); similarities (N,): its cosine similarity
    to each reference's class embedding; reference_scores (N,): the references' normalized scores.
    The image itself enters with similarity 1 (its normalized embedding with itself), as in the official
    similarity matrix. k = 0 in `k_list` returns the score unchanged (the official switch-off).
    """
    if not k_list or 0 in k_list:
        return score
    weights = torch.cat([torch.ones_like(similarities[:1]), similarities])
    values = torch.cat([score.reshape(1), reference_scores])
    refined = []
    for k in k_list:
        top = weights.topk(min(int(k), weights.shape[0])).indices
        chosen = weights[top]
        refined.append((chosen * values[top]).sum() / chosen.sum())
    return torch.stack(refined).mean()
