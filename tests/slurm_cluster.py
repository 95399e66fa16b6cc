"""The SLURM cluster the SLURM tests submit to, or a skip that says why there is none.

``.ci/run`` starts a single-node cluster as root with ``scripts/slurm-test-cluster.sh start`` (issue #27);
a developer does the same with sudo. :func:`require_slurm_cluster` finds it (``SLURM_CONF`` from the
environment, else the script's ``env`` output, which it then exports to this process so that submitit's
``sbatch``/``sacct`` calls reach the same cluster), checks that ``sinfo`` lists an up partition and that
``sacct`` answers (submitit reads every task state from ``sacct``), and returns what it found. Where
there is no usable cluster it calls ``pytest.skip`` with the reason and the command that fixes it, or
``pytest.fail`` when ``ROBUSTAD_REQUIRE_SLURM=1`` (set by CI after a successful start, so that a broken
cluster fails the run instead of skipping its tests). The probe runs once per test session.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

CLUSTER_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm-test-cluster.sh"
START_HINT = f"start one as root: sudo {CLUSTER_SCRIPT} start"
PROBE_TIMEOUT_S = 20
# sinfo's %T for nodes that take jobs ("idle*" and the like, with a star, do not respond).
USABLE_NODE_STATES = {"idle", "mixed", "allocated", "completing"}
UNFINISHED_STATES = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "UNKNOWN"}


@dataclass(frozen=True)
class SlurmCluster:
    """What the tests need to know about the cluster they submit to."""

    slurm_conf: str | None  # None: SLURM's compiled-in default config
    partition: str  # the default partition (sinfo's "*")
    nodes: tuple[str, ...]
    cpus: int  # on the usable nodes of the default partition


def require_slurm_cluster() -> SlurmCluster:
    """The running cluster; otherwise skips the calling test (fails it under ROBUSTAD_REQUIRE_SLURM=1)."""
    found = _probe()
    if isinstance(found, SlurmCluster):
        return found
    if os.environ.get("ROBUSTAD_REQUIRE_SLURM") == "1":
        pytest.fail(f"ROBUSTAD_REQUIRE_SLURM=1 but {found}")
    pytest.skip(found)


def wait_for_jobs(jobs: list, timeout_s: float) -> None:
    """Block until every submitit job is done; on timeout cancel them and fail with their states.

    ``job.result()`` alone would wait forever on a job that never leaves PENDING.
    """
    deadline = time.monotonic() + timeout_s
    while not all(job.done() for job in jobs):
        if time.monotonic() > deadline:
            states = {job.job_id: job.watcher.get_state(job.job_id, mode="force") for job in jobs}
            queue = _run("squeue")
            for job in jobs:
                job.cancel(check=False)
            pytest.fail(f"SLURM jobs not done after {timeout_s:.0f}s: {states}\nsqueue:\n{queue.stdout}")
        time.sleep(0.5)


def settled_states(jobs: list, timeout_s: float = 30.0) -> dict[str, str]:
    """submitit's state of each job once ``sacct`` has recorded its end.

    A task writes its result before SLURM records its end, and slurmctld passes records to slurmdbd
    asynchronously, so right after ``job.result()`` sacct may still say RUNNING (or even PENDING).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        states = {job.job_id: job.watcher.get_state(job.job_id, mode="force") for job in jobs}
        if not UNFINISHED_STATES & set(states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


@functools.lru_cache(maxsize=1)
def _probe() -> SlurmCluster | str:
    """The cluster, or the reason (a sentence) why there is none to use."""
    if "SLURM_CONF" not in os.environ:
        slurm_conf = _test_cluster_conf()
        if slurm_conf is not None:
            os.environ["SLURM_CONF"] = slurm_conf
    for command in ("sinfo", "sbatch", "sacct"):
        if shutil.which(command) is None:
            return f"no SLURM cluster: `{command}` is not on PATH; {START_HINT}"
    # One line per partition and node state; %C is allocated/idle/other/total CPUs.
    listed = _run("sinfo", "--noheader", "--format=%P|%a|%C|%N|%T")
    if listed.returncode != 0:
        return f"no SLURM cluster: sinfo failed ({_last_line(listed)}); {START_HINT}"
    default = [line.split("|") for line in listed.stdout.splitlines() if line.split("|")[0].endswith("*")]
    if not default:
        return f"SLURM has no default partition (sinfo printed {listed.stdout.strip()!r}); {START_HINT}"
    usable = [row for row in default if row[1] == "up" and row[4] in USABLE_NODE_STATES]
    if not usable:
        found = ", ".join(f"{row[3]} {row[4]}" for row in default)
        return (f"SLURM's default partition {default[0][0][:-1]} ({default[0][1]}) has no usable node"
                f" ({found}); restart the cluster: sudo {CLUSTER_SCRIPT} stop && sudo {CLUSTER_SCRIPT} start")
    partition = default[0][0][:-1]
    accounting = _run("sacct", "--noheader", "--allocations", "--starttime=now")
    if accounting.returncode != 0:
        return (f"sacct fails ({_last_line(accounting)}), so submitit cannot read task states:"
                f" SLURM needs accounting through slurmdbd; {START_HINT}")
    return SlurmCluster(
        slurm_conf=os.environ.get("SLURM_CONF"),
        partition=partition,
        nodes=tuple(node for row in usable for node in _expand_nodes(row[3])),
        cpus=sum(int(row[2].split("/")[3]) for row in usable),
    )


def _test_cluster_conf() -> str | None:
    """SLURM_CONF as `slurm-test-cluster.sh env` prints it, or None when that cluster has no config."""
    printed = _run(str(CLUSTER_SCRIPT), "env")
    for line in printed.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and words[1].startswith("SLURM_CONF="):
            return words[1].split("=", 1)[1]
    return None


def _expand_nodes(node_list: str) -> list[str]:
    expanded = _run("scontrol", "show", "hostnames", node_list)
    return expanded.stdout.split() if expanded.returncode == 0 else [node_list]


def _run(*command: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        return subprocess.CompletedProcess(command, returncode=1, stdout="", stderr=str(error))


def _last_line(result: subprocess.CompletedProcess) -> str:
    """The last line of a failed command's output: SLURM's clients end with the fatal error."""
    text = (result.stderr or result.stdout).strip()
    return text.splitlines()[-1] if text else f"exit status {result.returncode}"
