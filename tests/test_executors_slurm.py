"""`bench run --executor slurm` against a real SLURM cluster (issue #27).

Needs the cluster of `scripts/slurm-test-cluster.sh` (or any SLURM whose sinfo/sbatch/squeue/sacct
work here) and submitit; skips with the reason otherwise, and fails under ROBUSTAD_REQUIRE_SLURM=1
(`tests/slurm_cluster.py`). A grid of three groups of the sleepy detector is submitted as one array;
the task of one group is killed with `scancel --signal=KILL` in the middle of its fit; `bench status`
then reports it pending, and rerunning the command resubmits that group only and completes it.
"""
import json
import re
import subprocess

import pytest

from tests.grid_runs import (REPO, bench_args, fit_counts, leftovers, records, run_bench, started_fits,
                             wait_until)
from tests.slurm_cluster import require_slurm_cluster
from tests.synthetic import write_mvtec_tree

pytest.importorskip("submitit", reason="submitit is not installed: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def slurm_cluster():
    return require_slurm_cluster()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_mvtec_tree(tmp_path_factory.mktemp("slurm-grid"), categories=("a", "b", "c"), n_train=4, n_good=3,
                            n_bad=3)


def squeue_tasks(array_id: str) -> list[str]:
    """The tasks of the array still in the queue (any state)."""
    listed = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", f"--jobs={array_id}"],
                            capture_output=True, text=True)
    return listed.stdout.split() if listed.returncode == 0 else []


def test_a_grid_runs_as_an_array_and_a_killed_task_is_resubmitted_alone(slurm_cluster, tree, tmp_path):
    results, fit_log = tmp_path / "results", tmp_path / "fit.log"
    args = bench_args(tree, results, fit_log, ("a", "b", "c"), fit_seconds=12, extra=[
        "--executor", "slurm", "--slurm-partition", slurm_cluster.partition, "--slurm-time", "10",
        "--slurm-cpus-per-task", "1", "--slurm-setup", f"export PYTHONPATH={REPO}"])

    submitted = run_bench(args)
    assert submitted.returncode == 0, submitted.stderr
    array_id = re.search(r"3 group\(s\) to SLURM as array (\d+)", submitted.stdout).group(1)
    submission = json.loads((results / "slurm" / "submissions" / f"{array_id}.json").read_text())
    job_of = {task["group"].split("__")[2]: task["job_id"] for task in submission["tasks"]}
    assert sorted(job_of.values()) == [f"{array_id}_{i}" for i in range(3)]

    # The same command while the array runs submits nothing again (no task can finish before its 12 s fit).
    again = run_bench(args)
    assert again.returncode == 0, again.stderr
    assert "nothing to run" in again.stdout and "not submitted" in again.stderr
    assert len(list((results / "slurm" / "submissions").glob("*.json"))) == 1

    # SLURM cancels a task killed this way: SIGTERM (which submitit's task ignores), then SIGKILL after
    # KillWait (2 s on the test cluster); the task dies before it writes its record.
    wait_until(lambda: [pid for key, pid in started_fits(fit_log) if key == "a/seed0"], 240,
               "the fit of group a to start in its task")
    subprocess.run(["scancel", "--signal=KILL", job_of["a"]], check=True)
    wait_until(lambda: not squeue_tasks(array_id), 240, f"array {array_id} to leave the queue")

    status = run_bench(["status", "--results", str(results)])
    assert status.returncode == 0, status.stderr
    assert "3 group(s) (2 done, 1 pending); 2/3 cell(s) done" in status.stdout, status.stdout
    assert re.search(r"pending\s+\S+__a__", status.stdout)

    finished = {r.category: r for r in records(results)}
    assert sorted(finished) == ["b", "c"]
    for category, record in finished.items():
        assert record.done and record.run["executor"] == "slurm"
        assert record.run["slurm_job"] == job_of[category] and record.run["attempt"] == 1

    rerun = run_bench([*args, "--wait"])
    assert rerun.returncode == 0, rerun.stderr
    assert "1 group(s) to run" in rerun.stderr and "1 done" in rerun.stdout.splitlines()[0]
    second_array = re.search(r"submitted 1 group to SLURM as job (\d+)", rerun.stderr).group(1)
    assert second_array != array_id
    assert f"SLURM {second_array}: 1 group(s) (1 done); 1/1 cell(s) done" in rerun.stderr  # --wait's progress
    (task,) = json.loads((results / "slurm" / "submissions" / f"{second_array}.json").read_text())["tasks"]
    assert task["group"].split("__")[2] == "a"  # a one-group "array" is a plain job for submitit: id "N"
    redone = {r.category: r for r in records(results)}["a"]
    assert redone.done and redone.run["slurm_job"] == task["job_id"] and redone.run["attempt"] == 2
    counts = fit_counts(fit_log)
    assert {key: (c["start"], c["end"]) for key, c in counts.items() if key != "a/seed0"} == {
        "b/seed0": (1, 1), "c/seed0": (1, 1)}
    # a: killed mid-fit and trained again, or killed after saving its checkpoint and loaded: trained once
    assert counts["a/seed0"]["end"] == 1 and counts["a/seed0"]["start"] in (1, 2)
    assert leftovers(results) == []
    assert sorted(p.name for p in (results / "slurm").glob(f"{array_id}_*_log.out")) == [
        f"{array_id}_{i}_0_log.out" for i in range(3)]
