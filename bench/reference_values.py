"""The published figures beside the measured ones in `bench report`, through `bench/reference.py`
(`load_reference("paper")`, the paper's tables as package data, or a user's CSV in that format).

Kept behind these two functions so the report also works where no reference is wanted (`none`)."""
from __future__ import annotations


def load_reference_or_none(source: str | None, log=print):
    """The reference figures of `source` ("paper" or a CSV path), or None for "none"/None.

    A user's CSV that cannot be read is an error; the paper's figures missing from this
    installation are a warning (the report goes on without them)."""
    if source is None or str(source).lower() == "none":
        return None
    try:
        from robustad.bench.reference import load_reference
    except ImportError:
        if source != "paper":
            raise ValueError(f"--reference {source}: this installation cannot read reference figures "
                             f"(robustad.bench.reference is missing)") from None
        log("warning: no reference figures in this installation; the report shows measured values only")
        return None
    return load_reference(source)


def reference_value(reference, *, method: str, dataset: str, category: str, task: str, attack: str, norm: str,
                    eps: str, config: dict | None, profile: str = "paper"):
    """The reference's value (`.clean`, `.adversarial`, `.table`, `.label`, `.note`) or None.

    An override equal to the method's default (at the record's profile) counts as none, as in
    `bench table --reference`."""
    if reference is None:
        return None
    try:
        from robustad.bench.reference import method_defaults
    except ImportError:  # an older reference module: overrides are compared as given
        method_defaults = None
    try:
        defaults = method_defaults(method, profile) if method_defaults else None
        extra = {"defaults": defaults} if defaults is not None else {}
        return reference.lookup(method=method, dataset=dataset, category=category, task=task, attack=attack,
                                norm=norm, eps=eps, config=config or None, **extra)
    except (KeyError, ValueError):
        return None
