"""The harness's layers (robustad.bench): dependencies point one way, the cell imports no torch, the harness
names no method."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

# What each part of robustad.bench may import of robustad.bench (docs/design.md, "The harness, by layer").
ALLOWED = {
    "results": set(),
    "cells": {"results"},
    "evaluation": {"results", "cells"},
    "grids": {"results", "cells"},
    "run": {"results", "cells", "evaluation"},
    "report": {"results", "cells", "grids"},
}


def bench_modules_after_import(module: str) -> tuple[set[str], bool]:
    """The `robustad.bench` parts loaded by importing `module` (and its submodules) in a fresh process,
    and whether torch was loaded."""
    code = f"""
import importlib, pkgutil, sys
root = importlib.import_module({module!r})
if hasattr(root, "__path__"):
    for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
        importlib.import_module(info.name)
parts = {{name.split(".")[2] for name in sys.modules if name.startswith("robustad.bench.") and name.count(".") >= 2}}
print(",".join(sorted(parts)))
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    return {part for part in out[0].split(",") if part}, out[1] == "True"


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(part):
    loaded, _ = bench_modules_after_import(f"robustad.bench.{part}")
    assert loaded - {part} <= ALLOWED[part], f"robustad.bench.{part} imports {sorted(loaded - {part} - ALLOWED[part])}"


def test_the_cell_module_imports_no_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, robustad.bench.cells; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_the_harness_names_no_method():
    named = re.compile(r"robustad\.methods\.(patchguard|baselines)|== ?['\"]patchguard")
    offenders = [f"{path.relative_to(BENCH)}:{number}" for path in BENCH.rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1) if named.search(line)]
    assert not offenders, offenders


def test_published_names_still_work():
    from robustad.bench.records import Record
    from robustad.bench.results.records import Record as RecordItself
    from robustad.bench.runner import CellSpec, run_cell, run_cells

    assert Record is RecordItself and callable(run_cell) and callable(run_cells)
    assert CellSpec.__module__ == "robustad.bench.cells"
    out = subprocess.run([sys.executable, "-m", "robustad.bench.worker", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "JOB_FILE" in out.stdout.upper()
