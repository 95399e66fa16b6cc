"""Groups and job files: the unit of work every executor runs (docs/design.md, "Work units").

All cells that share one checkpoint key -- method, profile, config overrides, dataset, root, category
and seed -- form a **group**: the model is trained once, then each attack of the group runs on it, one
after another, by one worker that holds the checkpoint's lease (`bench/results/lease.py`).

A group travels as a **job file** the worker reads (HELM's one-RunSpec-JSON-per-job), written by
`bench run` before anything runs::

    <results>/jobs/<group id>__<digest>.json
    {"schema": 1, "group": "<group id>", "results": "/abs/results",
     "options": {"device": "cuda", "precision": "fp32", "attack_batch": null, "redo_before": null},
     "cells": [{CellSpec fields}, ...]}

The digest covers the cells and options, so two commands that ask different things of one group
write two files and never overwrite each other's. `bench status` reads every job file of a results
folder to know its grid; records stay the only state of what is done.

Group ids come from `bench/cells.py`: `method__dataset__category__seed0__profile__<8 hex digits>`.
`--shard i/n` deals groups to n slices with a deterministic, cost-balanced rule (`shard_groups`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from robustad.bench.cells import CellSpec, group_id_of
from robustad.bench.results.records import Record, now_iso, parse_time, write_json_atomic

JOB_SCHEMA = 1


@dataclasses.dataclass(frozen=True)
class Group:
    """The cells of one checkpoint, in the order they were asked for."""

    cells: tuple[CellSpec, ...]

    @property
    def group_id(self) -> str:
        return group_id_of(self.cells[0])

    @property
    def first(self) -> CellSpec:
        return self.cells[0]

    def describe(self) -> str:
        spec = self.first
        config = f" [{', '.join(f'{k}={v}' for k, v in spec.config)}]" if spec.config else ""
        return f"{spec.method}{config} on {spec.dataset}/{spec.category}, seed {spec.seed}, {spec.profile}"

    def attacks(self) -> str:
        return ", ".join(dict.fromkeys(f"{c.attack} {c.eps_text}" for c in self.cells))

    def cell_ids(self) -> list[str]:
        return [cell.cell_id() for cell in self.cells]

    def done(self, records: dict[str, Record | None]) -> bool:
        """Every cell has a complete record without error (`records`: cell id → record, read once)."""
        return all(records.get(cell_id) is not None and records[cell_id].done for cell_id in self.cell_ids())


def make_groups(specs: Iterable[CellSpec]) -> list[Group]:
    """The groups of a grid, in the order their first cells appear; a repeated cell counts once."""
    cells: dict[str, dict[str, CellSpec]] = {}
    for spec in specs:
        cells.setdefault(group_id_of(spec), {}).setdefault(spec.cell_id(), spec)
    return [Group(tuple(found.values())) for found in cells.values()]


# ---------------------------------------------------------------------------------------------
# Job files


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a worker runs the cells of a job (the `bench run` options that are not the grid)."""

    device: str = "cpu"
    precision: str = "fp32"
    attack_batch: int | None = None
    evaluations: int | None = None  # scoring passes of a randomized detector (None: the default)
    redo_before: str | None = None  # --force: rerun the cells whose record was written before (ISO, UTC)

    def forces(self, record: Record | None) -> bool:
        """Whether to rerun a cell although its record (read by the caller) may be complete: --force
        reruns each cell of its command once (a retried worker keeps the records the command already wrote)."""
        if self.redo_before is None:
            return False
        if record is None:
            return True
        created, cutoff = record.created_time, parse_time(self.redo_before)
        return created is None or cutoff is None or created < cutoff


@dataclasses.dataclass(frozen=True)
class Job:
    """One group to run, with where its records go and how to run it; a job file's content."""

    group: Group
    results: str  # absolute results folder
    options: RunOptions

    def to_json(self) -> dict[str, Any]:
        return {"schema": JOB_SCHEMA, "group": self.group.group_id, "results": self.results,
                "options": dataclasses.asdict(self.options), "cells": [cell.to_json() for cell in self.group.cells]}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "job file") -> "Job":
        if not isinstance(data, dict) or data.get("schema") != JOB_SCHEMA or not data.get("cells"):
            raise ValueError(f"{source}: not a robustad job file (expected schema {JOB_SCHEMA} and a list of cells)")
        options = dict(data.get("options") or {})
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(RunOptions)})
        if unknown:
            raise ValueError(f"{source}: unknown options {', '.join(unknown)}")
        group = Group(tuple(CellSpec.from_json(cell) for cell in data["cells"]))
        if group.group_id != data.get("group") or len(make_groups(group.cells)) != 1:
            raise ValueError(f"{source}: its cells are not one group {data.get('group')!r}")
        return cls(group=group, results=str(data["results"]), options=RunOptions(**options))

    def file_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.to_json(), sort_keys=True, default=str).encode()).hexdigest()[:8]
        return f"{self.group.group_id}__{digest}.json"


def jobs_dir(results: str | Path) -> Path:
    return Path(results).expanduser().resolve() / "jobs"


def write_job(job: Job) -> Path:
    """Writes the job file (atomically; an identical one already there is kept) and returns its path."""
    path = jobs_dir(job.results) / job.file_name()
    if not path.exists():
        write_json_atomic(path, job.to_json())
    return path


def read_job(path: str | Path) -> Job:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"job file {path}: cannot read it ({err})") from err
    return Job.from_json(data, source=f"job file {path}")


def grid_of(results: str | Path) -> tuple[list[Group], list[str]]:
    """Every group ever asked of a results folder (the cells of all its job files, merged by group),
    and the problems with unreadable job files."""
    cells: dict[str, dict[str, CellSpec]] = {}
    problems = []
    for path in sorted(jobs_dir(results).glob("*.json")):
        try:
            job = read_job(path)
        except ValueError as err:
            problems.append(str(err))
            continue
        found = cells.setdefault(job.group.group_id, {})
        for cell in job.group.cells:
            found.setdefault(cell.cell_id(), cell)
    return [Group(tuple(found.values())) for found in cells.values()], problems


def new_run_options(device: str, precision: str, attack_batch: int | None, force: bool,
                    evaluations: int | None = None) -> RunOptions:
    """The options of one `bench run` command; `--force` reruns its cells once (records older than now)."""
    return RunOptions(device=device, precision=precision, attack_batch=attack_batch, evaluations=evaluations,
                      redo_before=now_iso() if force else None)


# ---------------------------------------------------------------------------------------------
# Shards


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard i/n` as (i, n), 0 <= i < n."""
    index, sep, count = str(text).partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        index = count = -1
    if not sep or count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4 ... 3/4 "
                         f"(i is $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX)")
    return index, count


def shard_groups(groups: list[Group], costs: dict[str, float], index: int, count: int) -> list[Group]:
    """The `index`-th of `count` slices: groups dealt longest first (ties by id) to the slice with the
    least work so far. Every slice sees the same grid and the same costs, so the slices are disjoint
    and together cover the grid; done groups are dropped after slicing, so slices stay stable while
    other shards finish theirs."""
    load = [0.0] * count
    mine = []
    for group in sorted(groups, key=lambda g: (-costs.get(g.group_id, 0.0), g.group_id)):
        target = min(range(count), key=lambda i: (load[i], i))
        load[target] += costs.get(group.group_id, 0.0) or 1.0
        if target == index:
            mine.append(group)
    return mine
