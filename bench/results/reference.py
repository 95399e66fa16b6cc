"""Published figures to put beside measured ones: the PatchGuard paper's, or a user's CSV.

`load_reference("paper")` reads the figures robustad ships (`bench/results/paper_figures/`, extracted from
Nafez et al., CVPR 2025, Tables 1–21; see its README); `load_reference(path)` reads a user's CSV in
one of the same two formats, so a defense's own paper can be compared:

- results format: `table,method,dataset,category,task,attack,clean,adversarial,norm,eps[,metric,paper_label,note,config]`
  (`config`, optional: the method's `--config` overrides the row was measured with)
- ablations format: `table,variant,config,dataset,task,attack,norm,eps,clean,adversarial` (method
  `patchguard`, category `mean`; `config` is the `--config` override, `KEY=VALUE` separated by
  spaces; a config in parentheses names a variant robustad cannot run).

`task` is AD (image AUROC) or AL (pixel AUROC); `lookup` takes robustad's objective names
(`detection`, `localization`) as well. `category` is `mean` for a dataset's mean over its
categories, `dataset` is `average` for the mean over datasets (Tables 1 and 2).

No torch here: `bench table` and `bench grid` import this at once.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from robustad.core.parsing import parse_number, split_steps_suffix

PAPER = "paper"
PAPER_SOURCE = ("Nafez et al., PatchGuard: Adversarially Robust Anomaly Detection and Localization through "
                "Vision Transformers and Pseudo Anomalies, CVPR 2025 (arXiv 2506.09237), Tables 1-4, 13-18 "
                "(results) and 5-12, 19-21 (ablations), as extracted in robustad/bench/results/paper_figures/")
FIGURES_DIR = Path(__file__).resolve().parent / "paper_figures"
PAPER_FILES = ("patchguard-cvpr2025-results.csv", "patchguard-cvpr2025-ablations.csv")

TASKS = {"ad": "detection", "detection": "detection", "al": "localization", "localization": "localization"}
TASK_METRIC = {"detection": "image_auroc", "localization": "pixel_auroc"}
RESULTS_COLUMNS = ("table", "method", "dataset", "category", "task", "attack", "clean", "adversarial", "norm", "eps")
ABLATIONS_COLUMNS = ("table", "variant", "config", "dataset", "task", "attack", "norm", "eps", "clean", "adversarial")
ABLATION_METHOD = "patchguard"


class ReferenceError(ValueError):
    """A reference CSV that cannot be read; the message names the file, line and column."""


@dataclass(frozen=True)
class ReferenceValue:
    """One published figure: AUROC in percent, None where the source gives none."""

    table: str  # e.g. "T4"
    clean: float | None
    adversarial: float | None
    label: str  # the method or variant as the source names it, e.g. "Ours", "alpha=0"
    note: str


@dataclass(frozen=True)
class ReferenceRow:
    """A row of a reference CSV, its keys normalized for matching."""

    value: ReferenceValue
    method: str
    dataset: str
    category: str
    task: str  # detection | localization
    attack: str  # base name, lower case
    steps: int | None
    norm: str
    eps: float
    eps_text: str
    config: dict | None  # None: a variant that cannot be run (no --config selects it)
    config_text: str = ""
    line: int = 0

    def config_key(self, defaults: dict | None = None) -> tuple | None:
        return None if self.config is None else config_key(self.config, defaults)


def _normal_value(value):
    """"0", 0 and 0.0 are one value; "8/255" is a number; "True" a bool; a 1-list its element."""
    if isinstance(value, (list, tuple)):
        items = tuple(_normal_value(v) for v in value)
        return items[0] if len(items) == 1 else items
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return round(float(value), 9)
    text = str(value).strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return round(parse_number(text), 9)
    except ValueError:
        pass
    if "," in text:
        return _normal_value([part for part in text.split(",") if part.strip()])
    return text.lower()


def config_key(config: dict | None, defaults: dict | None = None) -> tuple:
    """Config overrides as a comparable key: `{"alpha": 0}` and `{"alpha": "0.0"}` are one key; with the
    method's `defaults`, an override equal to its default is left out (`alpha=1` is PatchGuard itself)."""
    defaults = defaults or {}
    return tuple(sorted((str(k), _normal_value(v)) for k, v in (config or {}).items()
                        if k not in defaults or _normal_value(v) != _normal_value(defaults[k])))


