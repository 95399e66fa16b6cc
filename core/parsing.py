"""Parsing the numbers and names users type: "8/255", "1e-3", "pgd-1000". One function each."""
from __future__ import annotations

import math
import re

_STEPS_SUFFIX = re.compile(r"^(?P<name>[A-Za-z0-9_.]+?)-(?P<steps>\d+)$")


def parse_number(text: "str | float") -> float:
    """"0.5", "8/255" or "1e-3" (or a number) as a float; ValueError for anything else."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    raw = str(text).strip()
    try:
        if "/" in raw:
            numerator, denominator = raw.split("/", 1)
            return float(numerator) / float(denominator)
        return float(raw)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a number such as 0.5, 8/255 or 1e-3") from None


def parse_eps(text: "str | float") -> float:
    """An attack budget ε such as "8/255" or "0.0314": a finite number >= 0."""
    try:
        value = parse_number(text)
    except ValueError:
        raise ValueError(f"--eps {text!r}: expected a number such as 8/255 or 0.0314") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"--eps {text!r}: expected a finite number >= 0")
    return value


def split_steps_suffix(name: str) -> tuple[str, int | None]:
    """"pgd-1000" -> ("pgd", 1000); "sea" or "worst:pgd-5,pgd-50" -> (name, None).

    Only a plain name (letters, digits, `_`, `.`) followed by `-N` is split; whether the base is an
    attack is for the caller (the registry) to decide.
    """
    match = _STEPS_SUFFIX.match(name.strip())
    return (match["name"], int(match["steps"])) if match else (name.strip(), None)
