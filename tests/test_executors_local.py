"""The local executor for real (issue #27): worker processes on this host running groups of a detector
whose fit sleeps (`tests/sleepy_detector.py`), killed and interrupted midway.

Each test runs `bench run` in its own process, as a user would, and counts trainings in the fit log.
"""
import os
import re
import signal
import time

import pytest

from tests.grid_runs import (bench_args, fit_counts, fit_intervals, leftovers, max_overlap, pid_alive, records,
                             run_bench, start_bench, started_fits, wait_until)
from tests.synthetic import write_mvtec_tree

CATEGORIES = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_mvtec_tree(tmp_path_factory.mktemp("four"), categories=CATEGORIES, n_train=4, n_good=3, n_bad=3)


def assert_each_trained_once(fit_log, categories):
    counts = fit_counts(fit_log)
    assert {key: (c["start"], c["end"]) for key, c in counts.items()} == {f"{c}/seed0": (1, 1) for c in categories}


def test_four_groups_on_two_workers_run_side_by_side(tree, tmp_path):
    results, fit_log = tmp_path / "results", tmp_path / "fit.log"
    started = time.monotonic()
    done = run_bench(bench_args(tree, results, fit_log, CATEGORIES, fit_seconds=5, extra=["--workers", "2"]))
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    found = records(results)
    assert len(found) == 4 and all(r.done for r in found)
    assert {r.run["executor"] for r in found} == {"local"}
    assert {r.run["worker"] for r in found} == {0, 1}
    assert len({r.run["pid"] for r in found}) == 4  # a process per group
    assert {r.run["threads"] for r in found} == {max(1, len(os.sched_getaffinity(0)) // 2)}
    assert max_overlap(fit_intervals(fit_log)) == 2
    per_group = [float(s) for s in re.findall(r"finished in (\d+) s", done.stderr)]
    assert len(per_group) == 4
    assert wall < 0.8 * sum(per_group), (wall, per_group)  # the serial sum includes each worker's start
    assert_each_trained_once(fit_log, CATEGORIES)
    assert leftovers(results) == []


def test_a_worker_killed_mid_fit_is_replaced_and_its_group_retried(tree, tmp_path):
    results, fit_log = tmp_path / "results", tmp_path / "fit.log"
    bench = start_bench(bench_args(tree, results, fit_log, ("a", "b"), fit_seconds=8, extra=["--workers", "2"]))
    (victim,) = wait_until(lambda: [pid for key, pid in started_fits(fit_log) if key == "a/seed0"], 240,
                           "the fit of group a to start", bench)
    os.kill(victim, signal.SIGKILL)
    out, err = bench.communicate(timeout=300)
    assert bench.returncode == 0, err
    assert "was killed by SIGKILL" in err and "retrying it in a new worker" in err
    counts = fit_counts(fit_log)
    assert (counts["a/seed0"]["start"], counts["a/seed0"]["end"]) == (2, 1)
    assert (counts["b/seed0"]["start"], counts["b/seed0"]["end"]) == (1, 1)
    by_category = {r.category: r for r in records(results)}
    assert sorted(by_category) == ["a", "b"] and all(r.done for r in by_category.values())
    assert by_category["a"].run["attempt"] == 2 and by_category["a"].run["pid"] != victim
    assert by_category["b"].run["attempt"] == 1
    assert leftovers(results) == []  # the killed worker's lease was broken, nothing half-written is left
    assert len(list((results / "checkpoints").rglob("*.pt"))) == 2


@pytest.mark.slow
def test_an_interrupted_grid_stops_every_worker_and_keeps_what_is_done(tree, tmp_path):
    results, fit_log = tmp_path / "results", tmp_path / "fit.log"
    args = bench_args(tree, results, fit_log, CATEGORIES, fit_seconds=4, extra=["--workers", "2"])
    bench = start_bench(args)
    wait_until(lambda: len(started_fits(fit_log)) >= 3, 240, "a third fit to start", bench)
    wait_until(lambda: any((results / "records").glob("*.json")) if (results / "records").exists() else False,
               60, "a first record", bench)
    bench.send_signal(signal.SIGINT)
    out, err = bench.communicate(timeout=120)
    assert bench.returncode == 130, err
    assert "interrupted; completed records are kept" in err
    assert not [pid for _, pid in started_fits(fit_log) if pid_alive(pid)]  # every worker stopped
    assert leftovers(results) == []  # leases released
    kept = {r.cell_id: r.created for r in records(results)}
    assert kept and all(r.done for r in records(results))

    rerun = run_bench(args)
    assert rerun.returncode == 0, rerun.stderr
    after = {r.cell_id: r for r in records(results)}
    assert len(after) == 4 and all(r.done for r in after.values())
    assert all(after[cell].created == created for cell, created in kept.items())  # nothing done was redone
    ended = fit_counts(fit_log)
    assert all(counts["end"] == 1 for counts in ended.values()) and len(ended) == 4


@pytest.mark.slow
def test_a_killed_bench_run_rerun_trains_each_model_once(tree, tmp_path):
    results, fit_log = tmp_path / "results", tmp_path / "fit.log"
    args = bench_args(tree, results, fit_log, CATEGORIES, fit_seconds=10, extra=["--workers", "2"])
    bench = start_bench(args)
    wait_until(lambda: len(started_fits(fit_log)) >= 2, 240, "two fits to start", bench)
    bench.kill()  # SIGKILL: its workers, in their own sessions, finish the groups they run
    bench.wait()
    rerun = run_bench(args)
    assert rerun.returncode == 0, rerun.stderr
    assert_each_trained_once(fit_log, CATEGORIES)
    found = records(results)
    assert len(found) == 4 and all(r.done for r in found)
    assert leftovers(results) == []


def test_two_bench_runs_on_one_results_folder_train_each_model_once(tree, tmp_path):
    results, fit_log = tmp_path / "results", tmp_path / "fit.log"
    args = bench_args(tree, results, fit_log, CATEGORIES, fit_seconds=3, attacks=("pgd", "fgsm"))
    first, second = start_bench(args), start_bench(args)
    outputs = [first.communicate(timeout=300), second.communicate(timeout=300)]
    assert (first.returncode, second.returncode) == (0, 0), outputs
    assert_each_trained_once(fit_log, CATEGORIES)
    found = records(results)
    assert len(found) == 8 and all(r.done for r in found)
    assert leftovers(results) == []
