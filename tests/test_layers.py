"""The layers: core imports nothing of robustad; attacks, methods and datasets import core, never bench."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

LOADED = "import sys, json, {module}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('robustad.'))))"


def loaded_by(module: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", LOADED.format(module=module)], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("module", ["robustad.attacks", "robustad.methods", "robustad.datasets"])
def test_plugins_do_not_import_bench(module):
    assert [m for m in loaded_by(module) if m.startswith("robustad.bench")] == []


def test_core_imports_nothing_else_of_robustad():
    modules = loaded_by("robustad.core.registry, robustad.core.choices, robustad.core.profiles, "
                        "robustad.core.cache, robustad.core.seeding, robustad.core.files")
    assert [m for m in modules if not m.startswith("robustad.core")] == []
