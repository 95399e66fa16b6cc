"""Groups, job files, shards, estimates, `--dry-run`, `bench status` and the record's `run` field
(issue #27), in this process on the tiny detector. The executors themselves run for real in
`test_executors_local.py` and `test_executors_slurm.py`."""
import json
import os
import random

import pytest

from robustad.attacks import ATTACKS, Attack, register_attack
from robustad.bench.cli import main
from robustad.bench.run.local import worker_slots
from robustad.bench.run.slurm import parse_slurm_time
from robustad.bench.cells import checkpoint_path, group_id_of
from robustad.bench.run.jobs import (Job, RunOptions, make_groups, parse_shard, read_job,
                                   shard_groups, write_job)
from robustad.bench.results.lease import Lease
from robustad.bench.results.records import read_record
from robustad.bench.runner import CellSpec, run_cell

TINY = "tests.tiny_detector:TinyDetector"


FAST = (("steps", "10"),)  # ten training steps of the tiny detector: these tests need a model, not a good one


def cell(category="alpha", attack="pgd", seed=0, root=None, **kw):
    return CellSpec(method=TINY, dataset="mvtec", category=category, attack=attack, seed=seed, root=root,
                    steps=kw.pop("steps", 3), config=kw.pop("config", FAST), **kw)


def group_checkpoint(job):
    """The checkpoint the job's group trains (its lease file sits beside it)."""
    from robustad.bench.evaluation.prepare import build_detector
    from robustad.datasets.registry import open_format

    spec = job.group.first
    return checkpoint_path(job.results, build_detector(spec).config_dict(), spec,
                           str(open_format(spec.dataset, spec.root).root))


def run_args(root, results, *extra):
    return ["run", "--method", TINY, "--dataset", "mvtec", "--root", str(root), "--steps", "3",
            "--config", "steps=10", "--results", str(results), *extra]


class LeavingAttack(Attack):
    """Leaves the ε-ball on purpose: its cell fails, with an error in its record."""

    name = "test-leave"

    def perturb(self, objective, images):
        return (images + 3 * self.threat.eps).clamp(0, 1)


@pytest.fixture
def leaving_attack():
    register_attack("test-leave")(LeavingAttack)
    yield "test-leave"
    ATTACKS.unregister("test-leave")


def test_cells_that_share_a_checkpoint_form_one_group():
    specs = [cell(c, a, s) for c in ("alpha", "beta") for s in (0, 1) for a in ("pgd", "fgsm")]
    groups = make_groups(specs + [cell("alpha", "pgd", 0)])  # a repeated cell counts once
    assert len(groups) == 4 and all(len(g.cells) == 2 for g in groups)
    assert [g.cells[0].category for g in groups] == ["alpha", "alpha", "beta", "beta"]
    assert {c.attack for c in groups[0].cells} == {"pgd", "fgsm"}
    # a config override or another profile is another model
    assert group_id_of(cell(config=(("width", "8"),))) != group_id_of(cell())
    assert group_id_of(cell(profile="paper")) != group_id_of(cell())
    assert group_id_of(cell(attack="fgsm", eps=4 / 255, eps_text="4/255")) == group_id_of(cell())
    assert groups[0].group_id.startswith("tests.tiny-detector-TinyDetector__mvtec__alpha__seed0__quick__")


def test_a_job_file_round_trips_its_cells_and_refuses_a_broken_one(tmp_path):
    group = make_groups([cell(attack="pgd", config=(("width", "8"),)), cell(attack="fgsm", config=(("width", "8"),),
                         attack_options=(("loss", "ce"),))])[0]
    job = Job(group, str(tmp_path), RunOptions(device="cpu", attack_batch=4))
    path = write_job(job)
    assert write_job(job) == path and len(list(path.parent.iterdir())) == 1  # the same job, the same file
    again = read_job(path)
    assert again.group.cell_ids() == group.cell_ids() and again.options == job.options
    assert again.group.cells[1].attack_options == (("loss", "ce"),)
    other = Job(group, str(tmp_path), RunOptions(device="cuda"))
    assert write_job(other) != path  # another command's options: another file, none overwritten
    broken = tmp_path / "jobs" / "broken.json"
    broken.write_text(json.dumps({"schema": 1, "cells": []}))
    with pytest.raises(ValueError, match=f"job file {broken}: not a robustad job file"):
        read_job(broken)


def test_shards_are_disjoint_cover_the_grid_and_do_not_depend_on_order():
    groups = make_groups([cell(f"c{i}", seed=i % 3) for i in range(10)])
    costs = {g.group_id: float(len(g.group_id) % 7 + 1) for g in groups}
    slices = [shard_groups(groups, costs, i, 3) for i in range(3)]
    ids = [g.group_id for part in slices for g in part]
    assert sorted(ids) == sorted(g.group_id for g in groups) and len(set(ids)) == len(ids)
    loads = [sum(costs[g.group_id] for g in part) for part in slices]
    assert max(loads) - min(loads) <= max(costs.values())  # balanced within one group's cost
    shuffled = groups[:]
    random.Random(1).shuffle(shuffled)
    assert [g.group_id for g in shard_groups(shuffled, costs, 1, 3)] == [g.group_id for g in slices[1]]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/2", "a/b", "1", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_slurm_time_formats():
    assert [parse_slurm_time(t) for t in ("90", "45:30", "1:30:00", "1-0", "2-01:30", "1-00:00:01")] == [
        90, 46, 90, 1440, 2970, 1441]
    for bad in ("0", "abc", "1:2:3:4"):
        with pytest.raises(ValueError, match="--slurm-time"):
            parse_slurm_time(bad)


