"""BigBird block-sparse attention for PatchGuard's ViT (paper Table 11, appendix C.5).

Zaheer et al., "Big Bird: Transformers for Longer Sequences", NeurIPS 2020,
https://arxiv.org/abs/2007.14062 (code: google-research/bigbird; Hugging Face `BigBirdModel` with
`attention_type="block_sparse"`). The N patch tokens, in the ViT's raster order, are cut into
N / b blocks of b consecutive tokens. A query block attends to

- its window: itself and its (w − 1) / 2 neighbouring blocks on each side (w = 3 in BigBird);
- r random blocks (r = 3 in BigBird), drawn among the blocks outside its window and the global ones;
- the g global blocks (BigBird-ITC with g = 2: the first and the last block);

and the global blocks attend to every block. The pattern is a boolean (heads, N, N) matrix per layer,
drawn once when the model is built, from torch's global random generator (so `torch.manual_seed`
before construction fixes it), and stored with the weights (a persistent buffer): an attack sees one
deterministic model. BigBird redraws its random blocks per head and layer, as here.

The attention is softmax over the pattern's entries only (masked `scaled_dot_product_attention`); its
matrix is exactly zero outside the pattern. The attention degree and the regularizer R read a sparse
layer over its pattern's nonzero entries (`attention_degree.py`, `attention_regularizer.py`).

Values chosen here (the paper does not give them): b = 16 tokens at the paper's 16×16 patches, so
16 blocks, each query block seeing 3 + 3 + 2 = 8 of them (half of the tokens); `quick` uses b = 4 on
its 8×8 patches, again 16 blocks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def global_block_indices(blocks: int, global_blocks: int) -> list[int]:
    """The global blocks: the first ⌈g/2⌉ and the last ⌊g/2⌋ of `blocks` (g = 2: first and last)."""
    first = list(range((global_blocks + 1) // 2))
    last = list(range(blocks - global_blocks // 2, blocks))
    return sorted(set(first + last))


def bigbird_block_pattern(blocks: int, heads: int, window: int, random: int, global_blocks: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """The block-level pattern (heads, blocks, blocks), True where a query block sees a key block.

    Random blocks come from `generator` (None: torch's global generator).
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"bigbird window of {window} blocks: expected an odd number >= 1")
    pattern = torch.zeros(heads, blocks, blocks, dtype=torch.bool)
    globals_ = global_block_indices(blocks, global_blocks)
    half = window // 2
    for query in range(blocks):
        low, high = max(0, query - half), min(blocks, query + half + 1)
        pattern[:, query, low:high] = True
        pattern[:, query, globals_] = True
    pattern[:, globals_, :] = True
    for head in range(heads):
        for query in range(blocks):
            if query in globals_:
                continue
            candidates = torch.nonzero(~pattern[head, query]).flatten()
            if len(candidates) == 0 or random == 0:
                continue
            chosen = candidates[torch.randperm(len(candidates), generator=generator)[:random]]
            pattern[head, query, chosen] = True
    return pattern


def bigbird_pattern(tokens: int, heads: int, block_size: int, window: int, random: int, global_blocks: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """The token-level pattern (heads, tokens, tokens): each block entry expanded to block_size²."""
    if tokens % block_size:
        raise ValueError(f"bigbird: {tokens} tokens are not a multiple of the block size {block_size}")
    blocks = bigbird_block_pattern(tokens // block_size, heads, window, random, global_blocks, generator)
    return blocks.repeat_interleave(block_size, dim=1).repeat_interleave(block_size, dim=2)


class BlockSparseAttention(nn.Module):
    """A timm ViT `Attention` restricted to a fixed pattern (heads, N, N); same parameters and names.

    `forward(x)` (B, N, C) → (B, N, C) as timm's; `attention(x)` is the matrix (B, heads, N, N),
    zero outside the pattern, each row a softmax over its pattern entries.
    """

    def __init__(self, dense: nn.Module, pattern: torch.Tensor):
        super().__init__()
        if getattr(dense, "gate", None) is not None:
            raise ValueError("BlockSparseAttention: gated timm attention is not supported")
        self.num_heads, self.head_dim, self.scale = dense.num_heads, dense.head_dim, dense.scale
        self.attn_dim = dense.num_heads * dense.head_dim
        self.qkv, self.q_norm, self.k_norm = dense.qkv, dense.q_norm, dense.k_norm
        self.attn_drop, self.norm, self.proj, self.proj_drop = dense.attn_drop, dense.norm, dense.proj, dense.proj_drop
        if pattern.dtype != torch.bool or pattern.dim() != 3 or pattern.shape[0] != dense.num_heads:
            raise ValueError(f"BlockSparseAttention: pattern must be bool (heads={dense.num_heads}, N, N), "
                             f"got {pattern.dtype} {tuple(pattern.shape)}")
        self.register_buffer("pattern", pattern)

    def _qk_v(self, x: torch.Tensor):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return self.q_norm(q), self.k_norm(k), v

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("BlockSparseAttention takes no further attention mask")
        b, n, _ = x.shape
        q, k, v = self._qk_v(x)
        drop = self.attn_drop.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.pattern, dropout_p=drop)
        out = self.norm(out.transpose(1, 2).reshape(b, n, self.attn_dim))
        return self.proj_drop(self.proj(out))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """softmax over the pattern of q·kᵀ·scale, (B, heads, N, N), exactly 0 outside the pattern."""
        q, k, _ = self._qk_v(x)
        scores = (q * self.scale @ k.transpose(-2, -1)).masked_fill(~self.pattern, float("-inf"))
        return scores.softmax(dim=-1)


def make_bigbird(vit: nn.Module, block_size: int, window: int, random: int, global_blocks: int) -> None:
    """Replaces the attention of every block of a timm ViT (no class token) by BigBird's, in place."""
    for block in vit.blocks:
        tokens = vit.patch_embed.num_patches
        pattern = bigbird_pattern(tokens, block.attn.num_heads, block_size, window, random, global_blocks)
        block.attn = BlockSparseAttention(block.attn, pattern)
