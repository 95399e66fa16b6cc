"""RealNet's feature-reconstruction UNet (one per feature block) and its segmentation head (RRS decoder).

Written from the RealNet paper (Zhang, Xu, Zhou, CVPR 2024, https://arxiv.org/abs/2403.05897) and the
structure of its official code (cnulab/RealNet, `models/recon/recon.py`, `models/rrs/rrs.py`): an
improved-diffusion style UNet without time embedding — input conv; per level `num_res_blocks` residual
blocks (GroupNorm, SiLU, 3×3 conv), self-attention at the levels in `attention_mult`, a downsampling
residual block (2×2 average pool) between levels; a middle block (res, attention, res); the mirrored
decoder with skip connections and transposed-conv upsampling; a zero-initialized output conv (so a fresh
UNet reconstructs zeros). Module names follow the official ones so its checkpoints' keys map one to one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


def zeroed(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Resample(nn.Module):
    """×2 up (4×4 transposed conv, stride 2) or down (2×2 average pool)."""

    def __init__(self, channels: int, up: bool):
        super().__init__()
        self.up = up
        if up:
            self.conv = nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if self.up else F.avg_pool2d(x, 2)


class ResBlock(nn.Module):
    def __init__(self, channels: int, out_channels: int | None = None, groups: int = 32, up: bool = False,
                 down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(group_norm(channels, groups), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        self.h_upd = Resample(channels, up) if self.updown else nn.Identity()
        self.x_upd = Resample(channels, up) if self.updown else nn.Identity()
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[2](self.h_upd(self.in_layers[:2](x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention with `channels // head_channels` heads and a zero-initialized output."""

    def __init__(self, channels: int, head_channels: int, groups: int = 32):
        super().__init__()
        if channels % head_channels:
            raise ValueError(f"--config num_head_channels={head_channels} must divide the UNet width {channels}")
        self.heads = channels // head_channels
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        length = qkv.shape[-1]
        ch = c // self.heads
        q, k, v = qkv.reshape(b * self.heads, 3 * ch, length).split(ch, dim=1)  # legacy head order
        scale = ch ** -0.25
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
        h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, length)
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)


class ReconstructionUNet(nn.Module):
    """Maps a feature block (B, C, h, w) to its reconstruction, same shape (h, w divisible by 2^(levels−1))."""

    def __init__(self, channels: int, model_channels: int, num_res_blocks: int = 2, channel_mult=(1, 2, 4),
                 attention_mult=(2, 4), head_channels: int = 64, groups: int = 32):
        super().__init__()
        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([nn.Conv2d(channels, ch, 3, padding=1)])
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, int(mult * model_channels), groups)]
                ch = int(mult * model_channels)
                if ds in attention_mult:
                    layers.append(AttentionBlock(ch, head_channels, groups))
                self.input_blocks.append(nn.Sequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(ResBlock(ch, ch, groups, down=True))
                skips.append(ch)
                ds *= 2
        self.middle_block = nn.Sequential(ResBlock(ch, groups=groups), AttentionBlock(ch, head_channels, groups),
                                          ResBlock(ch, groups=groups))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), int(model_channels * mult), groups)]
                ch = int(model_channels * mult)
                if ds in attention_mult:
                    layers.append(AttentionBlock(ch, head_channels, groups))
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, ch, groups, up=True))
                    ds //= 2
                self.output_blocks.append(nn.Sequential(*layers))
        self.out = nn.Sequential(group_norm(ch, groups), nn.SiLU(), zeroed(nn.Conv2d(input_ch, channels, 3, padding=1)))
        self.levels = len(channel_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, h = [], x
        for module in self.input_blocks:
            h = module(h)
            skips.append(h)
        h = self.middle_block(h)
        for module in self.output_blocks:
            h = module(torch.cat([h, skips.pop()], dim=1))
        return self.out(h)


class Residual(nn.Module):
    """x + (ReLU, 3×3 conv, ReLU, 1×1 conv)(x), without biases."""

    def __init__(self, channels: int):
        super().__init__()
        self._block = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.ReLU(),
                                    nn.Conv2d(channels, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._block(x)


class ResidualStack(nn.Module):
    """RRS decoder's residual stack: `layers` residual units, then ReLU."""

    def __init__(self, channels: int, layers: int):
        super().__init__()
        self._layers = nn.ModuleList(Residual(channels) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self._layers:
            x = layer(x)
        return F.relu(x)


class ResidualSelection(nn.Module):
    """RRS: keeps, per image, the `max_channels` residual channels with the largest spatial maximum and the
    `mean_channels` with the largest spatial mean (ranked after a BatchNorm without affine parameters,
    `bn_idx`), and decodes them to two-class logits at twice the grid (widths 128 → 32 → 8 → 4 → 2)."""

    def __init__(self, in_channels: int, max_channels: int, mean_channels: int, residual_layers: int = 2):
        super().__init__()
        if max_channels + mean_channels < 1 or max(max_channels, mean_channels) > in_channels:
            raise ValueError(f"--config rrs_channels=({max_channels}, {mean_channels}): each at most the "
                             f"{in_channels} selected feature channels, and together at least 1")
        self.counts = (int(max_channels), int(mean_channels))
        selected = sum(self.counts)
        self.bn_idx = nn.BatchNorm2d(in_channels, momentum=0.9, affine=False)
        self.decoder1 = nn.Sequential(ResidualStack(selected, residual_layers), nn.Conv2d(selected, 128, 3, padding=1),
                                      nn.BatchNorm2d(128), nn.ReLU())
        self.decoder2 = nn.Sequential(nn.Conv2d(128, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 8, 3, padding=1),
                                      nn.ReLU())
        self.decoder3 = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        """Residuals (B, C, h, w) on one grid → logits (B, 2, 2h, 2w). The channel choice is per image (in
        eval mode the BatchNorm uses its running statistics), so no batch changes another image's logits."""
        b, c, h, w = residual.shape
        ranked = self.bn_idx(residual).flatten(2)
        chosen = []
        for statistic, count in zip((ranked.amax(dim=-1), ranked.mean(dim=-1)), self.counts):
            if count:
                index = statistic.topk(count, dim=1).indices  # (B, count): an index, not a gradient path
                chosen.append(torch.gather(residual, 1, index.view(b, count, 1, 1).expand(b, count, h, w)))
        x = self.decoder2(self.decoder1(torch.cat(chosen, dim=1)))
        x = F.interpolate(x, size=(2 * h, 2 * w), mode="bilinear", align_corners=True)
        return self.decoder3(x)
