"""A config field's domain, declared next to the field, and one check for all of them.

    top_k: int = in_range(5, low=1)
    reg_type: str = one_of("paper", ("paper", "kl"))
    anomaly_size: tuple = in_range((0.05, 0.3), low=0, high=1, low_open=True, length=2, ordered=True)

`check_config(config)` (run by `DetectorConfig.__post_init__`) refuses a value outside its domain
with a `ConfigValueError` naming the field, the value and what is allowed; for a tuple the domain
applies to every element. Fields declared plainly (`lr: float = 8e-4`) are not checked.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any


class ConfigValueError(ValueError):
    """A config field holds a value outside its declared domain."""

    def __init__(self, field: str, value: Any, expected: str):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"config field {field}={value!r}: expected {expected}")


def one_of(default, choices) -> Any:
    """A field whose value must be one of `choices`."""
    return dataclasses.field(default=default, metadata={"choices": tuple(choices)})


def in_range(default, low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False, length: int | None = None, ordered: bool = False) -> Any:
    """A number (or every number of a tuple) in [low, high]; `low_open`/`high_open` exclude the bound.

    For tuples: `length` fixes the number of elements, `ordered` requires them non-decreasing.
    """
    domain = {"low": low, "high": high, "low_open": low_open, "high_open": high_open, "length": length,
              "ordered": ordered}
    return dataclasses.field(default=default, metadata={"range": domain})


def describe_range(domain: dict, integer: bool) -> str:
    kind = "an integer" if integer else "a number"
    low, high = domain["low"], domain["high"]
    if low is not None and high is not None:
        left, right = "(" if domain["low_open"] else "[", ")" if domain["high_open"] else "]"
        return f"{kind} in {left}{low:g}, {high:g}{right}"
    if low is not None:
        return f"{kind} {'>' if domain['low_open'] else '>='} {low:g}"
    if high is not None:
        return f"{kind} {'<' if domain['high_open'] else '<='} {high:g}"
    return kind


def within(value, domain: dict) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    low, high = domain["low"], domain["high"]
    if low is not None and (value <= low if domain["low_open"] else value < low):
        return False
    if high is not None and (value >= high if domain["high_open"] else value > high):
        return False
    return True


def check_field(field: dataclasses.Field, value) -> None:
    if "choices" in field.metadata:
        if value not in field.metadata["choices"]:
            raise ConfigValueError(field.name, value, "one of " + ", ".join(map(str, field.metadata["choices"])))
    if "range" not in field.metadata:
        return
    domain = field.metadata["range"]
    integer = isinstance(field.default, int) or (isinstance(field.default, tuple) and field.default
                                                 and isinstance(field.default[0], int))
    what = describe_range(domain, bool(integer))
    if isinstance(value, (tuple, list)):
        if domain["length"] is not None and len(value) != domain["length"]:
            raise ConfigValueError(field.name, value, f"{domain['length']} comma-separated values, each {what}")
        if not value or not all(within(v, domain) for v in value):
            raise ConfigValueError(field.name, value, f"comma-separated values, each {what}")
        if domain["ordered"] and any(a > b for a, b in zip(value, value[1:])):
            raise ConfigValueError(field.name, value, f"values in increasing order (LOW,HIGH), each {what}")
    elif not within(value, domain):
        raise ConfigValueError(field.name, value, what)


def check_config(config) -> None:
    """Raises `ConfigValueError` for the first field of `config` outside its declared domain."""
    for field in dataclasses.fields(config):
        check_field(field, getattr(config, field.name))


def normalize_numbers(config) -> None:
    """Stores numbers as the type of the field's default: `alpha=0` becomes 0.0, so equal configs
    compare (and hash into cell ids and checkpoint keys) equal; tuples element by element."""
    for field in dataclasses.fields(config):
        default, value = field.default, getattr(config, field.name)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            setattr(config, field.name, float(value))
        elif isinstance(default, tuple) and isinstance(value, (tuple, list)):
            if default and isinstance(default[0], float):
                value = tuple(float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value)
            setattr(config, field.name, tuple(value))
