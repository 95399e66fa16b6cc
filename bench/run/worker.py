"""The worker shell: runs one group's job file in this process, for the local pool and SLURM.

    python -m robustad.bench.worker JOB_FILE [--executor local] [--worker I] [--attempt N]

It reads the job file (`bench/run/jobs.py`), turns SIGTERM into an interrupt, and hands the group to
`run_job`, which calls the one group runner (`bench/evaluation/group.py`: prepare once under the
checkpoint's lease, then every cell). Exit status: 0 when every cell of the group has a record (a
failed cell has one, with its error), 75 when another live process holds the group's lease (nothing
was run), 130 when interrupted (SIGINT or SIGTERM: the cell under way is lost, the records written
are kept, the lease is released).
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from robustad.bench.results.provenance import describe_run
from robustad.bench.results.records import Record, read_record, record_path
from robustad.bench.run.jobs import Job, read_job

EXIT_DONE = 0
EXIT_BUSY = 75  # EX_TEMPFAIL: try again later
EXIT_INTERRUPTED = 130


def run_job(job: Job, run_info: dict, *, known: dict[str, Record | None] | None = None,
            wait_for_lease: bool = False, log: Callable[[str], None] | None = None,
            on_record: Callable[[Record], None] | None = None):
    """Runs the job's group (`run_group`), forcing the cells the job's --force asks for.

    `known`: the group's records already read by the caller (else read here, once each)."""
    from robustad.bench.evaluation.group import EvalOptions, run_group

    known = dict(known) if known is not None else {
        cell_id: read_record(record_path(Path(job.results), cell_id)) for cell_id in job.group.cell_ids()}
    options = job.options
    forced = {cell_id for cell_id, record in known.items() if options.forces(record)}
    return run_group(list(job.group.cells), results=job.results,
                     options=EvalOptions(device=options.device, precision=options.precision,
                                         attack_batch=options.attack_batch, progress=False,
                                         evaluations=options.evaluations),
                     force=forced, known=known, run_info=run_info, wait_for_lease=wait_for_lease, log=log,
                     on_record=on_record)


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
        started = time.perf_counter()
        result = run_job(job, info, wait_for_lease=args.wait_for_lease,
                         log=lambda message: print(message, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print("interrupted; completed records are kept", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    if result.busy:
        print(f"group {job.group.group_id} is held by {result.holder.describe() if result.holder else 'another process'}",
              file=sys.stderr, flush=True)
        return EXIT_BUSY
    failed = sum(record.failed for record in result.records)
    print(f"== group {job.group.group_id}: {len(result.records) - failed} cell(s) done, {failed} failed "
          f"in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
