"""A detector for the executor tests (issue #27): its fit sleeps, and logs when it starts and ends.

`fit` appends `start <category>/seed<seed> <pid> <time>` to `config.fit_log`, sleeps `config.fit_seconds`, learns
the mean image, and appends `end ...`: the tests count trainings from that log
(a fit killed midway has a start and no end) and see when fits overlapped. Its M(x) is a fixed
smoothing of |x - mean| on an 8×8 grid: cheap, differentiable in the pixels, and it finds the
synthetic blobs of `tests/synthetic.py`. Importable in worker processes and SLURM tasks as
`tests.sleepy_detector:SleepyDetector` (run from the repository root).
"""
from __future__ import annotations

import dataclasses
import os
import time

import torch
import torch.nn.functional as F

from robustad.core.profiles import Profile
from robustad.methods.detector import Detector, DetectorConfig

METHOD = "tests.sleepy_detector:SleepyDetector"


@dataclasses.dataclass
class SleepyConfig(DetectorConfig):
    image_size: int = 32
    fit_seconds: float = 2.0
    fit_log: str = ""  # file each fit appends its start and end lines to ("" for none)


class SleepyDetector(Detector):
    name = "sleepy"
    config_class = SleepyConfig
    profiles = {Profile.QUICK: SleepyConfig()}

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))

    def forward(self, images):
        distance = (images - self.mean).abs().mean(dim=1, keepdim=True)
        return F.adaptive_avg_pool2d(distance, 8)[:, 0] * 10

    def fit(self, train_set):
        category = f"{train_set.category}/seed{torch.initial_seed()}"
        self._log("start", category)
        time.sleep(float(self.config.fit_seconds))
        images = torch.stack([train_set[i]["image"] for i in range(len(train_set))])
        self.mean = images.mean(dim=(0, 2, 3), keepdim=True)
        self._log("end", category)

    def _log(self, event: str, category: str) -> None:
        if self.config.fit_log:
            with open(self.config.fit_log, "a") as handle:
                handle.write(f"{event} {category} {os.getpid()} {time.time():.3f}\n")


def read_fit_log(path) -> list[tuple[str, str, int, float]]:
    """The log's lines as (event, category, pid, time)."""
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path).read().splitlines():
        event, category, pid, at = line.split()
        out.append((event, category, int(pid), float(at)))
    return out
