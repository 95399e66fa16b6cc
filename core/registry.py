"""A registry of named plug-ins (methods, attacks, datasets), filled by a decorator.

One instance per kind lives in that kind's package (`robustad.methods.registry`, ...). A
duplicate name is an error, and an unknown name lists the valid ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that no plug-in of the kind was registered under."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    target: T
    description: str


class Registry(Generic[T]):
    """Maps names to plug-ins of one kind (`kind` is used in messages, e.g. "attack")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str | None = None) -> Callable[[T], T]:
        """Decorator: `@ATTACKS.register("pgd")` on a class or factory function.

        The description defaults to the first line of the target's docstring.
        """

        def decorate(target: T) -> T:
            if name in self._entries:
                raise ValueError(
                    f"{self.kind} {name!r} is registered twice "
                    f"({self._entries[name].target!r} and {target!r})"
                )
            doc = description or (getattr(target, "__doc__", None) or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, target, doc)
            return target

        return decorate

    def unregister(self, name: str) -> None:
        """Removes a plug-in (tests that register a temporary one clean up with this)."""
        if name not in self._entries:
            raise UnknownNameError(f"{self.kind} {name!r} is not registered")
        del self._entries[name]

    def get(self, name: str) -> T:
        try:
            return self._entries[name].target
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]


def drop_none(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments without the unset (None) ones, so a CLI default never overrides a plug-in's."""
    return {k: v for k, v in kwargs.items() if v is not None}
