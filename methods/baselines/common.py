"""Small pieces several baselines share: locally aware patch features, data stacking, buffers, PGD.

`LocalPatchFeatures` is PatchCore's feature aggregation (Roth et al., CVPR 2022, §3.1;
https://arxiv.org/abs/2106.08265), reused by SimpleNet and GLASS: the outputs of two mid-level
stages (layer2, layer3), each averaged over a 3×3 neighbourhood, layer3 upsampled to layer2's grid,
each projected to `pretrain_dim` by adaptive average pooling over channels, then the two averaged
to `target_dim`. Output (B, h, w, target_dim) on layer2's grid (stride 8).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from robustad.attacks.attack import frozen
from robustad.attacks.threat_model import Norm, ascent_direction, project
from torch import nn


class LocalPatchFeatures(nn.Module):
    """Locally aggregated, channel-pooled patch features from a `ResNetFeatures` (see module doc)."""

    def __init__(self, extractor: nn.Module, pretrain_dim: int, target_dim: int, patch_size: int = 3):
        super().__init__()
        self.extractor = extractor
        self.pretrain_dim = int(pretrain_dim)
        self.target_dim = int(target_dim)
        self.patch_size = int(patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        stages = self.extractor(images)
        maps = [stages[name] for name in self.extractor.layers]
        grid = maps[0].shape[-2:]
        pooled = []
        for fmap in maps:
            b, c, h, w = fmap.shape
            local = F.unfold(fmap, self.patch_size, padding=self.patch_size // 2)  # (B, C·p², h·w)
            local = local.view(b, c * self.patch_size**2, h, w)
            if (h, w) != tuple(grid):
                local = F.interpolate(local, size=grid, mode="bilinear", align_corners=False)
            local = local.permute(0, 2, 3, 1).reshape(-1, 1, local.shape[1])
            pooled.append(F.adaptive_avg_pool1d(local, self.pretrain_dim))  # (N, 1, pretrain_dim)
        stacked = torch.cat(pooled, dim=1).reshape(-1, 1, len(maps) * self.pretrain_dim)
        features = F.adaptive_avg_pool1d(stacked, self.target_dim)[:, 0]
        return features.view(images.shape[0], grid[0], grid[1], self.target_dim)


def stack_images(train_set, device=None) -> torch.Tensor:
    """All images of a dataset of dict items as one tensor (N, 3, H, W)."""
    if len(train_set) == 0:
        raise ValueError("fit() got an empty training set")
    images = torch.stack([train_set[i]["image"] for i in range(len(train_set))])
    return images.to(device) if device is not None else images


def batches(count: int, batch_size: int, generator: torch.Generator):
    """Random index batches covering `count` items once (one epoch)."""
    order = torch.randperm(count, generator=generator)
    for start in range(0, count, batch_size):
        yield order[start:start + batch_size]


def module_device(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def resize_buffers(module: nn.Module, state_dict: dict, prefix: str, names: tuple[str, ...]) -> None:
    """Before loading: gives data-sized buffers (e.g. a memory bank) the shape stored in `state_dict`."""
    for name in names:
        key = prefix + name
        if key in state_dict:
            current = getattr(module, name)
            setattr(module, name, torch.empty_like(current).new_empty(state_dict[key].shape))


def pgd_examples(
    model: nn.Module,
    loss_fn,
    images: torch.Tensor,
    eps: float,
    steps: int,
    norm: str | Norm = Norm.LINF,
    step_size: float | None = None,
) -> torch.Tensor:
    """Training-time PGD: images inside the ε-ball (and [0, 1]) that maximize `loss_fn(x)` (a scalar).

    The model is frozen (eval mode, no parameter gradients) while the examples are made, as in the
    PatchGuard code; the step is 2.5·ε/steps unless given; no random start.
    """
    norm = Norm.parse(norm)
    if eps <= 0 or steps <= 0:
        return images.detach()
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    clean = images.detach()
    adv = clean.clone()
    with frozen(model):
        for _ in range(int(steps)):
            adv.requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(loss_fn(adv), adv)
            adv = project(adv.detach() + alpha * ascent_direction(grad, norm), clean, norm, eps)
    return adv.detach()


def feature_pgd(loss_fn, features: torch.Tensor, eps: float, steps: int, step_size: float | None = None) -> torch.Tensor:
    """Embedding-space PGD (L2 per feature vector): perturbations of `features` (..., D) maximizing `loss_fn`.

    Used for the embedding-space adversarial training of SimpleNet's and GeneralAD's
    discriminators (PatchGuard appendix E). Each feature vector moves at most `eps` in L2.
    """
    if eps <= 0 or steps <= 0:
        return features.detach()
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    clean = features.detach()
    adv = clean.clone()
    for _ in range(int(steps)):
        adv.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(loss_fn(adv), adv)
        step = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        delta = adv.detach() + alpha * step - clean
        scale = (eps / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        adv = clean + delta * scale
    return adv.detach()
