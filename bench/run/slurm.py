"""The SLURM executor: one job array over the pending groups, through submitit
(`bench run --executor slurm`; `pip install -e ".[slurm]"`).

Task i of the array runs group i's job file (`bench/run/worker.py`, waiting for the group's lease if
another process holds it). submitit writes each task's logs to `<results>/slurm/<array>_<i>_0_log.out`
and `.err`; `bench run` writes what it submitted to `<results>/slurm/submissions/<array>.json`
(array, task job ids, groups, job files, attempts), which `bench status` and the next `bench run`
read back, together with `squeue`, to tell queued groups from pending ones.

- Rerunning the same command submits only the groups that have no complete record and are neither
  running (a live lease) nor still in the queue; a group killed, timed out or preempted for good is
  simply pending again. The task's callable is checkpointable: when SLURM signals a timeout or a
  preemption (`--signal USR2@90`, set by submitit), submitit requeues it (up to 3 times); its
  records are kept and its cells skipped when it starts again.
- `--wait` polls `squeue` and the records every `poll_s` seconds and prints a line when the counts
  change, until none of the array's tasks is queued any more.

Task states come from `squeue` (every SLURM has it; `sacct` needs accounting), for this user only.
"""
from __future__ import annotations

import dataclasses
import getpass
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from robustad.bench.results.provenance import describe_run
from robustad.bench.results.records import now_iso, write_json_atomic
from robustad.bench.run.jobs import Group, Job, read_job
from robustad.bench.run.status import group_statuses, summary_line
from robustad.bench.run.worker import run_job

# squeue states of a task that may still run (or is running): its group is not to be submitted again.
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
SQUEUE_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """The `--slurm-*` options of `bench run` (None: the cluster's or submitit's default)."""

    partition: str | None = None
    time_min: int = 240
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    array_parallelism: int | None = None
    account: str | None = None
    qos: str | None = None
    setup: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = ()  # --slurm-option KEY=VALUE: any other sbatch option
    wait: bool = False
    poll_s: float = 10.0


