"""Evaluation grids as data: TOML files that name every cell of a table, expanded into `bench run` cells.

    bench grid list                        the shipped grids (the paper's Tables 1-21, Figure 2)
    bench grid show paper/table4 [--root mvtec=DIR ...]   cells, trainings, what is not runnable and why
    bench run --grid paper/table4 --root mvtec=DIR --root visa=DIR ...
    bench table --grid paper/table4 [--reference paper]

A grid names itself `paper/table4` (shipped under `bench/grids/paper/`) or is the path of a user's file.
A file holds a title, the reference table its figures come from, the profile and seeds, defaults for
its runs, a `[table]` layout, and `[[runs]]`: each run is the product of its methods, datasets,
categories, attacks, objectives and ε (one norm), with an optional `config` (a method variant, e.g.
`{ alpha = "0" }`), `steps`, `attack_options` and `label` (the variant's row in the paper's table).
A run with `not_implemented = "why"` stands for a variant robustad cannot run: its cells are
counted and shown as not runnable, never silently dropped. Example (a user's grid)::

    title = "My defense against PGD"
    profile = "quick"
    seeds = [0]
    [[runs]]
    methods = ["mypkg.defense:Defense", "patchcore"]
    datasets = ["textures"]
    categories = ["brick", "grass"]
    attacks = ["pgd-5", "fgsm"]
    objectives = ["detection", "localization"]
    eps = ["8/255"]

Keys at the top level (other than title, reference_table, profile, seeds, table, runs) are
defaults for every run. Categories `"all"` are the dataset's known categories (those of the paper),
or those found under its root for a dataset without a known list.
"""
from __future__ import annotations

import itertools
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from robustad.bench.cells import CellSpec
from robustad.core.parsing import parse_eps

SHIPPED_DIR = Path(__file__).resolve().parent
OBJECTIVES = ("detection", "localization")
NORMS = ("linf", "l2")
DIMENSIONS = ("method", "variant", "dataset", "category", "task", "attack", "eps")
TASKS = ("ad", "al")
VALUES = ("clean / adversarial", "adversarial")
GRID_KEYS = {"title", "reference_table", "profile", "seeds", "table", "runs"}
RUN_KEYS = {"label", "methods", "datasets", "categories", "attacks", "objectives", "norm", "eps", "steps",
            "config", "attack_options", "not_implemented"}
MISSING_CATEGORIES = "these categories"
TABLE_KEYS = {"rows", "columns", "tasks", "values", "average_row"}
REQUIRED_RUN_KEYS = ("methods", "datasets", "attacks")


