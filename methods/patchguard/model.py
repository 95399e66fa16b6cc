"""PatchGuard's network: a ViT trained from scratch and an attention discriminator (paper §5.2, eq. 2).

M = MLP(MHA(ViT(x))): a timm `VisionTransformer` (no class token, `pretrained=False`) maps an image
(B, 3, H, W) in [0, 1] to N = (H / patch)² patch embeddings; the discriminator adds a learned
positional encoding, applies one multi-head self-attention layer (post-norm, as the official code's
`AttentionBlock`) and a shared MLP giving one logit per patch. Without the discriminator (Table 19)
the shared MLP sits directly on the ViT's last block.

With `attention=bigbird` every ViT block attends over BigBird's block-sparse pattern (`bigbird.py`,
Table 11). Attention matrices (B, heads, N, N) are only computed for the layers asked for
(`forward(x, attention_layers=...)`): a temporary forward hook recomputes softmax(q·kᵀ/√d) from the
block's input, so every other call keeps timm's fused attention (attacks do not need R).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from robustad.methods.patchguard.bigbird import BlockSparseAttention, make_bigbird
from robustad.methods.patchguard.config import PatchGuardConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DISCRIMINATOR = "discriminator"  # the key of the discriminator's attention in `attention_layers`


class SelfAttention(nn.Module):
    """Multi-head self-attention over (B, N, C); optionally returns the attention (B, heads, N, N)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.dropout if self.training else 0.0
        if not return_attention:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
            attention = None
        else:
            attention = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(dim=-1)
            out = F.dropout(attention, drop, self.training) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c)), attention


class AttentionDiscriminator(nn.Module):
    """Learned positional encoding + one self-attention block + shared MLP → one logit per patch."""

    def __init__(self, dim: int, num_patches: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.positional_encoding = nn.Parameter(torch.randn(num_patches, dim) * 0.02)
        self.attention = SelfAttention(dim, heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim))
        self.drop_attention = nn.Dropout(dropout)
        self.drop_mlp = nn.Dropout(dropout)
        self.head = nn.Linear(dim, 1)

    def forward(self, tokens: torch.Tensor, return_attention: bool = False):
        x = tokens + self.positional_encoding
        attended, attention = self.attention(x, return_attention)
        x = self.norm(x + self.drop_attention(attended))
        x = x + self.drop_mlp(self.mlp(x))
        return self.head(x).squeeze(-1), attention


class PatchMLP(nn.Module):
    """The shared MLP alone (no discriminator, Table 19): one logit per patch embedding."""

    def __init__(self, dim: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, 1))

    def forward(self, tokens: torch.Tensor, return_attention: bool = False):
        return self.mlp(tokens).squeeze(-1), None


def block_attention(attn_module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ·scale) of a timm `Attention` module for its input x (B, N, C): (B, heads, N, N).

    A BigBird block (`BlockSparseAttention`) gives its masked softmax, zero outside its pattern."""
    if isinstance(attn_module, BlockSparseAttention):
        return attn_module.attention(x)
    b, n, _ = x.shape
    qkv = attn_module.qkv(x).reshape(b, n, 3, attn_module.num_heads, attn_module.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = attn_module.q_norm(q), attn_module.k_norm(k)
    return (q * attn_module.scale @ k.transpose(-2, -1)).softmax(dim=-1)


@contextlib.contextmanager
def recorded_attention(vit: VisionTransformer, blocks: tuple[int, ...]):
    """Inside the context, each forward of `vit` stores the attention of `blocks` (0-based) in a dict."""
    store: dict[int, torch.Tensor] = {}
    handles = []
    for index in blocks:
        def hook(module, args, output, index=index):
            store[index] = block_attention(module, args[0])

        handles.append(vit.blocks[index].attn.register_forward_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


class PatchGuardNet(nn.Module):
    """ViT + attention discriminator: images (B, 3, H, W) in [0, 1] → patch logits (B, g, g)."""

    def __init__(self, config: PatchGuardConfig):
        super().__init__()
        self.grid = config.grid_size
        self.vit = VisionTransformer(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.vit_embed_dim,
            depth=config.vit_depth,
            num_heads=config.vit_heads,
            num_classes=0,
            global_pool="avg",
            class_token=False,
            init_values=config.layer_scale_init or None,
        )
        if config.attention == "bigbird":
            make_bigbird(self.vit, config.bigbird_block_size, config.bigbird_window_blocks,
                         config.bigbird_random_blocks, config.bigbird_global_blocks)
        if config.discriminator:
            self.head = AttentionDiscriminator(
                config.vit_embed_dim, config.num_patches, config.disc_heads, config.disc_mlp_dim, config.dropout
            )
        else:
            self.head = PatchMLP(config.vit_embed_dim, config.disc_mlp_dim, config.dropout)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def attention_pattern(self, layer) -> torch.Tensor | None:
        """The fixed sparse pattern (heads, N, N) of a layer key (0-based block or `DISCRIMINATOR`),
        or None where the attention is dense."""
        if layer == DISCRIMINATOR:
            return None
        attn = self.vit.blocks[layer].attn
        return attn.pattern if isinstance(attn, BlockSparseAttention) else None

    def forward(self, images: torch.Tensor, attention_layers: tuple = ()):
        """Patch logits (B, g, g); with `attention_layers` also a dict {layer: (B, heads, N, N)}.

        `attention_layers` holds 0-based ViT block indices and/or `DISCRIMINATOR`.
        """
        blocks = tuple(i for i in attention_layers if i != DISCRIMINATOR)
        want_disc = DISCRIMINATOR in attention_layers
        if want_disc and isinstance(self.head, PatchMLP):
            raise ValueError("this PatchGuard model has no discriminator (discriminator=false): no attention to return")
        x = (images - self.mean) / self.std
        with recorded_attention(self.vit, blocks) as attention:
            tokens = self.vit.forward_features(x)
        logits, disc_attention = self.head(tokens, want_disc)
        logits = logits.view(-1, self.grid, self.grid)
        if not attention_layers:
            return logits
        if want_disc:
            attention[DISCRIMINATOR] = disc_attention
        return logits, attention
