"""Convolutional backbones in PatchGuard's pipeline instead of the ViT (paper Table 10, appendix C.4).

The paper's ablation asks whether the ViT's attention is what makes PatchGuard robust: the same
pseudo anomalies, loss and adversarial training, with a CNN that has no attention (and so no
regularizer R, `alpha=0`).

- `PatchResNet` (`backbone=resnet50`): "each image is divided into patches manually, following the
  same patching approach used by the vision transformer. Anomaly scores are then computed for each
  patch independently" by a ResNet-50 (He et al., CVPR 2016; torchvision's) with "a binary
  classification layer at the model's final stage". The g×g patches of patch_size pixels go through
  the ResNet at their own size (no resizing: at 224 px a patch is 14×14 px, its layer4 map 1×1), are
  average-pooled and mapped to one logit by a linear layer. M(x) is the (B, g, g) patch logits, S(x)
  the top-k mean as for the ViT. ImageNet weights from the torch hub cache or `backbone_weights`
  (`methods/baselines/backbones.py`, never downloaded) or random (`backbone_init=scratch`, `quick`).
  `resnet_width` scales every stage's channels (64: ResNet-50 itself; `quick`: 16, the same blocks at a
  quarter of the width, as the `quick` ViT is a quarter of ViT-S's width).
- `PixelUNet` (`backbone=unet`): U-Net (Ronneberger et al., MICCAI 2015,
  https://arxiv.org/abs/1505.04597) with `unet_levels` = 4 down-samplings and `unet_width` = 64
  channels at the first level, doubling per level; each level two 3×3 convolutions with batch norm
  and ReLU (padded, so the output keeps the input size), 2×2 max pooling down, 2×2 transposed
  convolutions up, skip connections by concatenation, a 1×1 convolution to one logit per pixel.
  Random init. M(x) is (B, H, W) pixel logits; the detector's S(x) is the mean of the top k/N of the
  pixels (appendix C.4).

Images (B, 3, H, W) in [0, 1], ImageNet-normalized inside; differentiable in the pixels.
"""
from __future__ import annotations

import torch
from torch import nn

from robustad.methods.baselines.backbones import BackboneConfig, ImageNormalizer, ResNetFeatures
from robustad.methods.patchguard.config import PatchGuardConfig


class NoAttentionMixin:
    """A CNN has no attention: asking for it is an error naming the option."""

    backbone = ""

    def _refuse_attention(self, attention_layers: tuple) -> None:
        if attention_layers:
            raise ValueError(f"patchguard with backbone={self.backbone} has no attention layers "
                             f"(asked for {list(attention_layers)}); the regularizer needs alpha=0 with it")

    def attention_pattern(self, layer):
        return None


class PatchResNet(NoAttentionMixin, nn.Module):
    """ResNet-50 scoring each ViT patch on its own: images (B, 3, H, W) → patch logits (B, g, g)."""

    backbone = "resnet50"
    arch = "resnet50"  # torchvision's architecture (a test may build a smaller one)

    def __init__(self, config: PatchGuardConfig):
        super().__init__()
        self.patch, self.grid = config.patch_size, config.grid_size
        self.features = ResNetFeatures(self.arch, ("layer4",), width=config.resnet_width)
        backbone = BackboneConfig(backbone=self.arch, backbone_init=config.backbone_init,
                                  backbone_weights=config.backbone_weights)
        self.features.load_pretrained("patchguard", backbone)  # a clear MissingWeightsError if absent
        last = self.features.stages["layer4"][-1]
        width = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels  # 2048 for ResNet-50
        self.classifier = nn.Linear(width, 1)  # the binary classification layer

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B·g·g, 3, p, p), raster order as the ViT's tokens."""
        b, c = images.shape[:2]
        g, p = self.grid, self.patch
        return images.view(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b * g * g, c, p, p)

    def forward(self, images: torch.Tensor, attention_layers: tuple = ()):
        self._refuse_attention(attention_layers)
        features = self.features(self.patches(images))["layer4"].mean(dim=(2, 3))
        return self.classifier(features).view(images.shape[0], self.grid, self.grid)


def double_conv(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
    )


class PixelUNet(NoAttentionMixin, nn.Module):
    """U-Net: images (B, 3, H, W) → pixel logits (B, H, W); H, W multiples of 2^levels."""

    backbone = "unet"

    def __init__(self, config: PatchGuardConfig):
        super().__init__()
        widths = [config.unet_width * 2**level for level in range(config.unet_levels + 1)]
        self.normalize = ImageNormalizer()
        self.down = nn.ModuleList([double_conv(3, widths[0])] +
                                  [double_conv(widths[i], widths[i + 1]) for i in range(config.unet_levels)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(config.unet_levels))])
        self.merge = nn.ModuleList([double_conv(2 * widths[i], widths[i]) for i in reversed(range(config.unet_levels))])
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, images: torch.Tensor, attention_layers: tuple = ()):
        self._refuse_attention(attention_layers)
        x = self.down[0](self.normalize(images))
        skips = []
        for level in self.down[1:]:
            skips.append(x)
            x = level(self.pool(x))
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([skip, up(x)], dim=1))
        return self.head(x)[:, 0]


def build_network(config: PatchGuardConfig) -> nn.Module:
    """The network `config.backbone` names (the ViT ones are built by the detector)."""
    if config.backbone == "resnet50":
        return PatchResNet(config)
    if config.backbone == "unet":
        return PixelUNet(config)
    raise ValueError(f"--config backbone={config.backbone!r}: cnn_backbones builds resnet50 or unet")
