"""Training perturbations carried from one epoch to the next (ATTA: Zheng et al., "Efficient
Adversarial Training with Transferable Adversarial Examples", CVPR 2020, arXiv:1912.11969).

With `train_reuse_perturbation=true` each training image's PGD starts at the perturbation its
previous visit ended with, instead of at x: across epochs the steps accumulate, so the training
attack approaches the inner maximum that a short PGD (5 steps in `quick`) alone under-estimates,
at no extra cost per step. Not in the PatchGuard paper or its code.

Two slots per training image: one for the normal image, one for its pseudo anomaly (a fresh
anomaly every epoch, so that slot's perturbation transfers outside the new anomaly's rectangle
and PGD corrects it inside). Stored in float16 (a perturbation is at most ε = 8/255, float16
keeps ~3 significant digits): 2 · N · 3 · H · W · 2 bytes, 3 MB for 64 images at 64 px,
240 MB for 400 images at 224 px, on the training device.
"""
from __future__ import annotations

import torch


class PerturbationMemory:
    """δ per training image and slot (0: normal, 1: pseudo anomaly), zero until first stored."""

    SLOTS = 2

    def __init__(self, count: int, image_shape: tuple, device: torch.device | str = "cpu"):
        if count < 1:
            raise ValueError(f"PerturbationMemory needs at least one image, got count={count}")
        self.deltas = torch.zeros(self.SLOTS, count, *image_shape, dtype=torch.float16, device=device)

    def _rows(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = index.to(self.deltas.device).long()
        slots = torch.arange(self.SLOTS, device=index.device).repeat_interleave(len(index))
        return slots, index.repeat(self.SLOTS)

    def recall(self, index: torch.Tensor) -> torch.Tensor:
        """The stored δ of images `index` (B,), normal slots then pseudo-anomaly slots: (2B, C, H, W)."""
        slots, rows = self._rows(index)
        return self.deltas[slots, rows].float()

    def store(self, index: torch.Tensor, delta: torch.Tensor) -> None:
        """Keeps `delta` (2B, C, H, W), laid out as `recall` returns it, for images `index`."""
        slots, rows = self._rows(index)
        if delta.shape[0] != len(rows):
            raise ValueError(f"PerturbationMemory.store: {delta.shape[0]} perturbations for {len(index)} images "
                             f"(expected {len(rows)}: normal then pseudo-anomaly)")
        self.deltas[slots, rows] = delta.detach().to(self.deltas)
