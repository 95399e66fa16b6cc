"""The method registry and factory: `create_method("patchguard", profile="quick", alpha=0)`.

A name is either a registered method or `package.module:Class`, a user's own Detector subclass
importable from the current directory or the Python path.
"""
from __future__ import annotations

import importlib
import inspect
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


def takes_config(cls: type) -> bool:
    """Whether a Detector class accepts a config (`__init__(self, config=None, **overrides)`, as the
    built-in methods) or is a config-less plug-in (`__init__(self)`)."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return bool(parameters)


def _refuse_config(name: str, cls: type, keys) -> None:
    raise ValueError(f"--method {name!r}: {cls.__name__} takes no config (its constructor has no arguments), "
                     f"so --config {', '.join(sorted(keys))} cannot be applied; give the class a config "
                     f"dataclass (see the Detector contract) or drop --config")


def method_config(name: str, profile: str | Profile = Profile.QUICK, **overrides: Any):
    """The config `create_method` would build, without building the detector (checks names, keys and
    domains before any work); None for a config-less plug-in (which refuses overrides)."""
    from robustad.methods.detector import make_config

    cls = resolve_method(name)
    profile = Profile.parse(profile)
    overrides = drop_none(overrides)
    if not takes_config(cls):
        if overrides:
            _refuse_config(name, cls, overrides)
        return None
    return make_config(cls, profile_preset(cls, profile), **overrides)


def profile_preset(cls, profile: Profile):
    """The method's preset for `profile`. A method without its own `official` preset takes its `paper`
    one (its paper's settings are what its authors' code ships); one without a `long` preset, `quick`."""
    fallbacks = (Profile.PAPER,) if profile is Profile.OFFICIAL else ()
    for candidate in (profile, *fallbacks, Profile.QUICK):
        if candidate in cls.profiles:
            return cls.profiles[candidate]
    return cls.config_class()


def typed_config_overrides(name: str, profile: str | Profile, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` ("0", "8/255", "true" ...) as the values the method's config stores (0.0, 0.0313..., True)."""
    config = method_config(name, profile, **overrides)
    return {key: getattr(config, key) for key in overrides} if config is not None else {}


def create_method(name: str, *, profile: str | Profile = Profile.QUICK, seed: int | None = None, **config: Any):
    """Builds a detector: the profile's config preset with `config` overrides (None values ignored).

    `seed`: when given, every random generator is seeded with it (`robustad.core.seeding`) right
    before the detector is constructed, so its initial weights are a function of the seed; seed
    again before `fit` (the runner does both). A config-less plug-in (`__init__(self)`) is built
    as `cls()` and refuses config overrides.
    """
    built = method_config(name, profile, **config)
    cls = resolve_method(name)
    if seed is not None:
        seed_everything(seed)
    return cls() if built is None else cls(built)
