"""`bench grid list|show` and `bench run --grid`: grid files (`bench/grids/grid.py`) on the command line."""
from __future__ import annotations

import os
import sys

from robustad.bench.grids.grid import count_trainings, describe_grid, expand_grid, grid_summary_line, load_grid, \
    shipped_grids


def parse_roots(items: list[str] | None) -> dict:
    """`--root` items as {dataset: DIR}, with {None: DIR} for a plain `--root DIR` (every dataset).

    `mvtec=/data/mvtec` names the dataset when the part before `=` is a registered dataset (so a
    folder whose name holds `=` still works as a plain root)."""
    roots: dict = {}
    for item in items or []:
        name, sep, folder = item.partition("=")
        dataset = name.strip() if sep and _is_dataset(name.strip()) else None
        path = folder.strip() if dataset else item.strip()
        if not path:
            raise ValueError(f"--root {item!r}: expected DIR or DATASET=DIR")
        if dataset in roots:
            which = f"dataset {dataset}" if dataset else "every dataset (a plain --root DIR)"
            raise ValueError(f"--root {item!r}: a second root for {which}; give one per dataset as DATASET=DIR")
        roots[dataset] = os.path.expanduser(path)  # `mvtec=~/data` where the shell left the ~
    return roots


def _is_dataset(name: str) -> bool:
    from robustad.datasets.registry import DATASETS

    return bool(name) and name in DATASETS


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def grid_specs(args) -> list:
    """The runnable cells of `--grid` as CellSpecs; what cannot run is printed, never dropped silently."""
    from robustad.bench.run.validation import check_eps, check_results_writable

    grid = load_grid(args.grid)
    cells, blocked = expand_grid(grid, parse_roots(args.root), profile=args.profile, seeds=args.seed)
    args.profile = args.profile or grid.profile
    runnable = [cell for cell in cells if cell not in blocked]
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    log(f"grid {grid.name}: {_plural(len(cells), 'cell')}, {_plural(count_trainings(cells), 'training')}; "
        f"runnable here: {_plural(len(runnable), 'cell')}")
    if blocked:
        reasons: dict[str, list] = {}
        for cell, reason in blocked.items():
            reasons.setdefault(reason, []).append(cell)
        for reason, of_reason in reasons.items():
            log(f"  not run: {_plural(len(of_reason), 'cell')}: {reason}")
    if not runnable:
        log(f"bench: error: no cell of grid {grid.name} can run here (see `bench grid show {args.grid}`)")
        return []
    for norm in sorted({cell.norm for cell in runnable}):
        from robustad.core.parsing import parse_eps

        check_eps(norm, sorted({parse_eps(cell.eps_text) for cell in runnable if cell.norm == norm}))
    check_results_writable(args.results)
    return [cell.to_spec() for cell in runnable]


def cmd_grid(args) -> int:
    roots = parse_roots(args.root)
    if args.grid_command == "list":
        print(f"{'grid':<16} {'':>6} {'':>5} {'':>9}  (bench grid show NAME for details; runnable with the roots given)")
        for name in shipped_grids():
            grid = load_grid(name)
            cells, blocked = expand_grid(grid, roots)
            print(grid_summary_line(grid, cells, blocked))
        return 0
    grid = load_grid(args.name)
    cells, blocked = expand_grid(grid, roots, profile=args.profile)
    print(describe_grid(grid, cells, blocked))
    return 0
