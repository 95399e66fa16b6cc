"""Result tables in the PatchGuard paper's layouts, from the result records of `bench run`.

PatchGuard (Nafez et al., CVPR 2025, https://arxiv.org/abs/2506.09237) reports AUROC in percent as
"clean / adversarial". Three layouts:

- `methods` (Tables 1 and 2): rows datasets, columns methods, each dataset's value the mean over its
  categories, and an "Average" row (the mean of the dataset rows). Image AUROC for task `ad`,
  pixel AUROC for task `al`. One attack setting (attack, steps, objective, norm, ε, profile) per
  table: the one given by the filters, else the most common one among the records (for `ad` the
  detection objective and for `al` the localization objective are preferred when present). The
  best adversarial value of each row is bold.
- `categories` (Tables 13–18): per method and dataset, rows categories and an "Average" row,
  columns image clean, image adversarial, pixel clean, pixel adversarial (`task` is not used).
- `attacks` (Table 4): rows dataset × task (AD, AL), a "Clean" column, then one column per attack
  setting with the adversarial value; the strongest attack of each row (the lowest adversarial
  AUROC) is bold.

Values are means over seeds, then over categories. A value marked `*` averages fewer categories
(or datasets) than the others of its table have, so it is not comparable as it stands; `–` is a
value that is missing (a failed cell, or no pixel masks as for Head-CT). Several records of one
cell (same `cell_id`) count once: the newest successful one, else the newest failed one.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from robustad.attacks.registry import split_attack_name
from robustad.bench.results.display_names import (attack_display_name, attack_table_order, dataset_display_name,
                                          dataset_table_order, method_display_name, method_table_order)
from robustad.bench.results.loading import load_records, unique_cells
from robustad.bench.results.records import Record, records_dir
from robustad.bench.results.reference import config_key, method_defaults
from robustad.bench.report.table_render import INCOMPLETE, REPEATED, Compared, Table, Value, render
from robustad.core.files import write_text_atomic
from robustad.core.parsing import parse_eps

__all__ = ["build_table", "format_cell_result", "load_records", "table_path", "write_tables"]

LAYOUTS = ("methods", "categories", "attacks")
TASKS = ("ad", "al")
FORMATS = ("latex", "markdown", "csv")
EXTENSIONS = {"latex": "tex", "markdown": "md", "csv": "csv"}
TASK_METRIC = {"ad": "image_auroc", "al": "pixel_auroc"}
TASK_OBJECTIVE = {"ad": "detection", "al": "localization"}


NORM_NAMES = {"linf": "L∞", "l2": "L2"}


# ---------------------------------------------------------------------------------------------
# Attack settings and selection


def _attack_and_steps(attack: str, steps: int | None) -> tuple[str, int | None]:
    """`pgd-1000` with steps 1000 (or null) is attack `pgd` with 1000 steps. A `worst:` name stays
    whole: its members carry their own budgets (`worst:pgd-20,square-5000`)."""
    if attack.startswith("worst:"):
        return attack, steps
    base, suffix = split_attack_name(attack)
    if suffix is not None and (steps is None or steps == suffix):
        return base, suffix
    return attack, steps


def _options_text(options: dict) -> str:
    """"loss=ce, step_size=0.00784": attack options as a column label keeps them apart."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(options.items()))


def _member_label(member: str) -> str:
    """`pgd-20` -> `PGD-20`, `square-5000` -> `Square-5000`: a `worst:` member with its budget."""
    attack, steps = _attack_and_steps(member, None)
    name = attack_display_name(attack)
    return f"{name}-{steps}" if steps is not None and steps > 1 else name


def _worst_matches(recorded: str, wanted: str) -> bool:
    """`worst:pgd,square` matches the record `worst:pgd-20,square-5000`: a wanted member without
    `-N` matches that attack at any budget, one with `-N` only that budget."""
    have, want = recorded[len("worst:"):].split(","), wanted[len("worst:"):].split(",")
    if len(have) != len(want):
        return False
    for recorded_member, wanted_member in zip(have, want):
        attack, steps = _attack_and_steps(recorded_member.strip(), None)
        wanted_attack, wanted_steps = _attack_and_steps(wanted_member.strip().lower(), None)
        if attack != wanted_attack or (wanted_steps is not None and steps != wanted_steps):
            return False
    return True


