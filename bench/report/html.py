"""`bench report`: a static HTML report of a results folder (no server, no network: open
`site/index.html` from `file://`).

- `index.html`: per dataset and task (AD: image AUROC, AL: pixel AUROC) a leaderboard of methods
  ranked by their worst adversarial AUROC over the attacks run (the mean over categories of each
  attack's value; higher is more robust), with the clean AUROC, each attack's value, the paper's
  figure where the reference has one (`bench/results/reference_values.py`), and the flags
  (`bench/report/flags.py`); the strength curves (`bench figure strength`) where records allow.
- `rows/<dataset>__<method>.html`: one leaderboard row by category (the drill-down of its means).
- `categories/<dataset>__<category>.html`: every method and attack of one category, with its flags
  and the paper's Figure 1 of each record that saved example maps (`bench figure maps`).
- `records/<cell_id>.json`: a copy of every record. Every measured number in the report links to
  the record it comes from; a mean links to the drill-down that lists its records.

Values are means over seeds, then over categories, as in `bench table`; a mean marked `*` misses
categories the dataset has in the results. Everything is escaped (jinja2 autoescape).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

from robustad.bench.results.display_names import (attack_table_order, dataset_display_name, dataset_table_order,
                                          method_display_name, method_table_order)
from robustad.bench.results.loading import load_records
from robustad.bench.results.records import Record, records_dir
from robustad.bench.results.reference_values import load_reference_or_none, reference_value
from robustad.bench.report.flags import FLAG_KINDS, Flag, attack_flags, missing_flag, profile_flags
from robustad.bench.report.tables import NORM_NAMES, TASK_METRIC, TASK_OBJECTIVE, TASKS, AttackSetting
from robustad.core.files import write_text_atomic

TEMPLATES = Path(__file__).parent / "templates"
TASK_NAMES = {"ad": "AD (image AUROC, %)", "al": "AL (pixel AUROC, %)"}


# ---------------------------------------------------------------------------------------------
# What the templates show


@dataclasses.dataclass
class Value:
    """One number of the report, with the link to where it comes from."""

    number: float | None
    href: str | None = None
    title: str = ""
    incomplete: bool = False  # a mean missing categories
    paper: object | None = None  # a ReferenceValue (clean / adversarial of the paper) or None
    paper_number: float | None = None

    @property
    def text(self) -> str:
        return "–" if self.number is None else f"{self.number:.1f}" + ("*" if self.incomplete else "")


@dataclasses.dataclass(frozen=True)
class Column:
    """An attack setting, whatever the profile (rows keep profiles apart)."""

    setting: AttackSetting

    @classmethod
    def of(cls, record: Record) -> "Column":
        return cls(dataclasses.replace(AttackSetting.of(record), profile=""))

    @property
    def label(self) -> str:
        return self.setting.attack_label()

    @property
    def detail(self) -> str:
        s = self.setting
        return f"ε = {s.eps_text} ({NORM_NAMES[s.norm]}), {s.objective}"

    @property
    def reference_attack(self) -> str:
        """The attack as the reference names it: `pgd-1000`, `fgsm`, `worst:...`."""
        s = self.setting
        return f"{s.attack}-{s.steps}" if s.steps > 1 and not s.attack.startswith("worst:") else s.attack

    def sort_key(self):
        s = self.setting
        return (attack_table_order(s.attack), s.attack, s.norm, s.eps, s.objective, s.steps, s.options)


def row_key(record: Record) -> tuple[str, str]:
    return (record.method_label, record.profile)


def slug(*parts: str) -> str:
    text = "__".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", p).strip("-") for p in parts)
    return f"{text[:80]}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:6]}"


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def dataset_tree_categories(dataset: str, root) -> list[str]:
    """The categories of a dataset's tree, or [] where it cannot be read here (another machine's path)."""
    from robustad.datasets import list_categories

    try:
        return list(list_categories(dataset, root))
    except (OSError, ValueError, KeyError, LookupError, RuntimeError):
        return []


def record_href(record: Record, prefix: str) -> str:
    return f"{prefix}records/{record.cell_id}.json"


def category_value(records: list[Record], phase: str, metric: str, prefix: str) -> Value:
    """One category's value: the mean over seeds (a seed's records first averaged), linked to its record."""
    by_seed = defaultdict(list)
    for record in records:
        by_seed[record.seed].append(record.metric(phase, metric))
    number = _mean(_mean(v) for v in by_seed.values())
    done = [r for r in records if r.done] or records
    if not done:
        return Value(None)
    first = sorted(done, key=lambda r: (r.seed, r.cell_id))[0]
    others = len({r.cell_id for r in done}) - 1
    title = f"record {first.cell_id}" + (f" and {others} more (mean over seeds)" if others else "")
    if all(r.failed for r in records):
        title = f"failed: {first.error}"
    return Value(number, record_href(first, prefix), title)


# ---------------------------------------------------------------------------------------------
# Building the pages


class ReportBuilder:
    def __init__(self, records: list[Record], reference, margin: float):
        self.records = records
        self.reference = reference
        self.flags: list[Flag] = attack_flags(records, margin) + profile_flags(records)
        self.datasets = sorted({r.dataset for r in records}, key=lambda d: (dataset_table_order(d), d))
        self._expected: dict[str, list[str]] = {}

    def of_dataset(self, dataset: str) -> list[Record]:
        return [r for r in self.records if r.dataset == dataset]

    def categories(self, dataset: str) -> list[str]:
        """The categories with records (each has a page)."""
        return sorted({r.category for r in self.of_dataset(dataset)})

    def expected_categories(self, dataset: str) -> list[str]:
        """What a dataset mean should average: the categories with records and those of the dataset's tree
        where it can be read here (a mean over 2 of MVTec's 15 categories is not the paper's mean)."""
        if dataset not in self._expected:
            found = set(self.categories(dataset))
            for root in sorted({r.root for r in self.of_dataset(dataset)}, key=str):
                found.update(dataset_tree_categories(dataset, root))
            self._expected[dataset] = sorted(found)
        return self._expected[dataset]

    def rows(self, records: list[Record]) -> list[tuple[str, str]]:
        return sorted({row_key(r) for r in records}, key=lambda k: (method_table_order(k[0].partition(" (")[0]), k))

    def columns(self, records: list[Record]) -> list[Column]:
        return sorted({Column.of(r) for r in records}, key=Column.sort_key)

    def row_page(self, dataset: str, key: tuple[str, str]) -> str:
        return f"rows/{slug(dataset, *key)}.html"

    def category_page(self, dataset: str, category: str) -> str:
        return f"categories/{slug(dataset, category)}.html"

    def paper(self, key, dataset, category, task, column: Column | None, records: list[Record]):
        """The reference value of a row (method, config) on a dataset's mean or a category."""
        if self.reference is None:
            return None
        if column is not None and column.setting.objective != TASK_OBJECTIVE[task]:
            return None  # an AD figure is the detection objective's, an AL figure the localization's
        sample = records[0] if records else None
        attacks = [column.reference_attack] if column else sorted({c.reference_attack for c in self.columns(records)})
        for attack in attacks:
            found = reference_value(
                self.reference, method=sample.method if sample else key[0], dataset=dataset, category=category,
                task=task, attack=attack, norm=column.setting.norm if column else "linf",
                eps=column.setting.eps_text if column else "8/255", config=sample.config_overrides if sample else None,
                profile=key[1])
            if found is not None:
                return found
        return None

    # -- the leaderboard ---------------------------------------------------------------------
    def mean_value(self, records, categories, phase, metric, href) -> tuple[Value, list[str]]:
        """The mean over categories, and the categories it misses."""
        per_category = {c: category_value([r for r in records if r.category == c], phase, metric, "")
                        for c in categories}
        have = {c: v.number for c, v in per_category.items() if v.number is not None}
        missing = [c for c in categories if c not in have]
        number = _mean(have.values())
        title = f"mean over {len(have)} of {len(categories)} categories"
        return Value(number, href, title, incomplete=bool(missing) and number is not None), missing

    def leaderboard(self, dataset: str, task: str) -> dict | None:
        records = self.of_dataset(dataset)
        metric = TASK_METRIC[task]
        if all(r.metric("clean", metric) is None and r.metric("adversarial", metric) is None for r in records):
            return None
        categories = self.expected_categories(dataset)
        columns = self.columns(records)
        rows = []
        for key in self.rows(records):
            mine = [r for r in records if row_key(r) == key]
            page = self.row_page(dataset, key)
            clean, missing = self.mean_value(mine, categories, "clean", metric, f"{page}#{task}")
            row_flags = [f for f in self.flags if f.dataset == dataset and f.method == key[0]
                         and f.profile in (None, key[1]) and f.task in (None, task)]
            incomplete = defaultdict(list)  # missing categories -> the values that lack them
            if missing and clean.number is not None:
                incomplete[tuple(missing)].append(("clean", [r.cell_id for r in mine]))
            paper_clean = self.paper(key, dataset, "mean", task, None, mine)
            clean.paper_number = getattr(paper_clean, "clean", None)
            clean.paper = paper_clean
            attacked = []
            for column in columns:
                theirs = [r for r in mine if Column.of(r) == column]
                if not theirs:
                    attacked.append(Value(None, title="not run"))
                    continue
                value, missing = self.mean_value(theirs, categories, "adversarial", metric, f"{page}#{task}")
                if missing and value.number is not None:
                    incomplete[tuple(missing)].append((column.label, [r.cell_id for r in theirs]))
                value.paper = self.paper(key, dataset, "mean", task, column, theirs)
                value.paper_number = getattr(value.paper, "adversarial", None)
                attacked.append(value)
            for missing, values in incomplete.items():
                what = f"{task.upper()} {', '.join(label for label, _ in values)}"
                ids = sorted({i for _, cell_ids in values for i in cell_ids})
                row_flags.append(missing_flag(dataset, key[0], what, list(missing), len(categories), ids, task, key[1]))
            numbers = [(v.number, c) for v, c in zip(attacked, columns) if v.number is not None]
            if numbers:
                worst_number, worst_column = min(numbers, key=lambda nc: nc[0])
                worst = Value(worst_number, f"{page}#{task}", f"worst over {len(numbers)} attack(s): {worst_column.label}",
                              incomplete=any(v.incomplete for v in attacked) or len(numbers) < len(columns))
            else:
                worst = Value(None, title="no attack result")
            rows.append({"key": key, "method": method_display_name(key[0]), "profile": key[1], "href": page,
                         "clean": clean, "attacks": attacked, "worst": worst, "flags": row_flags})
        rows.sort(key=lambda row: (row["worst"].number is None, -(row["worst"].number or 0), row["method"]))
        for rank, row in enumerate(rows, 1):
            row["rank"] = rank
        return {"dataset": dataset, "dataset_name": dataset_display_name(dataset), "task": task,
                "task_name": TASK_NAMES[task], "columns": columns, "rows": rows, "categories": categories,
                "run_categories": self.categories(dataset),
                "anchor": slug(dataset, task)}

    # -- drill-downs ---------------------------------------------------------------------------
    def category_table(self, records, task, row_keys, row_label, row_href, prefix, dataset, category_of) -> dict:
        """Rows (method rows or categories) × clean + attack columns; values link to records."""
        metric = TASK_METRIC[task]
        columns = self.columns(records)
        rows = []
        for key in row_keys:
            mine = [r for r in records if category_of(r) == key]
            clean = category_value(mine, "clean", metric, prefix)
            sample = mine[0] if mine else None
            if sample is not None:  # one method row on one category: the reference's per-category figure
                clean.paper = self.paper(row_key(sample), dataset, sample.category, task, None, mine)
                clean.paper_number = getattr(clean.paper, "clean", None)
            attacked = []
            for column in columns:
                theirs = [r for r in mine if Column.of(r) == column]
                value = category_value(theirs, "adversarial", metric, prefix) if theirs else Value(None, title="not run")
                if theirs:
                    value.paper = self.paper(row_key(theirs[0]), dataset, theirs[0].category, task, column, theirs)
                    value.paper_number = getattr(value.paper, "adversarial", None)
                attacked.append(value)
            rows.append({"label": row_label(key), "href": row_href(key), "clean": clean, "attacks": attacked})
        return {"task": task, "task_name": TASK_NAMES[task], "columns": columns, "rows": rows}


