"""Attack strength curves from result records: adversarial AUROC against attack steps and against ε.

One line per method (`by="method"`, each attack its own line style) or per attack (`by="attack"`).
A point is the mean over categories (each the mean over seeds) of the records with that x value;
the other knobs stay fixed along a line (the steps panel keeps ε, the ε panel keeps steps), so
lines that differ in them are drawn apart and named. Image AUROC for task `ad`, pixel for `al`.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from robustad.bench.results.display_names import attack_display_name, dataset_display_name, method_display_name
from robustad.bench.results.records import Record
from robustad.bench.report.tables import NORM_NAMES, TASK_METRIC, AttackSetting

PANELS = ("steps", "eps")


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def strength_points(records: list[Record], task: str, x: str, by: str = "method") -> dict[str, list[tuple]]:
    """{line label: [(x value, mean adversarial AUROC, record count), ...]} for one panel (x: steps | eps).

    Lines with a single x value are left out: they show no trend."""
    if x not in PANELS:
        raise ValueError(f"x={x!r}: expected steps or eps")
    if by not in ("method", "attack"):
        raise ValueError(f"--by {by!r}: expected method or attack")
    metric = TASK_METRIC[task]
    values: dict[tuple, dict] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in records:
        if not record.done:
            continue
        setting = AttackSetting.of(record)
        if x == "steps" and setting.steps < 0:
            continue
        fixed = f"ε = {setting.eps_text}" if x == "steps" else (f"{setting.steps} steps" if setting.steps > 0 else "")
        attack = attack_display_name(setting.attack)
        method = method_display_name(record.method_label)
        first, second = (method, attack) if by == "method" else (attack, method)
        parts = [first, second, NORM_NAMES[setting.norm], setting.objective, fixed, setting.options, setting.profile]
        line = (record.dataset, *parts)
        x_value = setting.steps if x == "steps" else setting.eps
        values[line][x_value][(record.category, record.seed)].append(record.metric("adversarial", metric))
    lines = {}
    for line, by_x in values.items():
        points = []
        for x_value in sorted(by_x):
            per_category = defaultdict(list)
            for (category, _), vals in by_x[x_value].items():
                per_category[category].append(_mean(vals))
            mean = _mean(_mean(v) for v in per_category.values())
            if mean is not None:
                points.append((x_value, mean, sum(len(v) for v in by_x[x_value].values())))
        if len(points) >= 2:
            label = ", ".join(p for p in (dataset_display_name(line[0]), *line[1:]) if p)
            lines[label] = points
    return lines


def draw_strength_figure(records: list[Record], task: str = "ad", by: str = "method", title: str = ""):
    """A matplotlib Figure with the steps panel and the ε panel (those with a line); raises ValueError when
    neither has one."""
    from matplotlib.figure import Figure

    panels = {x: strength_points(records, task, x, by) for x in PANELS}
    if not any(panels.values()):
        raise ValueError("no attack was run at two or more step counts or budgets with the other settings equal; "
                         "run e.g. --attack pgd-5 --attack pgd-20, or --eps 2/255 --eps 8/255")
    shown = [x for x in PANELS if panels[x]]  # a panel without a line is left out
    fig = Figure(figsize=(5.5 * len(shown), 4.2))
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    metric = "image" if task == "ad" else "pixel"
    for ax, x in zip(axes, shown):
        ticks = set()
        for label, points in panels[x].items():
            xs = [p[0] * (255 if x == "eps" else 1) for p in points]
            ticks.update(xs)
            ax.plot(xs, [p[1] for p in points], marker="o", label=label)
        if x == "steps":
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(sorted(ticks), [f"{t:g}" for t in sorted(ticks)])
        ax.set_xlabel("attack steps" if x == "steps" else "ε (× 1/255)")
        ax.set_ylabel(f"adversarial {metric} AUROC (%)")
        ax.set_ylim(-2, 102)
        ax.axhline(50, color="gray", linewidth=0.7, linestyle=":")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def write_strength_figure(records: list[Record], out_stem: Path, task: str = "ad", by: str = "method",
                          formats=("png", "pdf")) -> list[Path]:
    from robustad.bench.report.maps_figure import save_figure

    return save_figure(draw_strength_figure(records, task, by), out_stem, formats)
