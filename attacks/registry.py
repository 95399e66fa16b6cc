"""The attack registry and factory: `create_attack("pgd-1000", norm="linf", eps=8/255)`."""
from __future__ import annotations

import inspect
from typing import Any

from robustad.attacks.threat_model import ThreatModel, parse_eps
from robustad.core.parsing import split_steps_suffix
from robustad.core.registry import Registry, drop_none

ATTACKS: Registry = Registry("attack")
register_attack = ATTACKS.register

THREAT_FIELDS = ("norm", "eps", "steps", "step_size", "restarts", "random_start", "seed")


def split_attack_name(name: str) -> tuple[str, int | None]:
    """"pgd-1000" -> ("pgd", 1000); "sea" -> ("sea", None); a suffix of an unknown base is kept."""
    name = name.strip().lower()
    if name in ATTACKS:
        return name, None
    base, steps = split_steps_suffix(name)
    return (base, steps) if base in ATTACKS else (name, None)


def constructor_options(cls) -> dict:
    """The keyword parameters of `cls.__init__`, following `**kwargs` up the class hierarchy."""
    accepted = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        accepted.update({k: p for k, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)})
        if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            return accepted
    return accepted


def takes_default_steps(name: str) -> bool:
    """Whether `name` runs the profile's (or --steps') number of iterations: not when it carries
    `-N`, is FGSM (one step) or counts queries (its own budget); `worst:` when any member does."""
    if name.startswith("worst:"):
        return any(takes_default_steps(m) for m in worst_members(name))
    base, suffix = split_attack_name(name)
    cls = ATTACKS.get(base) if base in ATTACKS else None
    return not (suffix is not None or base == "fgsm" or getattr(cls, "steps_are_queries", False))


def worst_members(name: str) -> list[str]:
    """The member names of `worst:A,B,...`."""
    members = [m.strip() for m in name[len("worst:"):].split(",") if m.strip()]
    if not members:
        raise ValueError("worst: needs at least one attack, e.g. worst:pgd,sea")
    return members


def create_attack(name: str, *, norm: str = "linf", eps: float | str = 8 / 255, steps: int | None = None, **options: Any):
    """Builds a callable `attack(detector, images, masks, labels=None, calibration=None)`.

    `name` is a registered attack, `name-STEPS` (e.g. `pgd-1000`) or `worst:A,B,...` (the
    per-image worst case over the listed attacks). Options left as None keep the attack's default.
    `steps` given explicitly overrides a `-STEPS` suffix, except inside `worst:`, where every
    member keeps its own budget: `-N` when it has one, else `steps` for an iterative attack and
    its own default for a query-based one (`worst:pgd-20,pgd-100` is PGD-20 and PGD-100 whatever
    `steps` is).
    """
    options = drop_none(options)
    if name.startswith("worst:"):
        from robustad.attacks.worst_case import WorstCase

        built = [create_attack(m, norm=norm, eps=eps, steps=steps if takes_default_steps(m) else None, **options)
                 for m in worst_members(name)]
        return WorstCase(built)
    base, suffix_steps = split_attack_name(name)
    cls = ATTACKS.get(base)
    steps = steps if steps is not None else suffix_steps
    threat_kw = {k: options.pop(k) for k in THREAT_FIELDS if k in options}
    threat_kw.update(norm=norm, eps=parse_eps(eps))
    if steps is not None:
        threat_kw["steps"] = int(steps)
    elif getattr(cls, "default_steps", None):
        threat_kw["steps"] = cls.default_steps
    threat = ThreatModel(**threat_kw)
    accepted = constructor_options(cls)
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        valid = sorted(k for k in accepted if k not in ("self", "threat")) + list(THREAT_FIELDS)
        raise ValueError(f"attack {base!r} has no option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return cls(threat, **options)
