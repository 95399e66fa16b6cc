"""How `bench run` runs its grid: groups, job files, the pending ones, a shard, a dry run, an executor.

    bench run ... [--executor local] [--workers N] [--max-attempts 3]
    bench run ... --executor slurm [--slurm-partition P] [--slurm-time 4:00:00] [--slurm-gpus-per-task 1]
                  [--slurm-cpus-per-task C] [--slurm-array-parallelism K] [--slurm-account A] [--slurm-qos Q]
                  [--slurm-setup "module load cuda"] [--slurm-option KEY=VALUE] [--wait]
    bench run ... [--shard i/n] [--dry-run]

The cells of the command are grouped by checkpoint (`bench/run/jobs.py`); every group gets a job file
under `<results>/jobs/` (so `bench status` knows the grid); the groups whose cells all have a complete
record are done (all of them are rerun with `--force`), the others are pending. `--shard i/n` keeps
the i-th of n slices of the grid (cut before dropping done groups, so that the slices stay the same
while other shards finish). The pending groups run longest first on the executor
(`bench/run/local.py`, `bench/run/slurm.py`); `--dry-run` prints them, their estimated device-hours and the longest group,
and runs nothing.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Callable

from robustad.bench.results.lease import live_leases
from robustad.bench.results.loading import load_records
from robustad.bench.results.records import record_path
from robustad.bench.run.cost import CostModel, format_duration
from robustad.bench.run.jobs import Job, make_groups, new_run_options, parse_shard, shard_groups, write_job
from robustad.bench.run.local import run_in_process, run_pool, worker_slots
from robustad.bench.run.slurm import (SlurmOptions, describe_submission, parse_slurm_time, queued_groups, submit,
                                      wait_for)
from robustad.bench.run.status import format_status

EXECUTORS = ("local", "slurm")
DRY_RUN_LISTED = 50  # groups listed by --dry-run (the rest are counted)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_execution_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("executing the grid (bench/run/plan.py)")
    group.add_argument("--executor", default="local", choices=EXECUTORS,
                       help="local: on this host (default); slurm: one SLURM job array, through submitit")
    group.add_argument("--workers", type=positive_int, default=1,
                       help="local: worker processes, each with its own GPU (--device cuda) or share of the "
                            "CPU cores (default 1: in the bench process)")
    group.add_argument("--max-attempts", dest="max_attempts", type=positive_int, default=3,
                       help="local, --workers > 1: tries of a group whose worker dies (default 3)")
    group.add_argument("--shard", default=None, metavar="I/N",
                       help="run only slice I of N of the grid (0 <= I < N), e.g. $SLURM_ARRAY_TASK_ID/4")
    group.add_argument("--dry-run", dest="dry_run", action="store_true",
                       help="print the pending groups, their estimated device-hours and the longest; run nothing")
    slurm = p.add_argument_group("--executor slurm (bench/run/slurm.py)")
    slurm.add_argument("--slurm-partition", dest="slurm_partition", default=None)
    slurm.add_argument("--slurm-time", dest="slurm_time", default="4:00:00",
                       help="time limit of each task, SLURM's format (minutes, HH:MM:SS, D-HH:MM; default 4:00:00)")
    slurm.add_argument("--slurm-gpus-per-task", dest="slurm_gpus_per_task", type=positive_int, default=None)
    slurm.add_argument("--slurm-cpus-per-task", dest="slurm_cpus_per_task", type=positive_int, default=None)
    slurm.add_argument("--slurm-array-parallelism", dest="slurm_array_parallelism", type=positive_int, default=None,
                       help="tasks of the array running at once (default: submitit's, 256)")
    slurm.add_argument("--slurm-account", dest="slurm_account", default=None)
    slurm.add_argument("--slurm-qos", dest="slurm_qos", default=None)
    slurm.add_argument("--slurm-setup", dest="slurm_setup", action="append", default=None, metavar="LINE",
                       help="a shell line run before the worker, e.g. 'module load cuda' (repeatable)")
    slurm.add_argument("--slurm-option", dest="slurm_option", action="append", default=None, metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. mem=32G or constraint=h100 (repeatable)")
    slurm.add_argument("--wait", action="store_true", help="wait for the array and print its progress")


def slurm_options(args):
    extra = []
    for item in args.slurm_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--slurm-option {item!r}: expected KEY=VALUE, e.g. mem=32G")
        extra.append((key.strip(), value.strip()))
    return SlurmOptions(partition=args.slurm_partition, time_min=parse_slurm_time(args.slurm_time),
                        gpus_per_task=args.slurm_gpus_per_task, cpus_per_task=args.slurm_cpus_per_task,
                        array_parallelism=args.slurm_array_parallelism, account=args.slurm_account,
                        qos=args.slurm_qos, setup=tuple(args.slurm_setup or ()), extra=tuple(extra), wait=args.wait)


def check_execution_arguments(args) -> None:
    """Refuses options that do not fit the executor, before anything is written."""
    slurm_only = [name for name in ("slurm_partition", "slurm_gpus_per_task", "slurm_cpus_per_task",
                                    "slurm_array_parallelism", "slurm_account", "slurm_qos", "slurm_setup",
                                    "slurm_option") if getattr(args, name) is not None]
    if args.wait:
        slurm_only.append("wait")
    if args.executor != "slurm" and slurm_only:
        names = ", ".join("--" + name.replace("_", "-") for name in slurm_only)
        raise ValueError(f"{names}: only with --executor slurm")
    if args.executor != "local" and args.workers != 1:
        raise ValueError("--workers: only with --executor local (SLURM runs one task per group)")
    if args.executor == "local" and args.workers > 1:
        worker_slots(args.workers, args.device)  # enough GPUs for the workers
    if args.executor == "slurm":
        slurm_options(args)  # parses --slurm-time and --slurm-option
        if not args.dry_run:
            from robustad.bench.run.slurm import check_slurm_client

            check_slurm_client()


def execute_run(specs: list, args, show: Callable[[object], None] | None = None) -> int:
    """`bench run`'s work after its arguments were checked (see the module docstring); the exit status.
    `show(record)` is called with each record a group run here writes (the command line prints it).

    The results folder's records are read once, here: they decide which groups are done, feed the
    cost estimates, and are handed to the groups run in this process."""
    check_execution_arguments(args)
    results = Path(args.results).expanduser().resolve()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    groups = make_groups(specs)
    total_groups = len(groups)
    existing, _ = load_records(results) if (results / "records").is_dir() else ([], [])
    records = {record.cell_id: record for record in existing}
    costs = CostModel(existing)
    if args.shard:
        index, count = parse_shard(args.shard)
        priors = {g.group_id: costs.estimate(g, prior_only=True).total_s for g in groups}
        groups = shard_groups(groups, priors, index, count)
        log(f"shard {index}/{count}: {len(groups)} of the grid's {total_groups} groups")
    options = new_run_options(args.device, args.precision, args.attack_batch, args.force,
                              getattr(args, "evaluations", None))
    jobs = [Job(group, str(results), options) for group in groups]
    pending = [job for job in jobs if args.force or not job.group.done(records)]
    done_groups = len(jobs) - len(pending)
    busy = {}
    if args.executor == "slurm" or args.dry_run:
        pending, busy = drop_running(pending, results)
    estimates = {job.group.group_id: costs.estimate(job.group) for job in pending}
    pending.sort(key=lambda job: (-estimates[job.group.group_id].total_s, job.group.group_id))
    if args.dry_run:
        print(dry_run_report(pending, estimates, done_groups, busy, args))
        return 0
    paths = {job.group.group_id: write_job(job) for job in jobs}
    for gid, why in busy.items():
        log(f"group {gid} is not submitted: {why}")
    if not pending:
        print(f"nothing to run: {done_groups} group(s) done" + (f", {len(busy)} running or queued" if busy else ""))
        return 0
    log(f"{len(pending)} group(s) to run ({sum(len(j.group.cells) for j in pending)} cells), {done_groups} done; "
        f"estimated {format_duration(sum(e.total_s for e in estimates.values()))} of device time")
    entries = [(job, paths[job.group.group_id]) for job in pending]
    if args.executor == "slurm":
        return run_on_slurm(entries, results, args, log)
    return run_locally(entries, records, args, log, show)


def drop_running(pending: list[Job], results: Path) -> tuple[list[Job], dict[str, str]]:
    """Pending jobs minus those running elsewhere (a live lease) or waiting in SLURM's queue."""
    holders = {holder.group: holder for holder in live_leases(results).values() if holder.group}
    queued = queued_groups(results)
    busy = {}
    for job in pending:
        gid = job.group.group_id
        if gid in holders:
            busy[gid] = f"running, by {holders[gid].describe()}"
        elif gid in queued:
            busy[gid] = f"queued as SLURM job {queued[gid][0]} ({queued[gid][1]})"
    return [job for job in pending if job.group.group_id not in busy], busy


