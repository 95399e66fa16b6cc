"""The base of detection-only detectors: M(x) is one cell per image, (B, 1, 1), and S(x) its value.

The Detector contract's `localizes = False` declaration (methods/detector.py): the harness gives
such a detector no pixel metrics and refuses the localization objective. Subclasses implement
`image_scores(images) -> (B,)`, differentiable in the images; `forward` wraps it as M(x).
"""
from __future__ import annotations

import torch

from robustad.methods.detector import Detector


class ImageScoreDetector(Detector):
    """A detector whose whole output is one anomaly score per image (higher = more anomalous)."""

    localizes = False

    def image_scores(self, images: torch.Tensor) -> torch.Tensor:
        """S(x), shape (B,), differentiable in `images` (B, 3, H, W) in [0, 1]."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name}: expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        return self.image_scores(images).view(-1, 1, 1)

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """S(x) = M[:, 0, 0] (M is one cell per image)."""
        if logits.dim() != 3 or tuple(logits.shape[1:]) != (1, 1):
            raise ValueError(f"{self.name}: M(x) of a detection-only method is (B, 1, 1), got {tuple(logits.shape)}")
        return logits[:, 0, 0]
