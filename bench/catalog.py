"""What `bench list` prints, read from the plug-in sources without importing them (no torch).

Importing the registries loads torch and every plug-in (tens of seconds on a busy machine); the
list only needs each plug-in's name and the first line of its docstring, which the sources hold:
`@register_attack("pgd")` / `@register_method(...)` / `@register_dataset(...)` on a class, and
`register_adversarial_variant(Base, "description", ...)` for a baseline's `-adv` variant.
`tests/test_catalog.py` checks that this static view equals the imported registries.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = {"methods": "methods", "attacks": "attacks", "datasets": "datasets"}
DECORATORS = {"methods": "register_method", "attacks": "register_attack", "datasets": "register_dataset"}
COMPOSITE = ("worst:A,B,...", "the per-image worst case over the listed attacks, each with its own budget "
             "(e.g. worst:pgd-100,square)")


def _source_root(kind: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(f"robustad.{PACKAGES[kind]}")
    return Path(next(iter(spec.submodule_search_locations)))


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n")[0]


def _literal(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def entries_in(tree: ast.Module, decorator: str) -> list[tuple[str, str]]:
    """(name, description) of every plug-in a module registers."""
    classes, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == decorator and deco.args
                        and _literal(deco.args[0])):
                    name = _literal(deco.args[0])
                    classes[node.name] = name
                    description = _literal(deco.args[1]) if len(deco.args) > 1 else None
                    found.append((name, _first_line(description or ast.get_docstring(node))))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_adversarial_variant"
                and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id in classes):
            found.append((f"{classes[node.args[0].id]}-adv", _first_line(_literal(node.args[1]))))
    return found


def static_entries(kind: str) -> list[tuple[str, str]]:
    """Sorted (name, description) of the built-in plug-ins of `kind` (methods, attacks, datasets)."""
    found = []
    for path in sorted(_source_root(kind).rglob("*.py")):
        found += entries_in(ast.parse(path.read_text(), filename=str(path)), DECORATORS[kind])
    return sorted(found)


def listing(kinds: list[str]) -> str:
    lines = []
    for kind in kinds:
        entries = static_entries(kind) + ([COMPOSITE] if kind == "attacks" else [])
        width = max(len(name) for name, _ in entries)
        lines.append(f"{kind}:")
        lines += [f"  {name.ljust(width)}  {description}" for name, description in entries]
    if "methods" in kinds:
        lines.append("  (and package.module:Class, a Detector of your own)")
    return "\n".join(lines)
