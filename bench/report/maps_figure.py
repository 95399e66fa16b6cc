"""The paper's Figure 1 from a cell's saved example maps: per test image, the image, its ground
truth, the clean anomaly map, the adversarial image and the adversarial anomaly map.

The examples are those the runner saved with the record (`bench/results/example_maps.py`), so drawing the
figure needs no model and no attack. Both maps of a row share one colour scale (the range of that
image's clean and adversarial maps), so what the attack does to the map shows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from robustad.bench.results.example_maps import load_examples
from robustad.bench.results.records import Record

COLUMNS = ("image", "ground truth", "clean map", "adversarial image", "adversarial map")


def examples_file(results: Path, record: Record) -> Path:
    if not record.examples:
        raise ValueError(f"record {record.cell_id} names no example maps (it was written before the runner saved "
                         f"them, or they could not be saved); rerun the cell with --force")
    return Path(results).expanduser().resolve() / record.examples


def draw_maps_figure(arrays: dict[str, np.ndarray], title: str = ""):
    """A matplotlib Figure (no pyplot: no global state) with one row per example image."""
    from matplotlib.figure import Figure

    rows = len(arrays["images"])
    fig = Figure(figsize=(2.0 * len(COLUMNS), 2.0 * rows + (0.5 if title else 0.2)))
    axes = np.atleast_2d(fig.subplots(rows, len(COLUMNS), squeeze=False))
    for row in range(rows):
        maps = np.stack([arrays["clean_maps"][row], arrays["adversarial_maps"][row]]).astype(np.float32)
        finite = maps[np.isfinite(maps)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        label = "anomalous" if int(arrays["labels"][row]) == 1 else "normal"
        panels = (arrays["images"][row], arrays["masks"][row], arrays["clean_maps"][row],
                  arrays["adversarial_images"][row], arrays["adversarial_maps"][row])
        for column, (name, panel) in enumerate(zip(COLUMNS, panels)):
            ax = axes[row, column]
            if name == "ground truth":
                ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
            elif name.endswith("map"):
                ax.imshow(panel.astype(np.float32), cmap="jet", vmin=low, vmax=high)
            else:
                ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
            if column == 0:
                ax.set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig, out_stem: Path, formats=("png", "pdf")) -> list[Path]:
    """Saves `fig` as out_stem.png, out_stem.pdf ...; returns the paths."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_stem.with_name(f"{out_stem.name}.{fmt}")
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def maps_figure_title(record: Record) -> str:
    from robustad.bench.results.display_names import dataset_display_name, method_display_name
    from robustad.bench.report.tables import NORM_NAMES, AttackSetting

    return (f"{method_display_name(record.method_label)} on {dataset_display_name(record.dataset)}/{record.category}: "
            f"{AttackSetting.of(record).attack_label()}, ε = {record.eps_text} ({NORM_NAMES[record.norm]}), "
            f"{record.objective} objective")


def write_maps_figure(results: Path, record: Record, out_stem: Path, formats=("png", "pdf")) -> list[Path]:
    arrays = load_examples(examples_file(results, record))
    return save_figure(draw_maps_figure(arrays, maps_figure_title(record)), out_stem, formats)
