"""The worker: runs one group (a job file, `bench/groups.py`) in this process.

It takes the lease of the group's checkpoint (`bench/lease.py`), then runs the group's cells one after
another (the first trains the model or loads its checkpoint, the others reuse it), skipping cells whose
record is complete, and releases the lease. Every executor runs groups through `run_group`: in the
`bench run` process (`--workers 1`), as a child process (`--workers N`)::

    python -m robustad.bench.worker JOB_FILE [--executor local] [--worker I] [--attempt N]

or inside a SLURM array task (`bench/executors/slurm.py`). Exit status of the command: 0 when every
cell of the group has a record (a failed cell has one, with its error), 75 when another live process
holds the group's lease (nothing was run), 130 when interrupted (SIGINT or SIGTERM: the cell under way
is lost, the records written are kept, the lease is released).
"""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from robustad.bench.groups import Job, read_job
from robustad.bench.lease import Holder, Lease
from robustad.bench.records import Record
from robustad.bench.run_info import describe_run

EXIT_DONE = 0
EXIT_BUSY = 75  # EX_TEMPFAIL: try again later
EXIT_INTERRUPTED = 130


@dataclasses.dataclass
class GroupResult:
    group_id: str
    busy: bool  # another live process holds the lease: nothing was run
    records: list[Record] = dataclasses.field(default_factory=list)
    holder: Holder | None = None
    seconds: float = 0.0


def group_checkpoint(job: Job) -> Path:
    """The checkpoint every cell of the group trains or loads (the runner's `checkpoint_path`)."""
    from robustad.bench.runner import checkpoint_path
    from robustad.datasets.registry import open_format
    from robustad.methods import create_method

    spec = job.group.first
    detector = create_method(spec.method, profile=spec.profile, **spec.method_overrides())
    return checkpoint_path(Path(job.results), detector, spec, str(open_format(spec.dataset, spec.root).root))


def run_group(job: Job, run_info: dict, *, wait_for_lease: bool = False, log: Callable[[str], None] | None = None,
              on_record: Callable[[Record], None] | None = None) -> GroupResult:
    """Runs every cell of `job`'s group under its checkpoint's lease (see the module docstring).

    `wait_for_lease=False` returns at once, `busy`, when a live process holds the lease;
    `True` waits for it (the holder's records are then skipped, its checkpoint loaded)."""
    from robustad.bench.runner import run_grid

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    started = time.perf_counter()
    try:
        lease = Lease(group_checkpoint(job), group=job.group.group_id, log=log)
    except Exception as err:  # noqa: BLE001 - each cell records the failure itself (run_grid below)
        log(f"group {job.group.group_id}: cannot name its checkpoint ({type(err).__name__}: {err}); "
            f"running its cells without a group lease")
        lease = None
    if lease is not None and not lease.acquire(wait=wait_for_lease):
        return GroupResult(job.group.group_id, busy=True, holder=lease.holder)
    records = []
    try:
        for spec in job.group.cells:
            records += run_grid([spec], results=job.results, device=job.options.device,
                                force=job.options.forces(spec.cell_id(), job.results),
                                precision=job.options.precision, attack_batch=job.options.attack_batch,
                                progress=False, log=log, on_record=on_record, run_info=run_info)
    finally:
        if lease is not None:
            lease.release()
    return GroupResult(job.group.group_id, busy=False, records=records, seconds=time.perf_counter() - started)


def interrupt_on_sigterm() -> None:
    """SIGTERM (from the local executor on Ctrl-C, or a scheduler) stops like Ctrl-C: KeyboardInterrupt."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one interrupt; the cleanup must not be interrupted
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robustad.bench.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("job_file", type=Path)
    parser.add_argument("--executor", default="local")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--wait-for-lease", action="store_true", help="wait while another process holds the lease")
    args = parser.parse_args(argv)
    interrupt_on_sigterm()
    job = read_job(args.job_file)
    info = describe_run(args.executor, worker=args.worker, attempt=args.attempt, device=job.options.device,
                        group=job.group.group_id)
    print(f"== worker {args.worker}, attempt {args.attempt}: group {job.group.group_id} "
          f"({len(job.group.cells)} cells), PID {info['pid']} on {info['host']}", file=sys.stderr, flush=True)
    try:
        result = run_group(job, info, wait_for_lease=args.wait_for_lease)
    except KeyboardInterrupt:
        print("interrupted; completed records are kept", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    if result.busy:
        print(f"group {job.group.group_id} is held by {result.holder.describe() if result.holder else 'another process'}",
              file=sys.stderr, flush=True)
        return EXIT_BUSY
    failed = sum(record.failed for record in result.records)
    print(f"== group {job.group.group_id}: {len(result.records) - failed} cell(s) done, {failed} failed "
          f"in {result.seconds:.1f} s", file=sys.stderr, flush=True)
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
