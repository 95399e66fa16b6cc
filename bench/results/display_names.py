"""How tables and reports name and order methods, attacks and datasets.

Methods and attacks name themselves: a plug-in class sets `display_name` (e.g. "PatchCore (adv.)")
and `table_order` (columns sort by it, then by name; the paper puts its own method last), so a
user's `package.module:Class` gets a proper label without editing this repository. A name that
cannot be resolved any more (a plug-in no longer importable) is shown as recorded.
"""
from __future__ import annotations

import re

DEFAULT_ORDER = 50

DATASET_NAMES = {  # registry name (lower case, without - and _) -> name in the paper, in its order
    "mvtec": "MVTec AD", "mvtecad": "MVTec AD", "visa": "VisA", "btad": "BTAD", "mpdd": "MPDD",
    "wfdd": "WFDD", "dtd": "DTD-Synthetic", "dtdsynthetic": "DTD-Synthetic", "headct": "Head-CT",
    "brats": "BraTS2021", "brats2021": "BraTS2021", "textures": "Textures",
}


def _method_class(name: str):
    from robustad.methods import resolve_method

    try:
        return resolve_method(name)
    except (KeyError, ValueError, ImportError):
        return None


def _attack_class(name: str):
    from robustad.attacks import ATTACKS

    return ATTACKS.get(name) if name in ATTACKS else None


def method_display_name(name: str) -> str:
    """"patchcore-adv" -> "PatchCore (adv.)"; a label with config overrides keeps them: "PatchGuard (alpha=0.0)"."""
    base, sep, variant = name.partition(" (")
    cls = _method_class(base)
    shown = getattr(cls, "display_name", None) or (base.rpartition(":")[2] if ":" in base else base)
    return shown + (f" ({variant}" if sep else "")


def method_table_order(name: str) -> int:
    return int(getattr(_method_class(name), "table_order", DEFAULT_ORDER))


def attack_display_name(name: str) -> str:
    return getattr(_attack_class(name), "display_name", None) or name


def attack_table_order(name: str) -> int:
    return int(getattr(_attack_class(name), "table_order", DEFAULT_ORDER))


def _key(name: str) -> str:
    return re.sub(r"[-_ ]", "", name.lower())


def dataset_display_name(name: str) -> str:
    return DATASET_NAMES.get(_key(name), name)


def dataset_table_order(name: str) -> int:
    order = list(dict.fromkeys(DATASET_NAMES.values()))
    shown = DATASET_NAMES.get(_key(name))
    return order.index(shown) if shown in order else len(order)
