"""A detector whose logits are a·M + c (a > 0): the same detector to every AUROC.

docs/design.md: "Detectors' logits have any scale and offset ... an attack's strength must not change
when M becomes a·M + c (a > 0)". `AffineLogits(detector, scale=a, shift=c)` is that detector:
forward returns a·M(x) + c, the image score is a·S(x) + c and the pixel map a·map(M) + c, so clean
and adversarial image and pixel AUROC are those of `detector` whenever an attack finds the same
images. `bench check` (`logit_shift_invariance`), the tests and `benchmarks/attack_invariance.py`
attack both and compare.

The inner detector's own score and map are used (on the inner logits of the same forward when the
score is asked for the tensor `forward` just returned, as PatchCore's reweighted score needs), so a
detector whose score is not a function of M alone keeps its score.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn


class AffineLogits(nn.Module):
    """`detector` with logits `scale`·M + `shift` (scale > 0), image scores and maps transformed alike."""

    def __init__(self, detector: nn.Module, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        if not float(scale) > 0:
            raise ValueError(f"AffineLogits: scale must be > 0 (a strictly increasing map), got {scale}")
        self.detector = detector
        self.scale = float(scale)
        self.shift = float(shift)
        self._last_outer = None  # weakref to the last tensor forward returned
        self._last_inner = None  # the inner logits it came from

    @property
    def image_size(self):
        return self.detector.image_size

    @property
    def config(self):
        return self.detector.config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inner = self.detector(images)
        outer = inner * self.scale + self.shift
        self._last_outer, self._last_inner = weakref.ref(outer), inner
        return outer

    def _inner(self, logits: torch.Tensor) -> torch.Tensor:
        if self._last_outer is not None and self._last_outer() is logits:
            return self._last_inner
        return (logits - self.shift) / self.scale

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        return self.detector.score(self._inner(logits)) * self.scale + self.shift

    def anomaly_map(self, logits: torch.Tensor, size) -> torch.Tensor:
        return self.detector.anomaly_map(self._inner(logits), size) * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"scale={self.scale}, shift={self.shift}"
