"""`bench status --results DIR`: which groups of a grid are done, running, queued, failed or pending.

The grid is every group of the folder's job files (`bench/run/jobs.py`); a group's state comes from
what the folder holds, whichever executor wrote it:

- **done**: every cell has a complete record without error;
- **running**: a live process holds the group's checkpoint lease (`bench/results/lease.py`), or its latest SLURM
  task (`<results>/slurm/submissions/`) runs;
- **queued**: that task still waits in `squeue`;
- **failed**: some cell has a record with an error (its error is listed);
- **pending**: nothing of the above -- never run, or its worker died or was preempted: a rerun of the
  same `bench run` runs it.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from robustad.bench.run.jobs import Group, grid_of
from robustad.bench.results.lease import Holder, live_leases
from robustad.bench.results.records import read_record, record_path

STATES = ("done", "running", "queued", "failed", "pending")
SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"}


@dataclasses.dataclass
class GroupStatus:
    group: Group
    state: str
    cells_done: int
    cells_failed: int
    errors: list[tuple[str, str]]  # (cell id, error) of failed cells
    holder: Holder | None = None
    slurm: tuple[str, str] | None = None  # (job id, squeue state) of a queued group

    @property
    def cells(self) -> int:
        return len(self.group.cells)


def group_statuses(results: str | Path, groups: list[Group], *, queued: dict[str, tuple[str, str]] | None = None) -> list[GroupStatus]:
    """The state of each group (see the module docstring). `queued`: group id -> (SLURM job, state)
    of groups waiting in or running from SLURM's queue (`executors.slurm.queued_groups`)."""
    results = Path(results).expanduser().resolve()
    holders = {holder.group: holder for holder in live_leases(results).values() if holder.group}
    queued = queued or {}
    statuses = []
    for group in groups:
        records = [read_record(record_path(results, cell_id)) for cell_id in group.cell_ids()]
        done = sum(r is not None and r.done for r in records)
        errors = [(r.cell_id, r.error) for r in records if r is not None and r.failed]
        holder = holders.get(group.group_id)
        if done == len(records):
            state = "done"
        elif holder is not None:
            state = "running"
        elif group.group_id in queued:  # a task that runs but has not taken the lease yet is running too
            state = "running" if queued[group.group_id][1] in SLURM_RUNNING else "queued"
        elif errors:
            state = "failed"
        else:
            state = "pending"
        statuses.append(GroupStatus(group, state, done, len(errors), errors, holder, queued.get(group.group_id)))
    return statuses


def count_states(statuses: list[GroupStatus]) -> Counter:
    return Counter(status.state for status in statuses)


def summary_line(statuses: list[GroupStatus]) -> str:
    counts = count_states(statuses)
    cells = sum(s.cells for s in statuses)
    done_cells = sum(s.cells_done for s in statuses)
    parts = ", ".join(f"{counts[state]} {state}" for state in STATES if counts[state])
    return f"{len(statuses)} group(s) ({parts or 'none'}); {done_cells}/{cells} cell(s) done"


def format_status(statuses: list[GroupStatus], *, verbose: bool = False) -> str:
    """The summary line, then every group that is not done (all of them with `verbose`)."""
    lines = [summary_line(statuses)]
    order = {state: i for i, state in enumerate(("running", "queued", "failed", "pending", "done"))}
    for status in sorted(statuses, key=lambda s: (order[s.state], s.group.group_id)):
        if status.state == "done" and not verbose:
            continue
        head = (f"  {status.state:<8} {status.group.group_id}  {status.cells_done}/{status.cells} cells"
                f"  ({status.group.describe()}: {status.group.attacks()})")
        lines.append(head)
        if status.holder is not None:
            lines.append(f"           by {status.holder.describe()}")
        if status.slurm is not None:
            lines.append(f"           SLURM job {status.slurm[0]}: {status.slurm[1]}")
        for cell_id, error in status.errors:
            lines.append(f"           {cell_id}: {error}")
    return "\n".join(lines)