# ---------------------------------------------------------------------------------------------
# Writing


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env


def _copy_records(results: Path, records: list[Record], out: Path) -> None:
    folder = records_dir(results)
    for record in records:
        source = folder / f"{record.cell_id}.json"
        text = source.read_text() if source.is_file() else json.dumps(record.to_json(), indent=2) + "\n"
        write_text_atomic(out / "records" / f"{record.cell_id}.json", text)


def _maps_figures(results: Path, records: list[Record], out: Path, log) -> dict[str, str]:
    """{cell_id: path relative to `out`} of the Figure 1 PNG of every record with example maps."""
    from robustad.bench.report.maps_figure import write_maps_figure

    figures = {}
    for record in records:
        if not record.done or not record.examples:
            continue
        try:
            write_maps_figure(results, record, out / "figures" / f"maps__{record.cell_id}", formats=("png",))
        except (OSError, ValueError) as err:
            log(f"warning: no maps figure for {record.cell_id}: {err}")
            continue
        figures[record.cell_id] = f"figures/maps__{record.cell_id}.png"
    return figures


def _strength_figures(records: list[Record], out: Path) -> list[dict]:
    from robustad.bench.report.strength_figure import write_strength_figure

    figures = []
    for task in TASKS:
        try:
            write_strength_figure(records, out / "figures" / f"strength__{task}", task=task, formats=("png",))
        except ValueError:
            continue  # no attack run at several steps or budgets
        figures.append({"task": task, "src": f"figures/strength__{task}.png", "task_name": TASK_NAMES[task]})
    return figures