def dry_run_report(pending: list[Job], estimates: dict, done_groups: int, busy: dict, args) -> str:
    cells = sum(len(job.group.cells) for job in pending)
    total = sum(e.total_s for e in estimates.values())
    measured = sum(e.measured for e in estimates.values())
    lines = [f"dry run: {len(pending)} group(s) to run ({cells} cells); {done_groups} done"
             + (f", {len(busy)} running or queued" if busy else ""),
             f"estimated {total / 3600:.2f} device-hours (fit {sum(e.fit_s for e in estimates.values()) / 3600:.2f} h, "
             f"attacks {sum(e.attack_s for e in estimates.values()) / 3600:.2f} h); "
             f"{measured} of {len(estimates)} estimates from this folder's records, the rest from the "
             f"{args.profile} profile's prior (bench/run/cost.py)"]
    if pending:
        longest = pending[0]
        estimate = estimates[longest.group.group_id]
        lines.append(f"longest group: {longest.group.group_id}, ~{format_duration(estimate.total_s)} "
                     f"(fit {format_duration(estimate.fit_s)}, {len(longest.group.cells)} attack cell(s))")
        if args.executor == "slurm":
            limit = parse_slurm_time(args.slurm_time) * 60
            too_long = [job for job in pending if estimates[job.group.group_id].total_s > limit]
            if too_long:
                lines.append(f"warning: {len(too_long)} group(s) are estimated longer than --slurm-time "
                             f"{args.slurm_time}; their tasks would be requeued at the limit and start over")
        lines.append("pending groups, longest first:")
        for job in pending[:DRY_RUN_LISTED]:
            estimate = estimates[job.group.group_id]
            lines.append(f"  {format_duration(estimate.total_s):>9}  {job.group.group_id}  "
                         f"({job.group.describe()}: {job.group.attacks()})")
        if len(pending) > DRY_RUN_LISTED:
            lines.append(f"  ... and {len(pending) - DRY_RUN_LISTED} more")
    for gid, why in busy.items():
        lines.append(f"  not run: {gid}: {why}")
    return "\n".join(lines)


