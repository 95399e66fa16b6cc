"""Evaluation grids as data: the paper's tables as TOML files (`paper/`), parsed and expanded into
cells (`grid.py`). Imports `bench.cells` and `bench.results`."""
