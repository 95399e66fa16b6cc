"""`bench table --grid NAME`: a grid's records laid out as its table in the paper (rows and columns
named by the grid's `[table]`), with the published figures beside them (`--reference`).

Every row and column the grid defines is shown, measured or not: a cell without records is `–`, so
`bench table --grid paper/table4 --reference paper` shows the paper's figures before anything ran.
Records belong to the grid when their method and config, dataset, category, attack and steps,
objective (AD rows: detection, AL rows: localization), norm, ε and profile are the grid's; a
dataset's value is the mean over its categories (`*`: fewer categories measured than the grid has).
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from robustad.bench.grids.grid import Grid, GridCell, expand_grid, load_grid
from robustad.bench.results.reference import TASKS as REFERENCE_TASKS, config_key, method_defaults
from robustad.bench.report.table_render import Compared, Table, Value, render
from robustad.bench.report.tables import (EXTENSIONS, TASK_METRIC, _attack_and_steps, _category_means,
                                   _dataset_mean, _mean, category_name, dataset_name, method_name)
from robustad.core.files import write_text_atomic
from robustad.core.parsing import parse_eps


def _task_of(objective: str) -> str:
    return "ad" if objective == "detection" else "al"


def _dims(cell: GridCell, variant: str) -> dict:
    return {"method": cell.method, "variant": variant, "dataset": cell.dataset, "category": cell.category,
            "task": _task_of(cell.objective), "attack": cell.attack, "eps": cell.eps_text}


def _label(dimension: str, value: str) -> str:
    if dimension == "method":
        return method_name(value)
    if dimension == "dataset":
        return dataset_name(value)
    if dimension == "category":
        return category_name(value)
    if dimension == "task":
        return value.upper()
    if dimension == "attack":
        attack, steps = _attack_and_steps(value, None)
        from robustad.bench.results.display_names import attack_display_name

        return attack_display_name(attack) + (f"-{steps}" if steps else "")
    return value


def _same_attack(record, wanted: str, steps: int | None) -> bool:
    have = _attack_and_steps(record.attack, record.steps)
    want = _attack_and_steps(wanted, steps)
    if want[1] is None:  # a grid attack with its own budget (caa, a3) or the profile's steps
        return have[0] == want[0]
    return have == want


def _cell_of(record, cells_by_key: dict) -> GridCell | None:
    """The grid cell a record measured, or None."""
    key = (record.method, config_key(record.config_overrides), record.dataset, record.category, record.objective,
           record.norm, record.profile)
    for cell in cells_by_key.get(key, ()):
        if _same_attack(record, cell.attack, cell.steps) and math.isclose(
                parse_eps(cell.eps_text), float(record.eps), rel_tol=1e-4, abs_tol=1e-6):
            return cell
    return None


def _published(reference, grid: Grid, cell: GridCell, *, category: str, dataset: str | None = None):
    if reference is None:
        return None
    run = grid.runs[cell.run]
    table = grid.reference_table if reference.short_name == "paper" else None
    task = REFERENCE_TASKS[cell.objective]
    common = dict(method=cell.method, dataset=dataset or cell.dataset, category=category, task=task,
                  attack=cell.attack, steps=cell.steps, norm=cell.norm, eps=cell.eps_text, table=table)
    if run.not_implemented:
        rows = [r for r in reference.matching(**common, any_config=True) if r.value.label == run.label]
    else:
        rows = reference.matching(**common, config=dict(cell.config), defaults=method_defaults(cell.method, cell.profile))
    return rows[0].value if rows else None


def grid_tables(grid: Grid, records: list, reference=None, profile: str | None = None) -> tuple[list[Table], int]:
    """The grid's table(s) and how many records it used."""
    layout = grid.table
    cells, _ = expand_grid(grid, profile=profile)
    variants = {cell: grid.runs[cell.run].label or method_name(cell.method) for cell in cells}
    tasks = layout.tasks
    cells = [c for c in cells if _task_of(c.objective) in tasks]
    cells_by_key: dict = {}
    for cell in cells:
        key = (cell.method, config_key(dict(cell.config)), cell.dataset, cell.category, cell.objective, cell.norm,
               cell.profile)
        cells_by_key.setdefault(key, []).append(cell)
    measured: dict[GridCell, list] = {}
    for record in records:
        cell = _cell_of(record, cells_by_key)
        if cell is not None and not getattr(cell, "not_implemented", None):
            measured.setdefault(cell, []).append(record)
    dims = list(layout.rows) + [layout.columns]
    averaged = "category" not in dims

    def key_of(cell, names):
        values = _dims(cell, variants[cell])
        return tuple(values[n] for n in names)

    # rows and columns in the grid's order of each dimension's values (the paper's order)
    order = {d: list(dict.fromkeys(_dims(c, variants[c])[d] for c in cells)) for d in dims}

    def sort_key(key, names):
        return tuple(order[n].index(v) for n, v in zip(names, key))

    row_keys = sorted(dict.fromkeys(key_of(c, layout.rows) for c in cells), key=lambda k: sort_key(k, layout.rows))
    column_keys = sorted(dict.fromkeys(key_of(c, [layout.columns]) for c in cells),
                         key=lambda k: sort_key(k, [layout.columns]))
    # cells of each (row, column), the dataset's categories for the means
    by_position: dict[tuple, list[GridCell]] = {}
    for cell in cells:
        by_position.setdefault((key_of(cell, layout.rows), key_of(cell, [layout.columns])), []).append(cell)

    def value_of(position_cells: list[GridCell]):
        """(clean, adversarial) Values of one table cell and the cell that speaks for it."""
        first = position_cells[0]
        metric = TASK_METRIC[_task_of(first.objective)]
        mine = [r for c in position_cells for r in measured.get(c, [])]
        if not mine:
            return Value(None), Value(None)
        if averaged:
            n = len({c.category for c in position_cells})
            return _dataset_mean(mine, "clean", metric, n), _dataset_mean(mine, "adversarial", metric, n)
        return (Value(_mean(_category_means(mine, "clean", metric).values())),
                Value(_mean(_category_means(mine, "adversarial", metric).values())))

    def shown(clean: Value, adversarial: Value, published) -> list:
        parts = [("clean", clean), ("adversarial", adversarial)]
        if layout.values == "adversarial":
            parts = parts[1:]
        if reference is None:
            return [value for _, value in parts]
        return [Compared(value, getattr(published, phase) if published else None, reference.short_name)
                for phase, value in parts]

    body, columns_values = [], {column: [] for column in column_keys}
    for row in row_keys:
        line = [_label(d, v) for d, v in zip(layout.rows, row)]
        for column in column_keys:
            position_cells = by_position.get((row, column))
            if not position_cells:
                line.append(Value(None))
                continue
            clean, adversarial = value_of(position_cells)
            columns_values[column].append((clean, adversarial))
            published = _published(reference, grid, position_cells[0],
                                   category="mean" if averaged else position_cells[0].category)
            line.append(shown(clean, adversarial, published))
        body.append(line)
    groups = [body]
    if len(layout.rows) > 1:  # a rule between the values of the first row dimension, as in the paper
        groups, current = [], None
        for row, line in zip(row_keys, body):
            if row[0] != current:
                groups.append([])
                current = row[0]
            groups[-1].append(line)
    if layout.average_row:
        average = ["Average"] + [""] * (len(layout.rows) - 1)
        for column in column_keys:
            pairs = columns_values[column]
            means = []
            for index in (0, 1):
                present = [p[index] for p in pairs if p[index].number is not None]
                complete = bool(present) and len(present) == len(pairs) and all(v.complete for v in present)
                means.append(Value(sum(v.number for v in present) / len(present), complete) if present else Value(None))
            speaker = next(c for (row, col), cs in by_position.items() if col == column for c in cs)
            published = _published(reference, grid, speaker, category="mean", dataset="average")
            average.append(shown(means[0], means[1], published))
        groups.append([average])
    def column_label(column) -> str:
        label = _label(layout.columns, column[0])
        if layout.columns == "method" and label == column[0] and reference is not None:
            # a method robustad does not implement: the published name where there is one
            named = reference.matching(method=column[0], any_config=True)
            label = named[0].value.label if named else label
        return label

    header = [d.capitalize() for d in layout.rows] + [column_label(c) for c in column_keys]
    used = sum(len(v) for v in measured.values())
    what = "Clean / adversarial AUROC (%)" if layout.values != "adversarial" else "Adversarial AUROC (%)"
    caption = (f"{grid.title}. {what}; AD: image AUROC under the detection objective, AL: pixel AUROC under the "
               f"localization objective" + ("; a dataset's value is the mean over its categories" if averaged else "")
               + f"; profile {profile or grid.profile}; {len(measured)} of "
               f"{len([c for c in cells if not c.not_implemented])} runnable cells measured.")
    if reference is not None:
        caption += (f" Beside each value, in parentheses: the published figure ({reference.short_name}: "
                    f"{reference.source}" + (f", table {grid.reference_table}" if grid.reference_table
                                             and reference.short_name == "paper" else "")
                    + ") and the difference, measured minus published.")
    label = "tab:robustad-grid-" + re.sub(r"[^a-z0-9]", "", grid.name.lower())
    return [Table(caption, header, groups, label)], used


def grid_table_path(results, grid: Grid, fmt: str, reference=None) -> Path:
    shipped = not grid.name.endswith(".toml")
    name = "grid_" + re.sub(r"[^A-Za-z0-9]+", "_", grid.name if shipped else Path(grid.name).stem).strip("_")
    name += f"_vs_{reference.short_name}" if reference is not None else ""
    return Path(results).expanduser().resolve() / "tables" / f"{name}.{EXTENSIONS[fmt]}"


def write_grid_table(args, records: list, reference) -> int:
    """`bench table --grid NAME [--reference ...] [--profile P]`: prints the table and saves it."""
    grid = load_grid(args.grid)
    tables, used = grid_tables(grid, records, reference, args.profile)
    text = render(tables, args.format)
    if not used:
        print(f"warning: no record under {args.results} belongs to grid {grid.name} (profile "
              f"{args.profile or grid.profile}); the table shows no measured value", file=sys.stderr)
    print(text)
    path = grid_table_path(args.results, grid, args.format, reference)
    try:
        write_text_atomic(path, text)
    except OSError as err:
        print(f"bench: error: could not save the table as {path} ({err.strerror or err})", file=sys.stderr)
        return 1
    print(f"written to {path}", file=sys.stderr)
    return 0