@dataclass(frozen=True, order=True)
class AttackSetting:
    """What makes two records comparable in one table column."""

    profile: str
    attack: str
    steps: int
    objective: str
    norm: str
    eps: float
    eps_text: str
    options: str = ""  # the cell's non-default attack options (--step-size, --attack-option ...)

    @classmethod
    def of(cls, record: dict) -> "AttackSetting":
        attack, steps = _attack_and_steps(record.attack, record.steps)
        eps = round(float(record.eps), 6)
        return cls(record.profile, attack, -1 if steps is None else steps, record.objective,
                   record.norm, eps, record.eps_text or f"{eps:g}", _options_text(record.attack_options))

    def attack_label(self) -> str:
        if self.attack.startswith("worst:"):
            label = "worst:" + ",".join(_member_label(m) for m in self.attack[len("worst:"):].split(","))
        else:
            name = attack_display_name(self.attack)
            label = f"{name}-{self.steps}" if self.steps > 1 else name
        return f"{label} [{self.options}]" if self.options else label

    def describe(self) -> str:
        return (f"{self.attack_label()}, ε = {self.eps_text} ({NORM_NAMES[self.norm]}), "
                f"{self.objective} objective, profile {self.profile}")


def _matches(record: dict, filters: dict) -> bool:
    setting = AttackSetting.of(record)
    for key, wanted in filters.items():
        if wanted is None:
            continue
        if key == "eps":
            if not math.isclose(setting.eps, parse_eps(wanted), rel_tol=1e-4, abs_tol=1e-6):
                return False
        elif key == "attack" and str(wanted).startswith("worst:"):
            if not setting.attack.startswith("worst:") or not _worst_matches(setting.attack, str(wanted)):
                return False
        elif key == "attack":
            attack, steps = _attack_and_steps(str(wanted), None)
            if setting.attack != attack or (steps is not None and setting.steps != steps):
                return False
        elif key == "steps":
            if setting.steps != int(wanted):
                return False
        elif key == "method":
            if wanted not in (record.method_label, record.method):
                return False
        elif key == "dataset":
            if record.dataset != wanted:
                return False
        elif getattr(setting, key) != str(getattr(wanted, "value", wanted)):
            return False
    return True


def _filtered(records: list[dict], filters: dict) -> list[dict]:
    records, _ = unique_cells(records)
    chosen = [r for r in records if _matches(r, filters)]
    if not chosen:
        given = ", ".join(f"{k}={v}" for k, v in filters.items() if v is not None) or "none"
        raise ValueError(f"no result records match the filters ({given}); {len(records)} record(s) in all")
    return chosen


def _most_common(records: list[dict], key, prefer=None):
    """The most common value of key(record), among those satisfying `prefer` when any does."""
    counts = Counter(key(r) for r in records)
    candidates = [k for k in counts if prefer is None or prefer(k)] or list(counts)
    return max(candidates, key=lambda k: (counts[k], k)), len(counts)


# ---------------------------------------------------------------------------------------------
# Values


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _metric(record: Record, phase: str, metric: str) -> float | None:
    return record.metric(phase, metric)


def _category_means(records: list[dict], phase: str, metric: str) -> dict[str, float | None]:
    """Per category, the mean over seeds of one metric.

    Records of one seed (e.g. several attacks, whose clean values are the same model's) are first
    averaged together, so every seed weighs the same.
    """
    by_seed: dict[tuple, list] = {}
    for record in records:
        by_seed.setdefault((record.category, record.seed), []).append(_metric(record, phase, metric))
    by_category: dict[str, list] = {}
    for (category, _), values in by_seed.items():
        by_category.setdefault(category, []).append(_mean(values))
    return {category: _mean(values) for category, values in by_category.items()}


def _repeated(records: list[Record], phase: str) -> bool:
    """Whether any of the records' values of `phase` is a mean over repeated evaluations."""
    return any(getattr(record, phase) is not None and getattr(record, phase).repeated for record in records)


def _dataset_mean(records: list[dict], phase: str, metric: str, n_categories: int) -> Value:
    values = [v for v in _category_means(records, phase, metric).values() if v is not None]
    if not values:
        return Value(None)
    return Value(sum(values) / len(values), complete=len(values) >= n_categories, repeated=_repeated(records, phase))


