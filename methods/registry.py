"""The method registry and factory: `create_method("patchguard", profile="quick", alpha=0)`.

A name is either a registered method or `package.module:Class`, a user's own Detector subclass
importable from the current directory or the Python path.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from robustad.core.profiles import Profile
from robustad.core.registry import Registry, drop_none
from robustad.core.seeding import seed_everything

METHODS: Registry = Registry("method")
register_method = METHODS.register


def resolve_method(name: str) -> type:
    """The Detector class for a registered name or a `package.module:Class` path."""
    from robustad.methods.detector import Detector

    if ":" in name:
        module_name, _, class_name = name.partition(":")
        cwd = str(Path.cwd())
        if cwd not in sys.path:  # like `python -m`: the user's own package in the working directory
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"--method {name!r}: cannot import module {module_name!r} ({err})") from err
        cls = getattr(module, class_name, None)
        if cls is None:
            raise ValueError(f"--method {name!r}: module {module_name!r} has no attribute {class_name!r}")
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise ValueError(f"--method {name!r}: {class_name} is not a robustad.methods.Detector subclass")
        return cls
    return METHODS.get(name)


def create_method(name: str, *, profile: str | Profile = Profile.QUICK, seed: int | None = None, **config: Any):
    """Builds a detector: the profile's config preset with `config` overrides (None values ignored).

    `seed`: when given, every random generator is seeded with it (`robustad.core.seeding`) right
    before the detector is constructed, so its initial weights are a function of the seed; seed
    again before `fit` (the runner does both).
    """
    cls = resolve_method(name)
    profile = Profile.parse(profile)
    preset = cls.profiles.get(profile)
    if preset is None:
        preset = cls.profiles.get(Profile.QUICK) or cls.config_class()
    if seed is not None:
        seed_everything(seed)
    return cls(preset, **drop_none(config))
