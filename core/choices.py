"""Closed vocabularies (norm, objective, loss, profile) as enums, parsed once at the boundary."""
from __future__ import annotations

import enum
import re


class Choice(str, enum.Enum):
    """A string enum whose `parse` accepts a member or its value (any case) and names the options."""

    @classmethod
    def parse(cls, value):
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            label = re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()  # FlipLoss -> "flip loss"
            raise ValueError(
                f"unknown {label} {value!r}; expected one of: {', '.join(m.value for m in cls)}"
            ) from None