def _bold_extreme(values: list[Value], highest: bool) -> list[Value]:
    """The best value bold; a `*` value (a mean over fewer categories) is not comparable and never bold."""
    comparable = [round(v.number, 1) for v in values if v.number is not None and v.complete]
    if len(comparable) < 2:
        return values
    target = max(comparable) if highest else min(comparable)
    return [Value(v.number, v.complete, v.number is not None and v.complete and round(v.number, 1) == target,
                  v.repeated) for v in values]


# ---------------------------------------------------------------------------------------------
# Published figures beside measured ones (`--reference`)


def reference_for(reference, record: Record, setting: AttackSetting, *, dataset: str, category: str, task: str):
    """The published figure of what `record`'s method and config under `setting` gave, or None."""
    if reference is None or setting.objective != TASK_OBJECTIVE[task]:
        return None  # AD figures are compared under the detection objective, AL under localization
    return reference.lookup(method=record.method, dataset=dataset, category=category, task=TASK_OBJECTIVE[task],
                            attack=setting.attack, steps=None if setting.steps < 0 else setting.steps,
                            norm=setting.norm, eps=setting.eps_text, config=record.config_overrides,
                            defaults=method_defaults(record.method, record.profile))


def beside(value: Value, reference, published, phase: str):
    """`value` with the published figure of `phase` beside it (unchanged without --reference)."""
    if reference is None:
        return value
    return Compared(value, getattr(published, phase) if published is not None else None, reference.short_name)


def _repeated_note(records) -> str:
    if not any(_repeated([r], phase) for r in records for phase in ("clean", "adversarial")):
        return ""
    return (f" {REPEATED}: a randomized detector's mean over repeated evaluations (the records keep each "
            f"metric's standard deviation and worst value).")


def _reference_note(reference) -> str:
    if reference is None:
        return ""
    return (f" Beside each value, in parentheses: the published figure ({reference.short_name}: {reference.source}) "
            f"and the difference, measured minus published.")


def _average_reference(reference, record: Record, setting: AttackSetting, task: str, datasets: set[str]):
    """The published mean over datasets, where the measured mean covers the same datasets."""
    if reference is None:
        return None
    published = reference.matching(method=record.method, category="mean", task=TASK_OBJECTIVE[task],
                                   attack=setting.attack, steps=None if setting.steps < 0 else setting.steps,
                                   norm=setting.norm, eps=setting.eps_text, config=record.config_overrides,
                                   defaults=method_defaults(record.method, record.profile))
    average = next((row for row in published if row.dataset == "average"), None)
    if average is None:
        return None
    covered = {row.dataset for row in published if row.value.table == average.value.table and row.dataset != "average"}
    return average.value if covered == datasets else None


def unmatched_reference_rows(reference, records: list[Record]) -> list[str]:
    """One line per row of a reference CSV that no measured record matches, saying why: the fields in
    which the nearest record differs (e.g. "attack pgd vs measured pgd-5"). Empty for the paper's
    figures, which name far more cells than any one results folder holds."""
    if reference is None or reference.short_name == "paper":
        return []
    matched: set[int] = set()
    for record in records:
        if record.failed:
            continue
        setting = AttackSetting.of(record)
        for category in (record.category, "mean"):
            rows = reference.matching(method=record.method, dataset=record.dataset, category=category,
                                      task=record.objective, attack=setting.attack,
                                      steps=None if setting.steps < 0 else setting.steps, norm=setting.norm,
                                      eps=setting.eps_text, config=record.config_overrides,
                                      defaults=method_defaults(record.method, record.profile))
            matched.update(id(row) for row in rows)
    lines = []
    for row in reference.rows:
        if id(row) in matched:
            continue
        why = _nearest_difference(row, [r for r in records if not r.failed])
        lines.append(f"{reference.source}, line {row.line} ({row.method}, {row.dataset}/{row.category}, {row.task}, "
                     f"{row.attack}{f'-{row.steps}' if row.steps else ''}): matched no measured cell ({why})")
    return lines