def test_dry_run_lists_the_pending_groups_and_their_estimate_and_runs_nothing(mvtec_root, tmp_path, capsys):
    results = tmp_path / "results"
    grid = run_args(mvtec_root, results, "--category", "alpha,beta", "--attack", "pgd", "--attack", "fgsm")
    assert main([*grid, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: 2 group(s) to run (4 cells); 0 done" in out
    assert "device-hours" in out and "0 of 2 estimates from this folder's records" in out
    assert "longest group: tests.tiny-detector-TinyDetector__mvtec__" in out
    assert not results.exists()  # nothing written
    assert main(run_args(mvtec_root, results, "--category", "alpha", "--attack", "pgd", "--attack", "fgsm")) == 0
    capsys.readouterr()
    assert main([*grid, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: 1 group(s) to run (2 cells); 1 done" in out
    assert "1 of 1 estimates from this folder's records" in out  # the tiny detector's measured rates
    assert "__beta__" in out and "__alpha__" not in out.split("pending groups")[1]
    assert main([*grid, "--dry-run", "--shard", "0/2"]) == 0
    assert main([*grid, "--dry-run", "--shard", "1/2"]) == 0
    shards = capsys.readouterr()
    assert shards.err.count("of the grid's 2 groups") == 2


def test_status_reports_done_running_failed_and_pending_groups(mvtec_root, tmp_path, capsys, leaving_attack):
    results = tmp_path / "results"
    assert main(run_args(mvtec_root, results, "--category", "alpha")) == 0
    assert main(run_args(mvtec_root, results, "--category", "beta", "--attack", leaving_attack)) == 1
    pending = Job(make_groups([cell("alpha", seed=1, root=str(mvtec_root))])[0], str(results), RunOptions())
    write_job(pending)
    capsys.readouterr()
    assert main(["status", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "3 group(s) (1 done, 1 failed, 1 pending); 1/3 cell(s) done" in out, out
    assert "ThreatModelViolation" in out and "__beta__" in out
    with Lease(group_checkpoint(pending), group=pending.group.group_id):
        assert main(["status", "--results", str(results)]) == 0
        out = capsys.readouterr().out
    assert "3 group(s) (1 done, 1 running, 1 failed); 1/3 cell(s) done" in out, out
    assert f"by PID {os.getpid()}" in out
    assert main(["status", "--results", str(tmp_path / "empty")]) == 1
    assert "no grid" in capsys.readouterr().out


def test_records_say_who_ran_them_and_force_reruns_once(mvtec_root, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(run_args(mvtec_root, results, "--category", "alpha")) == 0
    (path,) = (results / "records").glob("*.json")
    first = read_record(path)
    assert first.run["executor"] == "local" and first.run["worker"] == 0 and first.run["attempt"] == 1
    assert first.run["pid"] == os.getpid() and first.run["device"] == "cpu" and first.run["host"]
    assert first.run["group"] == group_id_of(cell(root=str(mvtec_root)))
    assert main(run_args(mvtec_root, results, "--category", "alpha", "--force")) == 0
    forced = read_record(path)
    assert forced.created != first.created and forced.seconds["checkpoint_reused"] is True
    inline = run_cell(cell("beta", root=str(mvtec_root)), results=results)
    assert inline.run["executor"] == "inline" and inline.run["pid"] == os.getpid()


def test_force_reruns_a_cell_only_if_its_record_predates_the_command(tmp_path):
    from robustad.bench.results.records import Record, now_iso, write_record

    spec = cell()
    options = RunOptions(redo_before=now_iso())
    assert options.forces(None) is True  # no record yet
    record = Record(cell_id=spec.cell_id(), method=TINY, dataset="mvtec", category="alpha", attack="pgd",
                    objective="localization", norm="linf", eps=8 / 255, eps_text="8/255", steps=3, seed=0,
                    profile="quick", created=now_iso(), error="x")
    assert options.forces(record) is False  # written by this command (e.g. a retry)
    assert RunOptions().forces(record) is False
    assert RunOptions(redo_before=now_iso()).forces(record) is True


def test_options_that_do_not_fit_the_executor_are_refused_before_any_work(mvtec_root, tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    cases = [(["--wait"], "--wait: only with --executor slurm"),
             (["--slurm-partition", "gpu"], "--slurm-partition: only with --executor slurm"),
             (["--executor", "slurm", "--workers", "2"], "--workers: only with --executor local"),
             (["--executor", "slurm", "--slurm-time", "soon"], "--slurm-time 'soon'"),
             (["--executor", "slurm", "--slurm-option", "mem"], "--slurm-option 'mem'"),
             (["--shard", "2/2"], "--shard '2/2'")]
    for extra, message in cases:
        assert main(run_args(mvtec_root, results, "--category", "alpha", *extra)) == 2, extra
        assert message in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert main(run_args(mvtec_root, results, "--category", "alpha", "--executor", "slurm")) == 2
    assert "not on PATH" in capsys.readouterr().err
    assert not results.exists()


def test_each_worker_gets_its_own_gpu_and_a_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    slots = worker_slots(4, "cpu")
    assert [s.env["OMP_NUM_THREADS"] for s in slots] == ["4"] * 4 and "CUDA_VISIBLE_DEVICES" not in slots[0].env
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    slots = worker_slots(2, "cuda")
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["3", "5"] and slots[0].env["OMP_NUM_THREADS"] == "8"
    with pytest.raises(ValueError, match="only 2 GPU"):
        worker_slots(3, "cuda")
    with pytest.raises(ValueError, match="use --device cuda"):
        worker_slots(2, "cuda:1")
