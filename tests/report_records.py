"""Real result records of the tiny detector for the figure and report tests, and crafted variants.

`tiny_results` runs 2 categories × (FGSM, PGD-1, PGD-3) of the tiny detector on the synthetic MVTec
tree, with its full training: a model trained for ten steps may rank normal above anomalous, which
the report rightly flags."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from robustad.bench.results.records import Metrics, Record, write_record
from robustad.bench.runner import CellSpec, run_cell

TINY = "tests.tiny_detector:TinyDetector"
CATEGORIES = ("alpha", "beta")
ATTACKS = (("fgsm", None), ("pgd", 1), ("pgd", 3))


def tiny_cells(root) -> list[CellSpec]:
    return [CellSpec(method=TINY, dataset="mvtec", category=category, attack=attack, steps=steps, root=str(root)) for category in CATEGORIES for attack, steps in ATTACKS]


def tiny_results(root, results: Path) -> list[Record]:
    return [run_cell(spec, results=results, progress=False, log=lambda m: None) for spec in tiny_cells(root)]


def crafted(record: Record, *, suffix: str, **changes) -> Record:
    """A copy of `record` as another cell (`cell_id` + suffix) with some fields changed; `clean` and
    `adversarial` may be given as dicts of the metrics to change."""
    for phase in ("clean", "adversarial"):
        if isinstance(changes.get(phase), dict):
            changes[phase] = dataclasses.replace(getattr(record, phase), **changes[phase])
    return dataclasses.replace(record, cell_id=record.cell_id + suffix, **changes)


def write_records(results: Path, records: list[Record]) -> Path:
    for record in records:
        write_record(results, record)
    return results


__all__ = ["ATTACKS", "CATEGORIES", "Metrics", "TINY", "crafted", "tiny_cells", "tiny_results",
           "write_records"]
