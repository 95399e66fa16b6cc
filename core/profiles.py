"""Profiles: the paper's setting and two CPU-sized ones, as instances of one dataclass.

`paper` is the PatchGuard paper's protocol (PGD-1000 at test time, a GPU). `quick` runs the same
code path sized for a 2-core CPU (about 10-15 minutes per category and method). `long` evaluates as
`quick` does, with the models that need more compute to keep their robustness made larger and
trained longer (PatchGuard: twice the ViT width, three times the epochs, about an hour per
category on 2 cores); a method without a `long` preset uses its `quick` one. `official` is
PatchGuard's official code as its authors ship it (their network, recipe and released weights),
evaluated as `paper`; other methods use their `quick` preset there. A method's own sizes
(image size, model, epochs) live in that method's config presets, keyed by the same `Profile`.
"""
from __future__ import annotations

from dataclasses import dataclass

from robustad.core.choices import Choice


class Profile(Choice):
    PAPER = "paper"
    QUICK = "quick"
    LONG = "long"
    OFFICIAL = "official"  # the authors' code as shipped (PatchGuard: their network, recipe and weights)


@dataclass(frozen=True)
class EvalSettings:
    """How the runner evaluates a cell under a profile."""

    attack_steps: int  # default number of attack iterations when --steps is not given
    batch_size: int  # test batch size
    max_test_images: int | None  # cap on test images per category (None: all)


EVAL_SETTINGS = {
    Profile.PAPER: EvalSettings(attack_steps=1000, batch_size=16, max_test_images=None),
    Profile.QUICK: EvalSettings(attack_steps=20, batch_size=16, max_test_images=None),
    Profile.LONG: EvalSettings(attack_steps=20, batch_size=16, max_test_images=None),
    Profile.OFFICIAL: EvalSettings(attack_steps=1000, batch_size=16, max_test_images=None),
}
