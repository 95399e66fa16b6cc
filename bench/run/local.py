"""The local executor: a grid's groups on this host (`bench run --executor local --workers N`).

`--workers 1` (the default) runs the groups one after another in the `bench run` process. `--workers N`
keeps N worker processes busy (`python -m robustad.bench.worker JOB_FILE`, one group per process, so a
group starts with a clean CUDA context and memory): with `--device cuda` worker i sees only its own
GPU (`CUDA_VISIBLE_DEVICES`, taken from the visible ones); every worker gets its share of the CPU
cores (`OMP_NUM_THREADS` = cores // N). Groups start longest first (`bench/run/cost.py`). A worker's
output goes to `<results>/logs/<group id>.log`.

- A worker that dies (killed, out of memory, a crash outside any cell) is replaced and its group
  retried, up to `max_attempts` tries; the records say which attempt wrote them, and after the last
  try the cells without a record get one with the error.
- A group whose checkpoint lease another live process holds (a second `bench run` on the same
  folder, a SLURM task) is set aside and tried again once that lease is released, with a growing pause
  (2 s to 60 s): its cells are then skipped, or finished where the other process died.
- Ctrl-C (or SIGTERM) stops every worker (SIGTERM: each finishes nothing more, releases its lease and
  keeps the records it wrote) and raises KeyboardInterrupt. Should the `bench run` process itself be
  killed (SIGKILL), its workers are in their own sessions and finish the group they run.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from robustad.bench.run.jobs import Job
from robustad.bench.results.lease import live_leases
from robustad.bench.cells import failed_record
from robustad.bench.results.records import Record, read_record, record_path, write_record
from robustad.bench.results.provenance import describe_run
from robustad.bench.run.worker import EXIT_BUSY, EXIT_DONE, run_job

STOP_GRACE_S = 30.0  # how long stopped workers get to release their leases before SIGKILL
FIRST_BACKOFF_S, MAX_BACKOFF_S = 2.0, 60.0


class WorkerDiedError(RuntimeError):
    """The worker process running a group died in every attempt."""


@dataclasses.dataclass(frozen=True)
class Slot:
    """One worker place: its environment (device, threads) and how to name it."""

    index: int
    env: dict[str, str]
    label: str


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_slots(workers: int, device: str) -> list[Slot]:
    """`workers` slots: a GPU each for `--device cuda`, and each a share of the CPU cores."""
    if workers < 1:
        raise ValueError(f"--workers {workers}: expected a number >= 1")
    threads = max(1, cpu_cores() // workers)
    common = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if not str(device).startswith("cuda"):
        return [Slot(i, dict(common), f"worker {i} ({threads} threads)") for i in range(workers)]
    if device != "cuda":
        raise ValueError(f"--device {device} with --workers {workers}: use --device cuda; each worker gets its own GPU")
    gpus = visible_gpus()
    if workers > len(gpus):
        raise ValueError(f"--workers {workers} with --device cuda: only {len(gpus)} GPU(s) visible "
                         f"({', '.join(gpus) or 'none'}); use --workers {max(1, len(gpus))} or fewer")
    return [Slot(i, {**common, "CUDA_VISIBLE_DEVICES": gpus[i]}, f"worker {i} (GPU {gpus[i]})") for i in range(workers)]


@dataclasses.dataclass
class LocalOutcome:
    groups_run: int = 0
    gave_up: list[str] = dataclasses.field(default_factory=list)  # group ids whose workers always died


class Deferred:
    """Groups whose lease another live process holds, and when to try each again (a pause that doubles
    from FIRST_BACKOFF_S to MAX_BACKOFF_S each time the same group is found held)."""

    def __init__(self, results: str):
        self.results = results
        self.waiting: dict[str, tuple] = {}  # group id -> (entry, next try)
        self.pauses: dict[str, float] = {}  # group id -> its last pause

    def add(self, group_id: str, entry) -> None:
        pause = min(MAX_BACKOFF_S, self.pauses.get(group_id, FIRST_BACKOFF_S / 2) * 2)
        self.pauses[group_id] = pause
        self.waiting[group_id] = (entry, time.monotonic() + pause)

    def ready(self) -> list:
        """Entries whose pause is over and whose group no live process holds now."""
        due = [gid for gid, (_, at) in self.waiting.items() if time.monotonic() >= at]
        if not due:
            return []
        held = {holder.group for holder in live_leases(self.results).values()}
        out = []
        for gid in due:
            entry, _ = self.waiting[gid]
            if gid in held:
                self.waiting[gid] = (entry, time.monotonic() + self.pauses[gid])
            else:
                out.append(entry)
                del self.waiting[gid]
        return out

    def __bool__(self) -> bool:
        return bool(self.waiting)


def run_in_process(jobs: list[tuple[Job, Path]], records: dict[str, Record | None] | None = None, *,
                   log: Callable[[str], None], on_record: Callable[[Record], None] | None = None,
                   on_group_done: Callable[[Job, list[Record]], None] | None = None) -> LocalOutcome:
    """`--workers 1`: every group in this process, longest first as given. `records`: the results
    folder's records as the caller read them (cell id → record), so no record is parsed twice; a group
    that another process held reads its records again when it comes back to it."""
    outcome = LocalOutcome()
    deferred = Deferred(jobs[0][0].results if jobs else "")
    todo = collections.deque(job for job, _ in jobs)
    came_back: set[str] = set()
    while todo or deferred:
        for job in deferred.ready():
            came_back.add(job.group.group_id)
            todo.append(job)
        if not todo:
            time.sleep(0.5)
            continue
        job = todo.popleft()
        info = describe_run("local", worker=0, attempt=1, device=job.options.device, group=job.group.group_id)
        known = None if records is None or job.group.group_id in came_back else {
            cell_id: records.get(cell_id) for cell_id in job.group.cell_ids()}
        result = run_job(job, info, known=known, log=log, on_record=on_record)
        if result.busy:
            log(f"group {job.group.group_id} is being run by {result.holder.describe() if result.holder else 'another process'};"
                f" coming back to it")
            deferred.add(job.group.group_id, job)
        else:
            outcome.groups_run += 1
            if on_group_done:  # every record of the group, those another process wrote included
                on_group_done(job, result.records)
    return outcome


@dataclasses.dataclass
class Running:
    job: Job
    path: Path
    attempt: int
    process: subprocess.Popen
    log_path: Path
    started: float


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def run_pool(jobs: list[tuple[Job, Path]], *, slots: list[Slot], max_attempts: int, log: Callable[[str], None],
             on_group_done: Callable[[Job, list[Record]], None] | None = None, poll_s: float = 0.2) -> LocalOutcome:
    """`--workers N`: N worker processes, one group each at a time (see the module docstring)."""
    if max_attempts < 1:
        raise ValueError(f"--max-attempts {max_attempts}: expected a number >= 1")
    outcome = LocalOutcome()
    results = jobs[0][0].results if jobs else ""
    todo = collections.deque((job, path, 1) for job, path in jobs)
    deferred = Deferred(results)
    free = list(slots)
    running: dict[int, Running] = {}
    try:
        while todo or running or deferred:
            todo.extend(deferred.ready())
            while free and todo:
                job, path, attempt = todo.popleft()
                slot = free.pop(0)
                running[slot.index] = start_worker(job, path, attempt, slot, log)
            for index, run in list(running.items()):
                code = run.process.poll()
                if code is None:
                    continue
                del running[index]
                slot = next(s for s in slots if s.index == index)
                free.append(slot)
                free.sort(key=lambda s: s.index)
                gid = run.job.group.group_id
                if code == EXIT_DONE:
                    outcome.groups_run += 1
                    records = [read_record(record_path(Path(results), cid)) for cid in run.job.group.cell_ids()]
                    log(f"{slot.label}: group {gid} finished in {time.monotonic() - run.started:.0f} s")
                    if on_group_done:
                        on_group_done(run.job, [r for r in records if r is not None])
                elif code == EXIT_BUSY:
                    log(f"{slot.label}: group {gid} is held by another process; coming back to it")
                    deferred.add(gid, (run.job, run.path, run.attempt))
                elif run.attempt < max_attempts:
                    log(f"{slot.label}: the worker {describe_exit(code)} running group {gid} (attempt {run.attempt}"
                        f" of {max_attempts}); retrying it in a new worker (log: {run.log_path})")
                    todo.appendleft((run.job, run.path, run.attempt + 1))
                else:
                    log(f"{slot.label}: the worker {describe_exit(code)} running group {gid} in each of "
                        f"{max_attempts} attempts; giving up on it (log: {run.log_path})")
                    give_up(run.job, f"{describe_exit(code)} in each of {max_attempts} attempt(s); its log: "
                            f"{run.log_path}", slot, max_attempts)
                    outcome.gave_up.append(gid)
            if running or todo or deferred:
                time.sleep(poll_s)
    except BaseException:
        stop_workers(list(running.values()), log)
        raise
    return outcome


def start_worker(job: Job, path: Path, attempt: int, slot: Slot, log: Callable[[str], None]) -> Running:
    log_path = Path(job.results) / "logs" / f"{job.group.group_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "robustad.bench.worker", str(path), "--executor", "local",
               "--worker", str(slot.index), "--attempt", str(attempt)]
    with open(log_path, "a") as handle:
        # Own session: a Ctrl-C in the terminal reaches `bench run` only, which stops each worker once.
        process = subprocess.Popen(command, env={**os.environ, **slot.env}, stdin=subprocess.DEVNULL,
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    log(f"{slot.label}: group {job.group.group_id} ({len(job.group.cells)} cells, attempt {attempt}), PID {process.pid}")
    return Running(job, path, attempt, process, log_path, time.monotonic())


def stop_workers(running: list[Running], log: Callable[[str], None]) -> None:
    """SIGTERM to every worker's process group, SIGKILL to those still there after STOP_GRACE_S."""
    for run in running:
        _signal_group(run.process, signal.SIGTERM)
    if running:
        log(f"stopping {len(running)} worker(s)")
    deadline = time.monotonic() + STOP_GRACE_S
    for run in running:
        try:
            run.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"worker PID {run.process.pid} ignored SIGTERM for {STOP_GRACE_S:.0f} s; killing it")
            _signal_group(run.process, signal.SIGKILL)
            run.process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def give_up(job: Job, reason: str, slot: Slot, attempts: int) -> None:
    """Records the failure of every cell of the group that has no complete record."""
    error = WorkerDiedError(f"the worker running group {job.group.group_id} {reason}")
    run = describe_run("local", worker=slot.index, attempt=attempts, device=job.options.device, group=job.group.group_id)
    for spec in job.group.cells:
        record = read_record(record_path(Path(job.results), spec.cell_id()))
        if record is None or not record.done:
            write_record(Path(job.results), failed_record(spec, error, run=run))