def _nearest_difference(row, records: list[Record]) -> str:
    """How the record nearest to a reference row differs from it, field by field."""
    if not records:
        return "no records"

    def differences(record: Record) -> list[str]:
        setting = AttackSetting.of(record)
        measured_attack = setting.attack + (f"-{setting.steps}" if setting.steps > 0 else "")
        wanted_attack = row.attack + (f"-{row.steps}" if row.steps else "")
        pairs = [("method", row.method, record.method.lower()), ("dataset", row.dataset, record.dataset.lower()),
                 ("category", row.category, row.category if row.category == "mean" else record.category),
                 ("task", row.task, record.objective), ("attack", wanted_attack, measured_attack),
                 ("norm", row.norm, record.norm), ("eps", row.eps_text, record.eps_text)]
        found = [f"{name} {wanted} vs measured {measured}" for name, wanted, measured in pairs if wanted != measured]
        if row.config is not None and row.config_key(method_defaults(record.method, record.profile)) != \
                config_key(record.config_overrides, method_defaults(record.method, record.profile)):
            found.append(f"config {row.config_text or 'defaults'} vs measured "
                         f"{', '.join(f'{k}={v}' for k, v in sorted(record.config_overrides.items())) or 'defaults'}")
        elif row.config is None:
            found.append("a variant no --config selects")
        return found

    # fewest differing fields; among those, a record of the same attack (pgd-20 for a row's pgd) first
    nearest = min((differences(record) for record in records),
                  key=lambda found: (len(found), not any(d.startswith(f"attack {row.attack}") and
                                                         f"measured {row.attack}-" in d for d in found)))
    return "; ".join(nearest) if nearest else "its figure is for a different table layout"


# ---------------------------------------------------------------------------------------------
# Layouts


