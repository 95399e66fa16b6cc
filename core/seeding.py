"""One seed for every random generator a cell relies on (Detector contract, docs/design.md).

The rule: the runner (and `bench check`, the benchmark scripts, `create_method(..., seed=S)`)
calls `seed_everything(seed)` right before a detector is constructed and again right before its
`fit`. Construction (initial weights) and training are then functions of the cell's seed alone.
A method draws its randomness from torch's global generator, or, where it keeps a generator of its
own (a `torch.Generator` passed to sampling helpers), gets it from `derived_generator()` inside
`fit`, so that generator follows the seed too. No method seeds itself from a config field.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seeds Python's `random`, NumPy's global generator and torch (CPU and every CUDA device)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices (lazily, when CUDA is initialized)


def derived_generator(device: str | torch.device = "cpu") -> torch.Generator:
    """A new `torch.Generator` seeded by one draw of torch's global generator.

    Under `seed_everything(s)` it is the same generator for the same `s` and the same earlier draws.
    The draw, an integer in [0, 2³¹ − 1), is the one PatchGuard's `fit` always made, so the models
    of its earlier seeded runs are reproduced exactly.
    """
    seed = int(torch.randint(0, 2**31 - 1, (1,)))
    return torch.Generator(device=device).manual_seed(seed)