def parse_slurm_time(text: str) -> int:
    """SLURM's --time formats ("90", "90:00", "4:00:00", "1-0", "1-12:00", "1-12:00:00") as whole minutes."""
    text = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ValueError(f"--slurm-time {text!r}: expected minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS")
    days, first, second, third = (int(g) if g is not None else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        minutes = days * 1440 + first * 60 + (second or 0) + ((third or 0) + 59) // 60
    elif third is not None:  # HH:MM:SS
        minutes = first * 60 + second + (third + 59) // 60
    elif second is not None:  # MM:SS
        minutes = first + (second + 59) // 60
    else:
        minutes = first
    if minutes < 1:
        raise ValueError(f"--slurm-time {text!r}: expected at least one minute")
    return minutes


# ---------------------------------------------------------------------------------------------
# The queue


def squeue_states() -> dict[str, str] | None:
    """squeue's state of every task of this user's jobs ("123_4" -> "RUNNING"), None when squeue is
    missing or fails (then nothing can be said about the queue)."""
    if shutil.which("squeue") is None:
        return None
    try:
        listed = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T", f"--user={getpass.getuser()}"],
                                capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        return None
    states = {}
    for line in listed.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state.strip()
    return states


def submissions_dir(results: str | Path) -> Path:
    return Path(results).expanduser().resolve() / "slurm" / "submissions"


def read_submissions(results: str | Path) -> list[dict]:
    """Every submission file of a results folder, oldest first."""
    found = []
    for path in submissions_dir(results).glob("*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda s: s.get("submitted", ""))


def latest_tasks(results: str | Path) -> dict[str, dict]:
    """Each group's latest SLURM task (a submission's task entry), by group id."""
    latest = {}
    for submission in read_submissions(results):
        for task in submission.get("tasks", []):
            latest[task["group"]] = task
    return latest


def queued_groups(results: str | Path, states: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Groups whose latest SLURM task is still in the queue: group id -> (job id, state)."""
    latest = latest_tasks(results)
    if not latest:
        return {}
    states = squeue_states() if states is None else states
    if states is None:
        return {}
    return {gid: (task["job_id"], states[task["job_id"]]) for gid, task in latest.items()
            if states.get(task["job_id"]) in ACTIVE_STATES}


# ---------------------------------------------------------------------------------------------
# The task


class GroupTask:
    """What an array task runs: one group's job file, in the task's process (checkpointable)."""

    def __call__(self, job_file: str, attempt: int) -> dict:
        import torch

        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            torch.set_num_threads(int(cpus))
        job = read_job(job_file)
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        info = describe_run("slurm", worker=int(task) if task and task.isdigit() else task, attempt=attempt,
                            device=job.options.device, group=job.group.group_id)
        print(f"== group {job.group.group_id} ({len(job.group.cells)} cells), attempt {attempt}, "
              f"SLURM job {info.get('slurm_job')} on {info['host']}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = run_job(job, info, wait_for_lease=True)
        failed = [r.cell_id for r in result.records if r.failed]
        return {"group": job.group.group_id, "cells": len(result.records), "failed": failed,
                "seconds": time.perf_counter() - started, "slurm_job": info.get("slurm_job")}

    def checkpoint(self, *args, **kwargs):
        """Timed out or preempted: requeue the same call; done cells are skipped when it starts again."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Submitting


def import_submitit():
    try:
        import submitit
    except ImportError as err:
        raise ValueError("--executor slurm needs submitit: pip install -e \".[slurm]\" (or pip install submitit)") from err
    return submitit


def check_slurm_client() -> None:
    """Fails with what to do when submitit or SLURM's commands are missing here."""
    import_submitit()
    missing = [command for command in ("sbatch", "squeue") if shutil.which(command) is None]
    if missing:
        raise ValueError(f"--executor slurm: {' and '.join(missing)} not on PATH (run bench on a SLURM login node)")


def make_executor(results: Path, options: SlurmOptions):
    submitit = import_submitit()
    check_slurm_client()
    executor = submitit.AutoExecutor(folder=results / "slurm", cluster="slurm")
    parameters = {"name": "robustad", "timeout_min": options.time_min,
                  "slurm_partition": options.partition, "slurm_gpus_per_task": options.gpus_per_task,
                  "cpus_per_task": options.cpus_per_task, "slurm_array_parallelism": options.array_parallelism,
                  "slurm_account": options.account, "slurm_qos": options.qos,
                  "slurm_setup": list(options.setup) or None,
                  "slurm_additional_parameters": dict(options.extra) or None}
    executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    return executor


def submit(jobs: list[tuple[Job, Path]], results: Path, options: SlurmOptions, log: Callable[[str], None]) -> dict:
    """Submits one array over `jobs` (longest first) and writes its submission file; returns it."""
    executor = make_executor(results, options)
    earlier = {}
    for submission in read_submissions(results):
        for task in submission.get("tasks", []):
            earlier[task["group"]] = earlier.get(task["group"], 0) + 1
    attempts = [earlier.get(job.group.group_id, 0) + 1 for job, _ in jobs]
    try:
        submitted = executor.map_array(GroupTask(), [str(path) for _, path in jobs], attempts)
    except Exception as err:  # sbatch refused the array (partition, time limit, account ...)
        raise ValueError(f"--executor slurm: submitting the array failed: {err}") from err
    array_id = submitted[0].job_id.split("_")[0]
    submission = {
        "array_id": array_id, "submitted": now_iso(), "folder": str(results / "slurm"),
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k not in ("wait", "poll_s")},
        "tasks": [{"job_id": task.job_id, "group": job.group.group_id, "job_file": str(path), "attempt": attempt}
                  for task, (job, path), attempt in zip(submitted, jobs, attempts)],
    }
    write_json_atomic(submissions_dir(results) / f"{array_id}.json", submission)
    log(f"submitted {describe_submission(submission)}; logs in {results / 'slurm'}")
    return submission


def describe_submission(submission: dict) -> str:
    """"3 group(s) to SLURM as array 12 (tasks 12_0 .. 12_2)"; submitit submits one group as a plain job."""
    tasks = submission["tasks"]
    if len(tasks) == 1:
        return f"1 group to SLURM as job {tasks[0]['job_id']}"
    return f"{len(tasks)} group(s) to SLURM as array {submission['array_id']} (tasks {tasks[0]['job_id']} .. {tasks[-1]['job_id']})"


def wait_for(submission: dict, results: Path, groups: list[Group], *, poll_s: float,
             log: Callable[[str], None]) -> list:
    """Waits until no task of `submission` is queued; prints progress lines; returns the final statuses."""
    task_of = {task["group"]: task["job_id"] for task in submission["tasks"]}
    started, last_line, last_print, warned = time.monotonic(), None, 0.0, False
    while True:
        states = squeue_states()
        if states is None:
            if not warned:
                log("squeue failed; retrying")
                warned = True
            time.sleep(poll_s)
            continue
        queued = {gid: (job_id, states[job_id]) for gid, job_id in task_of.items() if states.get(job_id) in ACTIVE_STATES}
        statuses = group_statuses(results, groups, queued=queued)
        line = summary_line(statuses)
        now = time.monotonic()
        if line != last_line or now - last_print > 300:
            log(f"[{now - started:6.0f} s] SLURM {submission['array_id']}: {line}")
            last_line, last_print = line, now
        if not queued:
            return statuses
        time.sleep(poll_s)
