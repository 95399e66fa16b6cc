"""The input check of the localization methods' forward: images (B, 3, S, S) at the detector's size."""
from __future__ import annotations

import torch


def check_images(method: str, images: torch.Tensor, size: int) -> None:
    """Raises a ValueError naming the expected shape (a wrong shape would otherwise broadcast silently)."""
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"{method}: expects images (B, 3, {size}, {size}) in [0, 1], got {tuple(images.shape)}")