def write_report(results, out, *, reference: str | None = "paper", margin: float = 1.0, maps: bool = True,
                 log=print) -> Path:
    """Writes the report of `results` into `out`; returns the path of its index.html."""
    results = Path(results).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    records, problems = load_records(results)
    for problem in problems:
        log(f"warning: {problem}")
    if not records:
        raise ValueError(f"--results {results}: no result records to report on")
    builder = ReportBuilder(records, load_reference_or_none(reference, log), margin)
    env = _environment()
    env.globals["reference_name"] = builder.reference.short_name if builder.reference is not None else "paper"
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "rows", ignore_errors=True)
    shutil.rmtree(out / "categories", ignore_errors=True)
    _copy_records(results, records, out)
    maps_figures = _maps_figures(results, records, out, log) if maps else {}
    boards = [board for dataset in builder.datasets for task in TASKS
              if (board := builder.leaderboard(dataset, task)) is not None]
    common = {"flag_kinds": FLAG_KINDS, "reference": getattr(builder.reference, "source", None),
              "results": str(results)}
    index = out / "index.html"
    write_text_atomic(index, env.get_template("index.html").render(
        prefix="", boards=boards, flags=builder.flags + [f for b in boards for r in b["rows"] for f in r["flags"]
                                                         if f.kind == "missing"],
        strength=_strength_figures(records, out), n_records=len(records), problems=problems,
        category_pages={d: [(c, builder.category_page(d, c)) for c in builder.categories(d)] for d in builder.datasets},
        dataset_names={d: dataset_display_name(d) for d in builder.datasets}, **common))
    for board in boards:
        dataset = board["dataset"]
        for row in board["rows"]:
            mine = [r for r in builder.of_dataset(dataset) if row_key(r) == row["key"]]
            tables = [builder.category_table(
                mine, task, builder.categories(dataset), lambda c: c,
                lambda c, d=dataset: "../" + builder.category_page(d, c), "../", dataset, lambda r: r.category)
                for task in TASKS if any(b["dataset"] == dataset and b["task"] == task for b in boards)]
            write_text_atomic(out / row["href"], env.get_template("drilldown.html").render(
                prefix="../", title=f"{row['method']} ({row['profile']}) on {board['dataset_name']}", tables=tables,
                flags=[f for f in builder.flags if f.dataset == dataset and f.method == row["key"][0]
                       and f.profile in (None, row["key"][1])],
                figures=[], **common))
    for dataset in builder.datasets:
        for category in builder.categories(dataset):
            mine = [r for r in builder.of_dataset(dataset) if r.category == category]
            keys = builder.rows(mine)
            tables = [builder.category_table(
                mine, task, keys, lambda k: f"{method_display_name(k[0])} ({k[1]})",
                lambda k, d=dataset: "../" + builder.row_page(d, k), "../", dataset, row_key)
                for task in TASKS if any(b["dataset"] == dataset and b["task"] == task for b in boards)]
            figures = [{"src": "../" + maps_figures[r.cell_id], "href": "../" + record_href(r, ""),
                        "caption": f"{method_display_name(r.method_label)}, {r.attack}"
                                   f"{f' ({r.steps} steps)' if r.steps and r.steps > 1 else ''}, ε = {r.eps_text}"}
                       for r in sorted(mine, key=lambda r: (r.method_label, r.attack, r.eps, r.seed))
                       if r.cell_id in maps_figures]
            write_text_atomic(out / builder.category_page(dataset, category), env.get_template("drilldown.html").render(
                prefix="../", title=f"{dataset_display_name(dataset)} / {category}", tables=tables,
                flags=[f for f in builder.flags if f.dataset == dataset and f.category == category],
                figures=figures, **common))
    return index
