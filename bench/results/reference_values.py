"""The published figures beside the measured ones in `bench report`, through `bench/results/reference.py`
(`load_reference("paper")`, the paper's tables as package data, or a user's CSV in that format)."""
from __future__ import annotations

from robustad.bench.results.reference import load_reference, method_defaults


def load_reference_or_none(source: str | None, log=print):
    """The reference figures of `source` ("paper" or a CSV path), or None for "none"/None. A CSV
    that cannot be read is an error naming it."""
    if source is None or str(source).lower() == "none":
        return None
    return load_reference(source)


def reference_value(reference, *, method: str, dataset: str, category: str, task: str, attack: str, norm: str,
                    eps: str, config: dict | None, profile: str = "paper"):
    """The reference's value (`.clean`, `.adversarial`, `.table`, `.label`, `.note`) or None.

    An override equal to the method's default (at the record's profile) counts as none, as in
    `bench table --reference`."""
    if reference is None:
        return None
    defaults = method_defaults(method, profile)
    extra = {"defaults": defaults} if defaults is not None else {}
    try:
        return reference.lookup(method=method, dataset=dataset, category=category, task=task, attack=attack,
                                norm=norm, eps=eps, config=config or None, **extra)
    except (KeyError, ValueError):
        return None
