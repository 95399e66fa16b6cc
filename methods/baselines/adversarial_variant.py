"""`<method>-adv`: a baseline's adversarial adaptation (PatchGuard appendix E), made from the baseline.

Appendix E adapts each baseline the same way: an adversarially trained (robust) ImageNet backbone
where the method uses a pretrained one, and adversarial training of the method's own trainable
parts where it has any. In code an adaptation is the baseline class with other presets: the same
config dataclass, `changes` applied to every preset (plus `paper`/`quick` to one of them), and a
registry entry `<base.name>-adv`.
"""
from __future__ import annotations

import dataclasses

from robustad.core.profiles import Profile
from robustad.methods.registry import register_method


def register_adversarial_variant(base: type, description: str, *, changes: dict, paper: dict | None = None,
                                 quick: dict | None = None) -> type:
    """Registers and returns `<base.name>-adv`, a subclass of `base` whose presets are the base's with
    `changes` (and `paper` / `quick` on those presets). `description` is its docstring (the first
    line is what `bench list methods` shows)."""
    per_profile = {Profile.PAPER: paper or {}, Profile.QUICK: quick or {}}
    profiles = {profile: dataclasses.replace(preset, **changes, **per_profile.get(profile, {}))
                for profile, preset in base.profiles.items()}
    name = f"{base.name}-adv"
    variant = type(f"{base.__name__}Adv", (base,), {
        "__doc__": description,
        "__module__": base.__module__,
        "name": name,
        "display_name": f"{base.display_name or base.__name__} (adv.)",
        "profiles": profiles,
    })
    return register_method(name)(variant)
