"""Profiles: the paper's setting and a CPU-sized one, as two instances of one dataclass.

`paper` is the PatchGuard paper's protocol (PGD-1000 at test time, a GPU). `quick` runs the same
code path sized for a 2-core CPU. A method's own sizes (image size, model, epochs) live in that
method's config presets, keyed by the same `Profile`.
"""
from __future__ import annotations

from dataclasses import dataclass

from robustad.bench.choices import Choice


class Profile(Choice):
    PAPER = "paper"
    QUICK = "quick"


@dataclass(frozen=True)
class EvalSettings:
    """How the runner evaluates a cell under a profile."""

    attack_steps: int  # default number of attack iterations when --steps is not given
    batch_size: int  # test batch size
    max_test_images: int | None  # cap on test images per category (None: all)


EVAL_SETTINGS = {
    Profile.PAPER: EvalSettings(attack_steps=1000, batch_size=16, max_test_images=None),
    Profile.QUICK: EvalSettings(attack_steps=20, batch_size=16, max_test_images=None),
}