def run_locally(entries: list, records: dict, args, log, show=None) -> int:
    """The pending groups on this host; `records` (cell id → record) are those read before, updated here
    with the records the groups write, for the closing count."""
    def written(record):
        records[record.cell_id] = record
        if show:
            show(record)

    with sigterm_as_interrupt():
        if args.workers == 1:
            outcome = run_in_process([(job, path) for job, path in entries], records, log=log, on_record=written,
                                     on_group_done=lambda job, done: records.update((r.cell_id, r) for r in done))
        else:
            slots = worker_slots(args.workers, args.device)
            outcome = run_pool(entries, slots=slots, max_attempts=args.max_attempts, log=log,
                               on_group_done=lambda job, done: [written(r) for r in done])
    return report([job for job, _ in entries], records, args.results, outcome.gave_up)


def report(jobs: list, records: dict, results, gave_up: list[str]) -> int:
    """The closing count; a record kept outside the results folder (it could not be written there) counts
    as missing."""
    results = Path(results).expanduser().resolve()
    cells = [records.get(cid) if record_path(results, cid).is_file() else None
             for job in jobs for cid in job.group.cell_ids()]
    failed = sum(r is not None and r.failed for r in cells)
    done = sum(r is not None and r.done for r in cells)
    missing = len(cells) - done - failed
    print(f"{done} cell(s) done, {failed} failed" + (f", {missing} without a record" if missing else "")
          + f"; records in {results / 'records'}")
    return 1 if failed or missing or gave_up else 0


def run_on_slurm(entries: list, results: Path, args, log) -> int:
    options = slurm_options(args)
    submission = submit(entries, results, options, log)
    if not options.wait:
        print(f"submitted {describe_submission(submission)}; follow it with: bench status --results {results}")
        return 0
    statuses = wait_for(submission, results, [job.group for job, _ in entries], poll_s=options.poll_s, log=log)
    print(format_status(statuses))
    return 0 if all(status.state == "done" for status in statuses) else 1


class sigterm_as_interrupt:
    """Within the block, SIGTERM (a scheduler stopping `bench run`) stops it as Ctrl-C does."""

    def __enter__(self):
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            pass
        return self

    @staticmethod
    def _handler(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