def _slug(text: str) -> str:
    """Letters and digits only, for LaTeX labels."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def dataset_name(name: str) -> str:
    return dataset_display_name(name)


def method_name(name: str) -> str:
    return method_display_name(name)


def category_name(name: str) -> str:
    return " ".join(word[:1].upper() + word[1:] for word in re.split(r"[_ ]+", name))


COMPARABILITY = ("root", "precision", "device")  # fields that make two records of a dataset not comparable


def _dataset_groups(records: list[Record]) -> list[tuple[str, list[Record]]]:
    """(row label, records) per dataset; records of one dataset that differ in a `COMPARABILITY`
    field (another dataset tree, bf16 against fp32, GPU against CPU) are never merged silently:
    they form separate groups, each labelled with the values that differ, e.g.
    "MVTec AD (root=/data/a)". Records without a value (older files) count as one more value."""
    groups = []
    for dataset in sorted({r.dataset for r in records}, key=lambda d: (dataset_table_order(d), d)):
        mine = [r for r in records if r.dataset == dataset]
        varying = [f for f in COMPARABILITY if len({getattr(r, f) for r in mine}) > 1]
        keys = sorted({tuple(str(getattr(r, f)) for f in varying) for r in mine})
        for key in keys:
            label = dataset_name(dataset)
            if varying:
                label += " (" + ", ".join(f"{f}={v}" for f, v in zip(varying, key)) + ")"
            groups.append((label, [r for r in mine if tuple(str(getattr(r, f)) for f in varying) == key]))
    return groups


def _methods(records) -> list[str]:
    # the paper's order puts its own method last
    labels = {r.method_label: r.method for r in records}
    return sorted(labels, key=lambda label: (method_table_order(labels[label]), method_name(label).lower(), label))


def _incomplete_note(rows, what: str) -> str:
    values = [getattr(p, "measured", p) for row in rows for cell in row
              for p in (cell if isinstance(cell, list) else [cell])]
    return f" {INCOMPLETE}: a mean over fewer {what} than the others." if any(
        isinstance(v, Value) and v.number is not None and not v.complete for v in values) else ""


def _failures_note(records) -> str:
    failed = sum(1 for r in records if r.failed)
    return f" {failed} of {len(records)} cells failed and count as missing (–)." if failed else ""


def _selection_note(n_settings: int) -> str:
    if n_settings < 2:
        return ""
    return (f" Chosen as the most common of {n_settings} attack settings in the records; "
            f"choose another with the attack, steps, objective, norm, eps and profile filters.")


def _methods_tables(records, task, filters, reference=None) -> list[Table]:
    chosen = _filtered(records, filters)
    setting, n_settings = _most_common(chosen, AttackSetting.of, lambda s: s.objective == TASK_OBJECTIVE[task])
    chosen = [r for r in chosen if AttackSetting.of(r) == setting]
    metric = TASK_METRIC[task]
    methods = _methods(chosen)
    rows, row_datasets, per_method = [], [], {m: {"clean": [], "adversarial": []} for m in methods}
    example = {m: next(r for r in chosen if r.method_label == m) for m in methods}
    measured_datasets = {m: set() for m in methods}
    for dataset_label, of_dataset in _dataset_groups(chosen):
        n_categories = len({r.category for r in of_dataset})
        cells = {}
        for method in methods:
            mine = [r for r in of_dataset if r.method_label == method]
            cells[method] = {phase: _dataset_mean(mine, phase, metric, n_categories) if mine else Value(None)
                             for phase in ("clean", "adversarial")}
        nothing = all(v.number is None for c in cells.values() for v in c.values())
        if nothing and not any(r.failed for r in of_dataset):
            continue  # a metric the dataset cannot have (pixel AUROC without masks)
        for method in methods:
            for phase in ("clean", "adversarial"):
                per_method[method][phase].append(cells[method][phase])
        adversarial = _bold_extreme([cells[m]["adversarial"] for m in methods], highest=True)
        dataset = of_dataset[0].dataset
        published = {m: reference_for(reference, example[m], setting, dataset=dataset, category="mean", task=task)
                     for m in methods}
        for m in methods:
            if cells[m]["adversarial"].number is not None:
                measured_datasets[m].add(dataset)
        row_datasets.append(dataset)
        rows.append([dataset_label] + [[beside(cells[m]["clean"], reference, published[m], "clean"),
                                        beside(a, reference, published[m], "adversarial")]
                                       for m, a in zip(methods, adversarial)])
    if not rows:
        raise ValueError(f"no {metric} values in the selected records ({setting.describe()})")

    def average(values: list[Value], n_datasets: int) -> Value:
        present = [v for v in values if v.number is not None]
        if not present:
            return Value(None)
        complete = len(present) >= n_datasets and all(v.complete for v in present)
        return Value(sum(v.number for v in present) / len(present), complete)

    # A dataset split over several rows (two roots, precisions or devices) has no single value, so there
    # is no mean over datasets either: the Average row stays empty and the caption says why.
    split = sorted({dataset_name(d) for d in row_datasets if row_datasets.count(d) > 1})
    averages = {}
    for phase in ("clean", "adversarial"):
        n_datasets = sum(any(per_method[m][phase][i].number is not None for m in methods) for i in range(len(rows)))
        averages[phase] = [Value(None) if split else average(per_method[m][phase], n_datasets) for m in methods]
    adversarial = _bold_extreme(averages["adversarial"], highest=True)
    published = {m: _average_reference(reference, example[m], setting, task, measured_datasets[m]) for m in methods}
    average_row = ["Average"] + [[beside(c, reference, published[m], "clean"),
                                  beside(a, reference, published[m], "adversarial")]
                                 for m, c, a in zip(methods, averages["clean"], adversarial)]
    what = "Detection (image" if task == "ad" else "Localization (pixel"
    caption = (f"{what} AUROC, %) as clean / adversarial under {setting.describe()}; a dataset's value is the "
               f"mean over its categories; the best adversarial value of each row is bold."
               + _incomplete_note(rows + [average_row], "categories or datasets") + _selection_note(n_settings)
               + _failures_note(chosen) + _reference_note(reference) + _repeated_note(chosen)
               + (f" No Average: {', '.join(split)} is read from several roots, precisions or devices (one row "
                  f"each), and a mean over those rows is not a mean over datasets." if split else ""))
    return [Table(caption, ["Dataset"] + [method_name(m) for m in methods], [rows, [average_row]],
                  f"tab:robustad-methods-{task}")]


def _categories_tables(records, filters, reference=None) -> list[Table]:
    chosen = _filtered(records, filters)
    setting, n_settings = _most_common(chosen, AttackSetting.of)
    chosen = [r for r in chosen if AttackSetting.of(r) == setting]
    columns = [("clean", "image_auroc"), ("adversarial", "image_auroc"), ("clean", "pixel_auroc"),
               ("adversarial", "pixel_auroc")]
    tables = []
    for method in _methods(chosen):
        for dataset_label, of_dataset in _dataset_groups(chosen):
            mine = [r for r in of_dataset if r.method_label == method]
            if not mine:
                continue
            means = [_category_means(mine, phase, metric) for phase, metric in columns]
            categories = sorted(means[0])
            tasks = ["ad" if metric == "image_auroc" else "al" for _, metric in columns]

            def published(category, values):
                return [beside(value, reference, reference_for(reference, mine[0], setting, dataset=mine[0].dataset,
                                                               category=category, task=task), phase)
                        for value, task, (phase, _) in zip(values, tasks, columns)]

            rows = []
            for c in categories:
                values = [Value(m[c]) for m in means]
                rows.append([method_name(method), dataset_label, category_name(c)] + published(c, values))
            values = [Value(_mean(m.values()), complete=all(v is not None for v in m.values())) for m in means]
            average = published("mean", values)
            caption = (f"Per-category AUROC (%) of {method_name(method)} on {dataset_label}, clean and "
                       f"adversarial, under {setting.describe()}." + _incomplete_note([average], "categories")
                       + _selection_note(n_settings)
                       + _failures_note(mine) + _reference_note(reference))
            tables.append(Table(caption, ["Method", "Dataset", "Category", "Image clean", "Image adversarial",
                                          "Pixel clean", "Pixel adversarial"],
                                [rows, [[method_name(method), dataset_label, "Average"] + average]],
                                f"tab:robustad-categories-{_slug(method)}-{_slug(dataset_label)}",
                                header_spans=[("", 1), ("Image-level AUROC (%)", 2), ("Pixel-level AUROC (%)", 2)],
                                latex_header=["Category", "Clean", "Adversarial", "Clean", "Adversarial"],
                                csv_only_columns=2))
    return tables


def _attacks_tables(records, filters, reference=None) -> list[Table]:
    chosen = _filtered(records, filters)
    profile, _ = _most_common(chosen, lambda r: r.profile)
    chosen = [r for r in chosen if r.profile == profile]
    settings = sorted({AttackSetting.of(r) for r in chosen},
                      key=lambda s: (attack_table_order(s.attack),
                                     s.attack, s.norm, s.eps, s.objective, s.steps))
    varying = {f for f in ("objective", "norm", "eps_text") if len({getattr(s, f) for s in settings}) > 1}

    def column(s: AttackSetting) -> str:
        extra = [NORM_NAMES[s.norm]] if "norm" in varying else []
        extra += [s.eps_text] if "eps_text" in varying else []
        extra += [s.objective[:3] + "."] if "objective" in varying else []
        return s.attack_label() + (f" ({', '.join(extra)})" if extra else "")

    methods = _methods(chosen)
    groups = []
    for method in methods:
        for dataset_label, of_dataset in _dataset_groups(chosen):
            mine = [r for r in of_dataset if r.method_label == method]
            if not mine:
                continue
            n_categories = len({r.category for r in of_dataset})
            group = []
            for task in TASKS:
                metric = TASK_METRIC[task]
                clean = _dataset_mean(mine, "clean", metric, n_categories)
                attacked = [_dataset_mean([r for r in mine if AttackSetting.of(r) == s], "adversarial", metric,
                                          n_categories) for s in settings]
                if clean.number is None and all(v.number is None for v in attacked) and not _failures_note(mine):
                    continue
                labels = ([method_name(method)] if len(methods) > 1 else []) + [dataset_label, task.upper()]
                published = [reference_for(reference, mine[0], s, dataset=mine[0].dataset, category="mean", task=task)
                             for s in settings]
                clean_published = next((p for p in published if p is not None and p.clean is not None), None)
                group.append(labels + [beside(clean, reference, clean_published, "clean")]
                             + [beside(v, reference, p, "adversarial")
                                for v, p in zip(_bold_extreme(attacked, highest=False), published)])
            if group:
                groups.append(group)
    if not groups:
        raise ValueError("no AUROC values in the selected records")
    header = (["Method"] if len(methods) > 1 else []) + ["Dataset", "Task", "Clean"] + [column(s) for s in settings]
    common = settings[0]
    fixed = [f"ε = {common.eps_text} ({NORM_NAMES[common.norm]})"] if not {"norm", "eps_text"} & varying else []
    fixed += [f"{common.objective} objective"] if "objective" not in varying else []
    caption = (f"AUROC (%) under each attack (profile {profile}" + "".join(f", {f}" for f in fixed) + "); AD: image "
               "AUROC, AL: pixel AUROC; the strongest attack of each row (lowest AUROC) is bold."
               + _incomplete_note([row for g in groups for row in g], "categories") + _failures_note(chosen)
               + _reference_note(reference))
    return [Table(caption, header, groups, "tab:robustad-attacks")]


def build_table(records: list[dict], *, layout: str = "methods", task: str = "ad", fmt: str = "latex",
                method: str | None = None, dataset: str | None = None, attack: str | None = None,
                steps: int | None = None, objective: str | None = None, norm: str | None = None,
                eps: float | str | None = None, profile: str | None = None, reference=None) -> str:
    """The table of `records` in a layout (methods|categories|attacks) and format (latex|markdown|csv).

    task: ad (image AUROC) or al (pixel AUROC), used by the `methods` layout. The keyword filters
    keep only matching records (`attack` may carry its steps, e.g. "pgd-1000"; `eps` a number or
    "8/255"); see the module docstring for what each layout does with several attack settings.
    LaTeX uses booktabs rules. Raises ValueError when no record matches. `reference`
    (`bench/results/reference.py`'s `Reference`) puts the published figure and the difference beside each value.
    """
    for name, value, valid in (("layout", layout, LAYOUTS), ("task", task, TASKS), ("fmt", fmt, FORMATS)):
        if value not in valid:
            raise ValueError(f"{name} {value!r}: expected one of {', '.join(valid)}")
    filters = dict(method=method, dataset=dataset, attack=attack, steps=steps, objective=objective, norm=norm,
                   eps=eps, profile=profile)
    if layout == "methods":
        tables = _methods_tables(records, task, filters, reference)
    elif layout == "categories":
        tables = _categories_tables(records, filters, reference)
    else:
        tables = _attacks_tables(records, filters, reference)
    return render(tables, fmt)


def table_path(results_dir, layout: str, task: str, fmt: str, reference=None) -> Path:
    """`<results>/tables/<layout>[_<task>][_vs_<paper|ref>].<tex|md|csv>` (the task only for the methods
    layout; the suffix with `--reference`)."""
    name = f"{layout}_{task}" if layout == "methods" else layout
    name += f"_vs_{reference.short_name}" if reference is not None else ""
    return Path(results_dir).expanduser().resolve() / "tables" / f"{name}.{EXTENSIONS[fmt]}"


def write_tables(results_dir, layout: str = "methods", task: str = "ad", fmt: str = "latex", *,
                 records: list[dict] | None = None, reference=None, **filters) -> list[Path]:
    """Builds the table from the records under `results_dir` (or `records`) and writes it under
    `<results>/tables/`; returns the paths written. Bad record files are skipped (see `load_records`)."""
    if records is None:
        records, _ = load_records(results_dir)
    if not records:
        raise ValueError(f"no usable result records under {records_dir(Path(results_dir))}; run `bench run` first")
    text = build_table(records, layout=layout, task=task, fmt=fmt, reference=reference, **filters)
    path = table_path(results_dir, layout, task, fmt, reference)
    write_text_atomic(path, text)
    return [path]


def format_cell_result(record: dict) -> str:
    """One record as a small text table (clean vs adversarial image/pixel AUROC and AUPRO)."""
    setting = AttackSetting.of(record)
    head = (f"{method_name(record.method_label)} on {dataset_name(record.dataset)}/{record.category}, "
            f"{setting.describe()}, seed {record.seed}")
    if record.failed:
        return f"{head}\nFAILED: {record.error}"
    rows = [[title] + [Value(_metric(record, phase, key), repeated=_repeated([record], phase)).text()
                       for phase in ("clean", "adversarial")]
            for title, key in (("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"),
                               ("pixel AUPRO", "pixel_aupro"))]
    body = tabulate(rows, headers=["metric (%)", "clean", "adversarial"], tablefmt="simple", disable_numparse=True,
                    colalign=("left", "right", "right"))
    counts = f"{record.n_test} test images ({record.n_test_anomalous} anomalous)"
    return f"{head}\n{body}\n{counts}"