def parse_config_text(text: str) -> tuple[dict | None, str]:
    """`alpha=0` -> ({"alpha": "0"}, ""); `train_eps=2/255 (and --eps 2/255)` -> ({"train_eps": "2/255"},
    "and --eps 2/255"); `(BigBird attention: not implemented)` -> (None, "BigBird attention: not implemented")."""
    text = text.strip()
    note = ""
    match = re.search(r"\(([^)]*)\)\s*$", text)
    if match:
        note = match[1].strip()
        text = text[:match.start()].strip()
        if not text:
            return None, note
    config = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"config {item!r}: expected KEY=VALUE")
        config[key] = value
    return config, note


def _number(text: str, what: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    value = parse_number(text)
    if not (0 <= value <= 100):
        raise ValueError(f"{what} {text!r}: expected an AUROC in percent, in [0, 100]")
    return value


def _task(text: str) -> str:
    task = TASKS.get(text.strip().lower())
    if task is None:
        raise ValueError(f"task {text!r}: expected AD or AL (or detection, localization)")
    return task


def _row(fields: dict, kind: str, line: int) -> ReferenceRow:
    attack, steps = split_steps_suffix(fields["attack"].strip().lower())
    eps_text = fields["eps"].strip() or "8/255"
    if kind == "results":
        method, category = fields["method"].strip(), fields["category"].strip() or "mean"
        config_text = (fields.get("config") or "").strip()
        config, config_note = parse_config_text(config_text)
        note = "; ".join(n for n in ((fields.get("note") or "").strip(), config_note) if n)
        label = (fields.get("paper_label") or "").strip() or method
    else:
        method, category = ABLATION_METHOD, "mean"
        config_text = fields["config"].strip()
        config, note = parse_config_text(config_text)
        label = fields["variant"].strip()
    value = ReferenceValue(table=fields["table"].strip(), clean=_number(fields["clean"], "clean"),
                           adversarial=_number(fields["adversarial"], "adversarial"), label=label, note=note)
    norm = fields["norm"].strip().lower() or "linf"
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm {norm!r}: expected linf or l2")
    return ReferenceRow(value=value, method=method.lower(), dataset=fields["dataset"].strip().lower(),
                        category=category, task=_task(fields["task"]), attack=attack, steps=steps, norm=norm,
                        eps=parse_number(eps_text), eps_text=eps_text, config=config, config_text=config_text,
                        line=line)


def read_reference_csv(path: Path) -> list[ReferenceRow]:
    """The rows of one reference CSV (results or ablations format, told by its header)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = tuple(name.strip() for name in reader.fieldnames or ())
            if set(RESULTS_COLUMNS) <= set(header):
                kind = "results"
            elif set(ABLATIONS_COLUMNS) <= set(header):
                kind = "ablations"
            else:
                raise ReferenceError(
                    f"reference file {path}: the header {','.join(header) or '(empty)'} is neither the results "
                    f"format ({','.join(RESULTS_COLUMNS)}) nor the ablations format ({','.join(ABLATIONS_COLUMNS)})")
            rows = []
            for line, fields in enumerate(reader, start=2):
                fields = {(k or "").strip(): v or "" for k, v in fields.items()}
                try:
                    rows.append(_row(fields, kind, line))
                except ValueError as err:
                    raise ReferenceError(f"reference file {path}, line {line}: {err}") from None
    except OSError as err:
        raise ReferenceError(f"reference file {path}: cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise ReferenceError(f"reference file {path}: not a UTF-8 text file") from None
    if not rows:
        raise ReferenceError(f"reference file {path}: no rows under the header")
    return rows


def _table_number(table: str) -> tuple:
    match = re.search(r"\d+", table)
    return (int(match[0]) if match else math.inf, table)


@dataclass
class Reference:
    """Published figures, looked up by what a measured cell evaluated."""

    source: str
    rows: list[ReferenceRow] = field(default_factory=list)

    def __post_init__(self):
        self.rows = sorted(self.rows, key=lambda r: (_table_number(r.value.table), r.line))

    @property
    def short_name(self) -> str:
        """How a table names these figures beside measured ones: "paper" or "ref"."""
        return "paper" if self.source == PAPER_SOURCE else "ref"

    def tables(self) -> list[str]:
        return list(dict.fromkeys(r.value.table for r in self.rows))

    def matching(self, *, method: str | None = None, dataset: str | None = None, category: str | None = None,
                 task: str | None = None, attack: str | None = None, steps: int | None = None,
                 norm: str | None = None, eps: str | float | None = None, config: dict | None = None,
                 table: str | None = None, any_config: bool = False,
                 defaults: dict | None = None) -> list[ReferenceRow]:
        """Every row that fits the given keys (None: any), in table order; `defaults`: see `lookup`."""
        wanted_task = _task(task) if task is not None else None
        wanted_attack, wanted_steps = (None, None)
        if attack is not None:
            wanted_attack, wanted_steps = split_steps_suffix(attack.strip().lower())
            if steps is not None:
                wanted_steps = int(steps)
        wanted_eps = parse_number(eps) if eps is not None else None
        wanted_config = config_key(config, defaults)
        found = []
        for row in self.rows:
            if table is not None and row.value.table.lower() != table.lower():
                continue
            if method is not None and row.method != method.lower():
                continue
            if dataset is not None and row.dataset != dataset.lower():
                continue
            if category is not None and row.category != category:
                continue
            if wanted_task is not None and row.task != wanted_task:
                continue
            if wanted_attack is not None and (row.attack != wanted_attack or row.steps != wanted_steps):
                continue
            if norm is not None and row.norm != norm.lower():
                continue
            if wanted_eps is not None and not math.isclose(row.eps, wanted_eps, rel_tol=1e-4, abs_tol=1e-6):
                continue
            if not any_config and row.config_key(defaults) != wanted_config:
                continue
            found.append(row)
        return found

    def lookup(self, *, method: str, dataset: str, category: str, task: str, attack: str, norm: str = "linf",
               eps: str = "8/255", config: dict | None = None, steps: int | None = None,
               table: str | None = None, defaults: dict | None = None) -> ReferenceValue | None:
        """The published figure of one cell (category "mean" for a dataset's mean), or None.

        task: detection|localization (or AD|AL); attack as named in a grid, e.g. "pgd-1000" (or "pgd"
        with steps=1000): a figure for PGD-1000 is never matched to PGD-20. config: the cell's
        `--config` overrides (None or {} for the method's defaults). Where several tables give the
        cell (PatchGuard's MVTec mean is in Tables 1, 3, 4 and 5), the lowest-numbered table wins
        unless `table` names one. `defaults` (the method's config as a dict) makes an override equal to
        its default count as none on both sides: Table 5's `alpha=1` row is the default PatchGuard.
        """
        rows = self.matching(method=method, dataset=dataset, category=category, task=task, attack=attack,
                             steps=steps, norm=norm, eps=eps, config=config, table=table, defaults=defaults)
        return rows[0].value if rows else None


@functools.lru_cache(maxsize=None)
def _defaults(method: str, profile: str) -> tuple | None:
    try:
        from robustad.methods import method_config

        config = method_config(method, profile=profile)
    except (KeyError, ValueError, ImportError, AttributeError, TypeError):
        return None
    if not dataclasses.is_dataclass(config):
        return None
    return tuple((f.name, getattr(config, f.name)) for f in dataclasses.fields(config))


def method_defaults(method: str, profile: str) -> dict | None:
    """The method's config at a profile as a dict (for `lookup(defaults=...)`), None for a method
    without one. Imports the methods (torch)."""
    found = _defaults(method, profile)
    return None if found is None else dict(found)


def load_reference(source: str) -> Reference:
    """"paper" (the figures robustad ships) or the path of a CSV in the same format."""
    if str(source).strip().lower() == PAPER:
        rows = [row for name in PAPER_FILES for row in read_reference_csv(FIGURES_DIR / name)]
        return Reference(PAPER_SOURCE, rows)
    path = Path(source).expanduser()
    if not path.is_file():
        raise ReferenceError(f"--reference {source}: expected 'paper' or the path of a CSV file "
                             f"(no file {path.resolve()})")
    return Reference(str(path.resolve()), read_reference_csv(path))
