"""The published names of the runner, kept for users' scripts: `CellSpec` (`bench/cells.py`) and
`run_cell`, `run_cells` (`bench/evaluation/group.py`)."""
from robustad.bench.cells import CellSpec
from robustad.bench.evaluation.group import run_cell, run_cells

__all__ = ["CellSpec", "run_cell", "run_cells"]
