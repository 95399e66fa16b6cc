"""Smoke test of a SLURM cluster through submitit: arrays run in parallel, sacct reports states,
a killed task is reported as such, and resubmitting it completes it.

A developer tool for the cluster of ``scripts/slurm-test-cluster.sh`` (issue #27), runnable against any
SLURM cluster whose ``sbatch``/``sacct`` work from this shell::

    sudo scripts/slurm-test-cluster.sh start
    python scripts/slurm_smoke.py                 # finds SLURM_CONF through `slurm-test-cluster.sh env`
    python scripts/slurm_smoke.py --partition gpu --folder ~/smoke   # elsewhere

It submits (1) a 4-task job array of a sleeping function with ``slurm_array_parallelism=2`` and shows, from
``squeue`` samples and from the tasks' own clocks, that two tasks run at a time; (2) a 2-task array whose
second task is killed with ``scancel --signal=KILL`` and prints what ``sacct``, ``job.state`` and
``job.exception()`` report for it; (3) the killed task's call again, which completes. Exits non-zero when
one of these does not hold. Needs ``pip install submitit``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import submitit

CLUSTER_SCRIPT = Path(__file__).resolve().parent / "slurm-test-cluster.sh"


def sleepy_square(x: int, seconds: float) -> dict:
    """The work of one task: sleep, then return x*x with where and when it ran."""
    started = time.time()
    time.sleep(seconds)
    return {
        "square": x * x,
        "started": started,
        "ended": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
    }


def use_test_cluster_conf() -> None:
    """Point SLURM_CONF at the test cluster when the caller has not set it and the cluster exists."""
    if "SLURM_CONF" in os.environ:
        return
    printed = subprocess.run([str(CLUSTER_SCRIPT), "env"], capture_output=True, text=True)
    for line in printed.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and words[1].startswith("SLURM_CONF="):
            os.environ["SLURM_CONF"] = words[1].split("=", 1)[1]


def run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def running_tasks(array_id: str) -> list[str]:
    """Array tasks squeue lists as RUNNING, e.g. ["123_0", "123_1"]."""
    return run("squeue", "--noheader", "--jobs", array_id, "--states=RUNNING", "--format=%i").split()


def sacct_states(array_id: str) -> str:
    return run("sacct", "--jobs", array_id, "--allocations", "--format=JobID,State,ExitCode,Elapsed")


def settled_states(jobs: list, timeout_s: float = 30.0) -> tuple[dict[str, str], float]:
    """submitit's job.state for each job once sacct has recorded their ends, and how long that took.

    A task writes its result file before SLURM records its end, and slurmctld passes job records to
    slurmdbd asynchronously, so sacct may still say PENDING or RUNNING for a job whose result is there.
    """
    started = time.time()
    while True:
        states = {job.job_id: job.watcher.get_state(job.job_id, mode="force") for job in jobs}
        if all(state not in ("PENDING", "RUNNING", "COMPLETING", "UNKNOWN") for state in states.values()):
            return states, time.time() - started
        if time.time() - started > timeout_s:
            return states, time.time() - started
        time.sleep(0.5)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end and a start at the same instant do not overlap)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = most = 0
    for _, step in events:
        open_now += step
        most = max(most, open_now)
    return most


def make_executor(folder: Path, partition: str | None, parallelism: int) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(
        name="robustad-smoke",
        timeout_min=10,
        cpus_per_task=1,
        slurm_partition=partition,
        slurm_array_parallelism=parallelism,
    )
    return executor


def check_parallel_array(folder: Path, partition: str | None, task_seconds: float) -> bool:
    print("\n== 1. a 4-task array, slurm_array_parallelism=2")
    executor = make_executor(folder / "array", partition, parallelism=2)
    submitted = time.time()
    jobs = executor.map_array(sleepy_square, [1, 2, 3, 4], [task_seconds] * 4)
    array_id = jobs[0].job_id.split("_")[0]
    print(f"submitted array {array_id}: job ids {[job.job_id for job in jobs]}")
    samples = []
    while not all(job.done() for job in jobs):
        samples.append((time.time() - submitted, running_tasks(array_id)))
        time.sleep(0.5)
    results = [job.result() for job in jobs]
    wall = time.time() - submitted
    changes = [s for i, s in enumerate(samples) if i == 0 or s[1] != samples[i - 1][1]]
    for at, tasks in changes:
        print(f"  t={at:5.1f}s running: {' '.join(tasks) or '-'}")
    most_in_squeue = max((len(tasks) for _, tasks in samples), default=0)
    own_clocks = max_overlap([(r["started"], r["ended"]) for r in results])
    print(f"results: {[r['square'] for r in results]} (tasks {[r['array_task'] for r in results]}"
          f" on {sorted({r['host'] for r in results})})")
    print(f"most tasks running at once: {most_in_squeue} in squeue, {own_clocks} by the tasks' own clocks;"
          f" wall {wall:.1f}s for 4 x {task_seconds:.0f}s of work")
    states, lag = settled_states(jobs)
    print(f"submitit job.state, {lag:.1f}s after the last result: {states}")
    print(sacct_states(array_id), end="")
    return (
        [r["square"] for r in results] == [1, 4, 9, 16]
        and own_clocks == 2
        and most_in_squeue == 2
        and all(state == "COMPLETED" for state in states.values())
    )


def check_killed_task(folder: Path, partition: str | None) -> bool:
    print("\n== 2. a 2-task array; task 1 killed with scancel --signal=KILL")
    executor = make_executor(folder / "killed", partition, parallelism=2)
    jobs = executor.map_array(sleepy_square, [5, 6], [2.0, 300.0])
    victim = jobs[1]
    array_id = victim.job_id.split("_")[0]
    deadline = time.time() + 60
    while victim.job_id not in running_tasks(array_id):
        if time.time() > deadline:
            print(f"task {victim.job_id} did not start within 60 s")
            return False
        time.sleep(0.2)
    time.sleep(2.0)  # let the task's Python reach the sleep
    killed_at = time.time()
    run("scancel", "--signal=KILL", victim.job_id)
    print(f"scancel --signal=KILL {victim.job_id}")
    while not victim.done(force_check=True):
        time.sleep(0.5)
    print(f"submitit saw it done after {time.time() - killed_at:.1f}s; job.state = {victim.state!r}")
    error = victim.exception()
    print(f"job.exception(): {type(error).__name__}:")
    print("  " + str(error).replace("\n", "\n  "))
    survivor = jobs[0].result()
    print(f"the other task's result: {survivor['square']}")
    print(sacct_states(array_id), end="")

    print("\n== 3. resubmitting the killed task's call")
    again = make_executor(folder / "resubmitted", partition, parallelism=1).submit(sleepy_square, 6, 1.0)
    print(f"resubmitted as job {again.job_id}")
    result = again.result()
    states, lag = settled_states([again])
    print(f"result: {result['square']}; job.state, {lag:.1f}s after the result: {states[again.job_id]!r}")
    print(sacct_states(again.job_id), end="")
    return (
        isinstance(error, submitit.core.utils.UncompletedJobError)
        and victim.state not in ("COMPLETED", "UNKNOWN")
        and survivor["square"] == 25
        and result["square"] == 36
        and states[again.job_id] == "COMPLETED"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's default)")
    parser.add_argument("--folder", type=Path, default=None, help="submitit logs (default: a new temp folder)")
    parser.add_argument("--task-seconds", type=float, default=6.0, help="sleep of each array task (default 6)")
    args = parser.parse_args()
    use_test_cluster_conf()
    try:
        print(run("sinfo", "--Node", "--format=%N %P %T %c %m"), end="")
    except (OSError, subprocess.CalledProcessError) as error:
        said = (getattr(error, "stderr", None) or str(error)).strip().splitlines()[-1]
        print(f"sinfo failed ({said}); start the cluster: sudo {CLUSTER_SCRIPT} start", file=sys.stderr)
        return 2
    folder = args.folder or Path(tempfile.mkdtemp(prefix="robustad-slurm-smoke-"))
    print(f"SLURM_CONF={os.environ.get('SLURM_CONF', '(default)')}; submitit folder {folder}")
    started = time.time()
    outcomes = {
        "parallel array": check_parallel_array(folder, args.partition, args.task_seconds),
        "killed task reported, resubmission completes": check_killed_task(folder, args.partition),
    }
    print(f"\n== summary ({time.time() - started:.1f}s)")
    for name, ok in outcomes.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
