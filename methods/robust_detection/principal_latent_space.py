"""The PrincipaLS module (Lo, Oza, Patel, "Adversarially Robust One-class Novelty Detection", TPAMI
2022, https://arxiv.org/abs/2108.11168, §4): cascade principal components of an encoder's latent space.

A latent z (B, C, h, w) passes through two PCA layers and back:

1. Vector-PCA: the h·w channel vectors (C,) of every image are samples; they are projected on the
   first `vector_components` principal components of the channel vectors → principal latent maps
   (B, k_v, h, w).
2. Spatial-PCA: each principal latent map, flattened (h·w,), is a sample; it is projected on the
   first `spatial_components` principal components of the maps and reconstructed from them
   (mean + projection), which keeps the normal class's dominant spatial patterns and removes the
   rest (what an adversarial perturbation adds to the latent).
3. The maps go back through the inverse Vector-PCA (mean + coefficients · components) to (B, C, h, w)
   for the decoder.

Components are learned incrementally during training and fixed in evaluation: each training
forward pass updates a running mean and covariance (exponential moving average with `momentum`,
the first batch initializing them, as BatchNorm keeps its statistics) and recomputes the components
as their leading eigenvectors; evaluation uses the stored ones. The projection is linear in z, so
gradients reach the encoder (training) and the pixels (attacks); the components themselves carry
no gradient (they are statistics, not parameters).

What the paper does not fix and is chosen here (listed on docs/methods/principals.md): the running
statistics' form (EMA, momentum 0.1), and that each of the k_v maps is one Spatial-PCA sample.
"""
from __future__ import annotations

import torch
from torch import nn


class RunningPCA(nn.Module):
    """Running mean and covariance of D-dimensional samples and their `components` leading eigenvectors."""

    def __init__(self, dim: int, components: int, momentum: float):
        super().__init__()
        if not 1 <= components <= dim:
            raise ValueError(f"PCA of {dim}-dimensional samples: components must be in [1, {dim}], got {components}")
        self.momentum = float(momentum)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("covariance", torch.zeros(dim, dim))
        self.register_buffer("components", torch.eye(dim)[:, :components].clone())
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, samples: torch.Tensor) -> None:
        """One incremental step with a batch of samples (N, D)."""
        samples = samples.detach().to(self.mean.dtype)
        mean = samples.mean(dim=0)
        centred = samples - mean
        covariance = centred.T @ centred / max(1, samples.shape[0] - 1)
        if int(self.updates) == 0:
            self.mean.copy_(mean)
            self.covariance.copy_(covariance)
        else:
            self.mean.lerp_(mean, self.momentum)
            self.covariance.lerp_(covariance, self.momentum)
        self.updates += 1
        _, vectors = torch.linalg.eigh(self.covariance)  # ascending eigenvalues
        self.components.copy_(vectors.flip(-1)[:, :self.components.shape[1]])

    def project(self, samples: torch.Tensor) -> torch.Tensor:
        """Coefficients (N, k) of `samples` (N, D) on the components."""
        return (samples - self.mean) @ self.components

    def reconstruct(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Samples (N, D) from their coefficients (N, k)."""
        return self.mean + coefficients @ self.components.T


class PrincipalLatentSpace(nn.Module):
    """Vector-PCA, then Spatial-PCA, then back to the latent's shape (see the module docstring)."""

    def __init__(self, channels: int, height: int, width: int, vector_components: int, spatial_components: int,
                 momentum: float = 0.1):
        super().__init__()
        self.shape = (int(channels), int(height), int(width))
        self.vector = RunningPCA(channels, vector_components, momentum)
        self.spatial = RunningPCA(height * width, spatial_components, momentum)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        b, c, h, w = latent.shape
        if (c, h, w) != self.shape:
            raise ValueError(f"PrincipaLS: expected latents of shape (B, {', '.join(map(str, self.shape))}), "
                             f"got {tuple(latent.shape)}")
        vectors = latent.permute(0, 2, 3, 1).reshape(-1, c)  # (B·h·w, C)
        if self.training:
            self.vector.update(vectors)
        coefficients = self.vector.project(vectors)  # (B·h·w, k_v)
        k_v = coefficients.shape[1]
        maps = coefficients.view(b, h * w, k_v).transpose(1, 2).reshape(b * k_v, h * w)
        if self.training:
            self.spatial.update(maps)
        maps = self.spatial.reconstruct(self.spatial.project(maps))
        coefficients = maps.view(b, k_v, h * w).transpose(1, 2).reshape(b * h * w, k_v)
        return self.vector.reconstruct(coefficients).view(b, h, w, c).permute(0, 3, 1, 2)
