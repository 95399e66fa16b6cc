"""The SLURM test cluster runs a submitit job array (issue #27).

Needs the cluster of ``scripts/slurm-test-cluster.sh`` (or any SLURM whose ``sinfo`` and ``sacct`` work
here) and submitit; skips with the reason otherwise (see ``tests/slurm_cluster.py``).
"""

import os
from pathlib import Path

import pytest

from tests.slurm_cluster import require_slurm_cluster, settled_states, wait_for_jobs

submitit = pytest.importorskip("submitit", reason="submitit is not installed: pip install -e '.[dev]'")

REPO_ROOT = Path(__file__).resolve().parents[1]


def square_in_array_task(x):
    """Runs inside a SLURM array task: x*x, with the array job and task ids SLURM gave it."""
    return x * x, os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")


@pytest.fixture(scope="session")
def slurm_cluster():
    return require_slurm_cluster()


def test_two_task_array_returns_both_results(slurm_cluster, tmp_path):
    executor = submitit.AutoExecutor(folder=tmp_path / "slurm", cluster="slurm")
    executor.update_parameters(
        name="robustad-test",
        timeout_min=5,
        cpus_per_task=1,
        slurm_partition=slurm_cluster.partition,
        slurm_array_parallelism=2,
        # The task unpickles this module's function by reference: make `tests` importable wherever
        # pytest was started from.
        slurm_setup=[f"export PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
    )
    jobs = executor.map_array(square_in_array_task, [3, 4])
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_0", f"{array_id}_1"]

    wait_for_jobs(jobs, timeout_s=120)

    assert [job.result() for job in jobs] == [(9, array_id, "0"), (16, array_id, "1")]
    assert settled_states(jobs) == {f"{array_id}_0": "COMPLETED", f"{array_id}_1": "COMPLETED"}
