"""A tiny, fast, undefended detector for tests: a small CNN giving 8×8 patch logits at 32 px.

`fit` trains it for a few hundred steps to segment synthetic blobs pasted on the normal training
images, so it localizes real defects well and, being undefended, collapses under attack.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from robustad.core.profiles import Profile
from robustad.methods.config_fields import in_range
from robustad.methods.detector import Detector, DetectorConfig


@dataclasses.dataclass
class TinyConfig(DetectorConfig):
    image_size: int = 32
    top_k: int = 3
    width: int = in_range(16, low=1)
    steps: int = in_range(150, low=1)
    lr: float = in_range(3e-3, low=0, low_open=True)


class TinyDetector(Detector):
    name = "tiny"
    config_class = TinyConfig
    profiles = {Profile.QUICK: TinyConfig(), Profile.PAPER: TinyConfig(steps=300)}

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        w = self.config.width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv2d(w, 1, 1),
        )
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))

    def forward(self, images):
        return self.net(images - self.mean)[:, 0]

    def fit(self, train_set):
        images = torch.stack([train_set[i]["image"] for i in range(len(train_set))])
        self.mean = images.mean(dim=(0, 2, 3), keepdim=True)
        gen = torch.Generator().manual_seed(0)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        self.train()
        size = images.shape[-1]
        for _ in range(self.config.steps):
            idx = torch.randint(0, len(images), (16,), generator=gen)
            x = images[idx].clone()
            masks = torch.zeros(len(x), 1, size, size)
            for j in range(len(x) // 2):
                h, w = torch.randint(size // 6, size // 3, (2,), generator=gen).tolist()
                y0 = int(torch.randint(0, size - h, (1,), generator=gen))
                x0 = int(torch.randint(0, size - w, (1,), generator=gen))
                factor = 0.6 if torch.rand(1, generator=gen) < 0.5 else 1.45
                x[j, :, y0:y0 + h, x0:x0 + w] = (x[j, :, y0:y0 + h, x0:x0 + w] * factor).clamp(0, 1)
                masks[j, :, y0:y0 + h, x0:x0 + w] = 1
            logits = self(x)
            targets = (F.adaptive_avg_pool2d(masks, logits.shape[-2:])[:, 0] > 0.05).float()
            loss = F.binary_cross_entropy_with_logits(logits, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.eval()