class GridError(ValueError):
    """A grid file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class GridTable:
    """How `bench table --grid` lays the grid's records out, as the paper's table does."""

    rows: tuple[str, ...] = ("dataset",)
    columns: str = "method"
    tasks: tuple[str, ...] = ("ad",)
    values: str = "clean / adversarial"
    average_row: bool = False  # a row of the means over the other rows (Tables 1 and 2)


@dataclass(frozen=True)
class GridRun:
    """One product of cells; `label` names the variant (a row of an ablation table)."""

    label: str
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    categories: tuple[str, ...] | str  # "all" or names
    attacks: tuple[str, ...]
    objectives: tuple[str, ...]
    norm: str
    eps: tuple[str, ...]
    steps: int | None = None
    config: tuple[tuple[str, str], ...] = ()
    attack_options: tuple[tuple[str, object], ...] = ()
    not_implemented: str | None = None


@dataclass(frozen=True)
class Grid:
    name: str
    path: Path
    title: str
    reference_table: str | None
    profile: str
    seeds: tuple[int, ...]
    table: GridTable
    runs: tuple[GridRun, ...]


@dataclass(frozen=True)
class GridCell:
    """A cell of a grid before it becomes a `CellSpec` (no torch, no validation of names)."""

    method: str
    dataset: str
    category: str
    attack: str
    objective: str
    norm: str
    eps_text: str
    seed: int
    profile: str
    config: tuple[tuple[str, str], ...]
    steps: int | None
    attack_options: tuple[tuple[str, object], ...]
    label: str
    run: int  # index of its run in the grid
    root: str | None = None
    not_implemented: str | None = None  # the variant robustad cannot run (its own model, were it run)

    def training_key(self) -> tuple:
        """Cells with one key share one trained model (`bench/run/jobs.py`'s group key)."""
        return (self.method, self.profile, self.config, self.not_implemented, self.dataset, self.root,
                self.category, self.seed)

    def to_spec(self):
        return CellSpec(method=self.method, dataset=self.dataset, category=self.category, attack=self.attack,
                        norm=self.norm, eps=parse_eps(self.eps_text), eps_text=self.eps_text, steps=self.steps,
                        seed=self.seed, profile=self.profile, objective=self.objective, root=self.root,
                        config=self.config, attack_options=self.attack_options)


# ---------------------------------------------------------------------------------------------
# Reading grid files


def shipped_grids() -> list[str]:
    """The names of the grids robustad ships, e.g. `paper/table4`, in table order."""
    def order(path: Path):
        stem = path.stem
        digits = "".join(ch for ch in stem if ch.isdigit())
        return (path.parent.name, stem.rstrip("0123456789"), int(digits) if digits else 0)

    paths = sorted(SHIPPED_DIR.glob("*/*.toml"), key=order)
    return [f"{p.parent.name}/{p.stem}" for p in paths]


def grid_path(name: str) -> Path:
    """A shipped grid's file (`paper/table4`) or a user's file (a path)."""
    shipped = SHIPPED_DIR / f"{name}.toml"
    if not name.endswith(".toml") and "/" in name and shipped.is_file():
        return shipped
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise GridError(f"--grid {name}: no such grid; expected a shipped grid ({', '.join(shipped_grids())}) "
                    f"or the path of a TOML grid file")


def _strings(value, where: str, allow_all: bool = False) -> tuple[str, ...] | str:
    if allow_all and value == "all":
        return "all"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        expected = "\"all\" or " if allow_all else ""
        raise GridError(f"{where}: expected {expected}a non-empty list of names, got {value!r}")
    return tuple(v.strip() for v in value)


def _parse_table(data, where: str) -> GridTable:
    if not isinstance(data, dict):
        raise GridError(f"{where}: expected a table, got {data!r}")
    unknown = sorted(set(data) - TABLE_KEYS)
    if unknown:
        raise GridError(f"{where}.{unknown[0]}: unknown key (expected one of {', '.join(sorted(TABLE_KEYS))})")
    rows = _strings(data.get("rows", ["dataset"]), f"{where}.rows")
    columns = data.get("columns", "method")
    for key, names in (("rows", rows), ("columns", (columns,))):
        bad = [n for n in names if n not in DIMENSIONS]
        if bad:
            raise GridError(f"{where}.{key}: {bad[0]!r} is not a dimension (expected {', '.join(DIMENSIONS)})")
    if columns in rows:
        raise GridError(f"{where}.columns: {columns!r} is a row dimension too")
    tasks = _strings(data.get("tasks", ["ad"]), f"{where}.tasks")
    if any(t not in TASKS for t in tasks):
        raise GridError(f"{where}.tasks: expected ad and/or al, got {list(tasks)}")
    values = data.get("values", VALUES[0])
    if values not in VALUES:
        raise GridError(f"{where}.values: expected one of {', '.join(repr(v) for v in VALUES)}, got {values!r}")
    average_row = data.get("average_row", False)
    if not isinstance(average_row, bool):
        raise GridError(f"{where}.average_row: expected true or false, got {average_row!r}")
    return GridTable(tuple(rows), columns, tuple(tasks), values, average_row)


def _parse_run(data: dict, defaults: dict, where: str) -> GridRun:
    if not isinstance(data, dict):
        raise GridError(f"{where}: expected a table, got {data!r}")
    unknown = sorted(set(data) - RUN_KEYS)
    if unknown:
        raise GridError(f"{where}.{unknown[0]}: unknown key (expected one of {', '.join(sorted(RUN_KEYS))})")
    merged = {**defaults, **data}
    for key in REQUIRED_RUN_KEYS:
        if key not in merged:
            raise GridError(f"{where}: missing key {key!r} (in the run or at the top level)")
    objectives = _strings(merged.get("objectives", ["localization"]), f"{where}.objectives")
    if any(o not in OBJECTIVES for o in objectives):
        raise GridError(f"{where}.objectives: expected detection and/or localization, got {list(objectives)}")
    norm = merged.get("norm", "linf")
    if norm not in NORMS:
        raise GridError(f"{where}.norm: expected linf or l2, got {norm!r}")
    eps = _strings(merged.get("eps", ["8/255"]), f"{where}.eps")
    for text in eps:
        try:
            parse_eps(text)
        except ValueError:
            raise GridError(f"{where}.eps: {text!r} is not a budget such as 8/255 or 0.0314") from None
    steps = merged.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise GridError(f"{where}.steps: expected a whole number >= 1, got {steps!r}")
    pairs = {}
    for key in ("config", "attack_options"):
        table = merged.get(key, {})
        if not isinstance(table, dict):
            raise GridError(f"{where}.{key}: expected a table such as {{ alpha = \"0\" }}, got {table!r}")
        if key == "config":
            bad = [k for k, v in table.items() if isinstance(v, (dict, list))]
            if bad:
                raise GridError(f"{where}.config.{bad[0]}: expected a single value, got {table[bad[0]]!r}")
            pairs[key] = tuple(sorted((k, str(v).lower() if isinstance(v, bool) else str(v))
                                      for k, v in table.items()))
        else:
            pairs[key] = tuple(sorted(table.items()))
    not_implemented = merged.get("not_implemented")
    if not_implemented is not None and (not isinstance(not_implemented, str) or not not_implemented.strip()):
        raise GridError(f"{where}.not_implemented: expected a sentence saying why, got {not_implemented!r}")
    label = merged.get("label", "")
    if not isinstance(label, str):
        raise GridError(f"{where}.label: expected a string, got {label!r}")
    return GridRun(label=label, methods=_strings(merged["methods"], f"{where}.methods"),
                   datasets=_strings(merged["datasets"], f"{where}.datasets"),
                   categories=_strings(merged.get("categories", "all"), f"{where}.categories", allow_all=True),
                   attacks=_strings(merged["attacks"], f"{where}.attacks"), objectives=objectives, norm=norm,
                   eps=eps, steps=steps, config=pairs["config"], attack_options=pairs["attack_options"],
                   not_implemented=not_implemented)


def load_grid(name: str) -> Grid:
    """The grid `paper/table4` (shipped) or the grid in a user's TOML file; GridError names file and key."""
    path = grid_path(name)
    where = f"grid file {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise GridError(f"{where}: not valid TOML ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise GridError(f"{where}: cannot be read ({err})") from None
    from robustad.core.profiles import Profile

    profile = data.get("profile", "quick")
    try:
        profile = Profile.parse(profile).value
    except (ValueError, KeyError, AttributeError):
        raise GridError(f"{where}: profile: expected one of {', '.join(p.value for p in Profile)}, "
                        f"got {profile!r}") from None
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise GridError(f"{where}: seeds: expected a non-empty list of whole numbers, got {seeds!r}")
    defaults = {k: v for k, v in data.items() if k not in GRID_KEYS}
    unknown = sorted(set(defaults) - RUN_KEYS)
    if unknown:
        raise GridError(f"{where}: {unknown[0]}: unknown key (expected one of "
                        f"{', '.join(sorted(GRID_KEYS | RUN_KEYS))})")
    runs_data = data.get("runs", [{}])
    if not isinstance(runs_data, list) or not runs_data:
        raise GridError(f"{where}: runs: expected [[runs]] tables")
    runs = tuple(_parse_run(run, defaults, f"{where}: runs[{i}]") for i, run in enumerate(runs_data))
    table = _parse_table(data.get("table", {}), f"{where}: table")
    for field in ("title", "reference_table"):
        if field in data and not isinstance(data[field], str):
            raise GridError(f"{where}: {field}: expected a string, got {data[field]!r}")
    shipped = path.resolve().is_relative_to(SHIPPED_DIR)
    return Grid(name=name if shipped or not name.endswith(".toml") else str(path), path=path.resolve(),
                title=data.get("title", path.stem), reference_table=data.get("reference_table"), profile=profile,
                seeds=tuple(seeds), table=table, runs=runs)


# ---------------------------------------------------------------------------------------------
# Expanding and checking


NOT_APPLICABLE = "not applicable"  # a cell the method cannot have (a detection-only method's localization)


def known_categories(dataset: str) -> tuple[str, ...] | None:
    from robustad.datasets.registry import DATASETS

    if dataset not in DATASETS:
        return None
    return tuple(getattr(DATASETS.get(dataset), "known_categories", ()) or ()) or None


def expand_grid(grid: Grid, roots: dict | None = None, *, profile: str | None = None,
                seeds: list[int] | None = None) -> tuple[list[GridCell], dict[GridCell, str]]:
    """Every cell of the grid, and the reason each cell that cannot run here cannot.

    roots: {dataset: DIR} and/or {None: DIR} for every dataset (`--root`); profile and seeds override the
    grid's. A cell is not runnable when its run is `not_implemented`, its method, config or attack is
    unknown, its dataset is not registered or has no root, or its category is not under the root.
    """
    roots = dict(roots or {})
    profile = profile or grid.profile
    seeds = tuple(seeds) if seeds else grid.seeds
    cells, blocked = [], {}
    checker = _Checker(roots, profile)
    for index, run in enumerate(grid.runs):
        label = run.label
        for method, dataset in itertools.product(run.methods, run.datasets):
            root = roots.get(dataset, roots.get(None))
            categories, category_problem = checker.categories(dataset, run.categories)
            inputs_problem = checker.inputs(method, run.config, dataset, categories)
            for category, attack, objective, eps_text, seed in itertools.product(
                    categories, run.attacks, run.objectives, run.eps, seeds):
                cell = GridCell(method=method, dataset=dataset, category=category, attack=attack, objective=objective,
                                norm=run.norm, eps_text=eps_text, seed=seed, profile=profile, config=run.config,
                                steps=run.steps, attack_options=run.attack_options, label=label, run=index,
                                root=str(root) if root is not None else None, not_implemented=run.not_implemented)
                cells.append(cell)
                reason = (run.not_implemented or checker.method(method, run.config)
                          or checker.applicable(method, objective) or inputs_problem
                          or checker.attack(attack, run.norm, eps_text, run.steps, objective, run.attack_options)
                          or category_problem or checker.dataset(dataset, category))
                if reason:
                    blocked[cell] = reason
    return cells, blocked


class _Checker:
    """Runnability checks, each answered once per distinct question."""

    def __init__(self, roots: dict, profile: str):
        self.roots, self.profile = roots, profile
        self.answers: dict = {}

    def _once(self, key, check):
        if key not in self.answers:
            self.answers[key] = check()
        return self.answers[key]

    def method(self, method: str, config) -> str | None:
        def check():
            from robustad.methods import method_config

            try:
                method_config(method, profile=self.profile, **dict(config))
            except (KeyError, ValueError, ImportError, AttributeError, TypeError) as err:
                message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
                if "unknown method" in str(message):
                    return f"method {method!r} is not implemented in robustad"
                return f"method {method!r}: {message}"
            return None

        return self._once(("method", method, config), check)

    def inputs(self, method: str, config, dataset: str, categories) -> str | None:
        """What the method checks itself before running (its `check_before_run`: weights files, image
        folders its config names), for these categories."""
        def check():
            from robustad.methods import method_config, resolve_method

            try:
                resolve_method(method).check_before_run(method_config(method, profile=self.profile, **dict(config)),
                                                        dataset, list(categories))
            except (KeyError, ValueError, ImportError, AttributeError, TypeError) as err:
                message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
                return message if message.startswith(f"method {method!r}") else f"method {method!r}: {message}"
            return None

        if self.method(method, config):
            return None  # the method itself is the problem, reported as such
        return self._once(("inputs", method, config, dataset, tuple(categories)), check)

    def applicable(self, method: str, objective: str) -> str | None:
        """A detection-only method (its detector declares `localizes = False`) has no localization cell."""
        def check():
            from robustad.methods import resolve_method

            if objective == "localization" and not resolve_method(method).localizes:
                return f"{NOT_APPLICABLE}: method {method!r} is detection-only (no localization map)"
            return None

        return self._once(("applicable", method, objective), check)

    def attack(self, attack, norm, eps_text, steps, objective, options) -> str | None:
        def check():
            from robustad.attacks import create_attack

            try:
                create_attack(attack, norm=norm, eps=parse_eps(eps_text), steps=steps, objective=objective,
                              **dict(options))
            except (KeyError, ValueError, TypeError) as err:
                message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
                return f"attack {attack!r}: {message}"
            if norm == "linf" and parse_eps(eps_text) >= 1:
                return f"eps {eps_text} with norm linf covers the whole pixel range"
            return None

        return self._once(("attack", attack, norm, eps_text, steps, objective, options), check)

    def root(self, dataset):
        return self.roots.get(dataset, self.roots.get(None))

    def present(self, dataset) -> tuple[list[str] | None, str | None]:
        """The categories found for the dataset (under its root), or the reason none can be."""
        def check():
            from robustad.datasets import list_categories
            from robustad.datasets.registry import DATASETS

            if dataset not in DATASETS:
                return None, f"dataset {dataset!r} is not registered"
            root = self.root(dataset)
            try:
                return list(list_categories(dataset, root)), None
            except (OSError, ValueError) as err:
                if root is None:
                    return None, f"no root for dataset {dataset!r} (give --root {dataset}=DIR)"
                return None, f"dataset {dataset!r} under {root}: {err}"

        return self._once(("present", dataset), check)

    def categories(self, dataset, wanted) -> tuple[tuple[str, ...], str | None]:
        if wanted != "all":
            return tuple(wanted), None
        known = known_categories(dataset)
        if known:
            return known, None
        present, problem = self.present(dataset)
        if present:
            return tuple(present), None
        return ("all",), problem or f"dataset {dataset!r} has no categories"

    def dataset(self, dataset, category) -> str | None:
        present, problem = self.present(dataset)
        if problem:
            return problem
        if category not in present:
            return f"dataset {dataset!r} under {self.root(dataset) or 'its default root'} lacks {MISSING_CATEGORIES}"
        return None


# ---------------------------------------------------------------------------------------------
# Describing


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def count_trainings(cells) -> int:
    return len({cell.training_key() for cell in cells})


def describe_grid(grid: Grid, cells: list[GridCell], blocked: dict[GridCell, str]) -> str:
    """`bench grid show`: what the grid holds, its cells and trainings, and what cannot run here and why."""
    runnable = [c for c in cells if c not in blocked]
    lines = [f"{grid.name}: {grid.title}", f"file: {grid.path}"]
    if grid.reference_table:
        lines.append(f"published figures: reference table {grid.reference_table} (bench table --grid {grid.name} "
                     f"--reference paper)")
    lines.append(f"profile {cells[0].profile if cells else grid.profile}, seeds "
                 f"{', '.join(str(s) for s in sorted({c.seed for c in cells}) or grid.seeds)}")
    lines.append(f"{len(cells)} cells, {count_trainings(cells)} trainings; runnable here: {len(runnable)} cells, "
                 f"{count_trainings(runnable)} trainings")
    for index, run in enumerate(grid.runs):
        mine = [c for c in cells if c.run == index]
        categories = run.categories if run.categories == "all" else ", ".join(run.categories)
        head = f"run {index}" + (f" [{run.label}]" if run.label else "")
        config = " ".join(f"{k}={v}" for k, v in run.config)
        lines.append(f"  {head}: {len(mine)} cells, {count_trainings(mine)} trainings")
        lines.append(f"    methods: {', '.join(run.methods)}" + (f"; config: {config}" if config else ""))
        by_dataset = Counter(c.dataset for c in mine)
        per_dataset = ", ".join(f"{d} ({len({c.category for c in mine if c.dataset == d})})" for d in by_dataset)
        lines.append(f"    datasets (categories): {per_dataset}" + ("" if categories == "all" else f"; {categories}"))
        attacks = ", ".join(run.attacks) + (f" (steps {run.steps})" if run.steps else "")
        lines.append(f"    attacks: {attacks}; objectives: {', '.join(run.objectives)}; {run.norm} eps "
                     f"{', '.join(run.eps)}")
    inapplicable = {cell: reason for cell, reason in blocked.items() if reason.startswith(NOT_APPLICABLE)}
    for reason in dict.fromkeys(inapplicable.values()):
        of_reason = [cell for cell, why in inapplicable.items() if why == reason]
        lines.append(f"{reason}: {_plural(len(of_reason), 'cell')}")
    blocked = {cell: reason for cell, reason in blocked.items() if cell not in inapplicable}
    if blocked:
        lines.append(f"not runnable here: {len(blocked)} cells, {count_trainings(blocked)} trainings")
        reasons: dict[str, list[GridCell]] = {}
        for cell, reason in blocked.items():
            reasons.setdefault(reason, []).append(cell)
        for reason, of_reason in reasons.items():
            named = (": " + ", ".join(sorted({c.category for c in of_reason}))) if reason.endswith(MISSING_CATEGORIES) else ""
            lines.append(f"  {_plural(len(of_reason), 'cell')} ({_plural(count_trainings(of_reason), 'training')}): "
                         f"{reason}{named}")
    else:
        lines.append("not runnable here: none")
    return "\n".join(lines)


def grid_summary_line(grid: Grid, cells, blocked) -> str:
    runnable = len(cells) - len(blocked)
    return (f"{grid.name:<16} {len(cells):>6} cells {count_trainings(cells):>5} trainings  "
            f"{runnable:>6} runnable here  {grid.title}")


__all__ = ["Grid", "GridCell", "GridError", "GridRun", "GridTable", "describe_grid", "expand_grid", "load_grid",
           "shipped_grids"]
