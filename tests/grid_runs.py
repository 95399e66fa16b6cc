"""Helpers of the executor tests: a small grid of the sleepy detector, run by `bench run` processes.

`bench_args(...)` is the `bench run` command line of a grid of `categories` (one group each) with
`attacks`, whose fits sleep `fit_seconds` and log to `fit_log`; `start_bench` runs it in a new process
from the repository root (so that workers and SLURM tasks import `tests.sleepy_detector`).
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

from robustad.bench.results.records import Record, read_record
from tests.sleepy_detector import METHOD, read_fit_log

REPO = Path(__file__).resolve().parents[1]


def bench_args(root: Path, results: Path, fit_log: Path, categories, *, fit_seconds: float = 3.0,
               attacks=("pgd",), extra=()) -> list[str]:
    args = ["run", "--method", METHOD, "--dataset", "mvtec", "--root", str(root), "--category", ",".join(categories),
            "--steps", "2", "--results", str(results),
            "--config", f"fit_seconds={fit_seconds}", "--config", f"fit_log={fit_log}"]
    for attack in attacks:
        args += ["--attack", attack]
    return args + list(extra)


def bench_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def start_bench(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robustad.bench.cli", *args], cwd=REPO, env=bench_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_bench(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustad.bench.cli", *args], cwd=REPO, env=bench_env(),
                          capture_output=True, text=True, timeout=timeout)


def records(results: Path) -> list[Record]:
    return [read_record(path) for path in sorted((results / "records").glob("*.json"))]


def fit_counts(fit_log: Path) -> dict[str, collections.Counter]:
    """Per group (category/seed): how many fits started and ended."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for event, key, _, _ in read_fit_log(fit_log):
        counts[key][event] += 1
    return dict(counts)


def fit_intervals(fit_log: Path) -> list[tuple[float, float]]:
    starts, intervals = {}, []
    for event, key, pid, at in read_fit_log(fit_log):
        if event == "start":
            starts[(key, pid)] = at
        elif (key, pid) in starts:
            intervals.append((starts.pop((key, pid)), at))
    return intervals


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    current = most = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def wait_until(predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"bench exited ({process.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def started_fits(fit_log: Path) -> list[tuple[str, int]]:
    """(group, pid) of every fit that started."""
    return [(key, pid) for event, key, pid, _ in read_fit_log(fit_log) if event == "start"]


def leftovers(results: Path) -> list[str]:
    """Lease, break and temporary files anywhere under the results folder (none after a clean run)."""
    return sorted(str(p.relative_to(results)) for p in results.rglob("*")
                  if p.name.endswith((".lease", ".break", ".tmp")))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
