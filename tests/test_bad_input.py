"""The bad-input catalogue: `bench` driven with every case a new user or a hostile tester tried.

Each case asserts a clear message (naming the file or option and what was expected), the exit
code, and that nothing already written changed: a results folder with a finished cell (record and
checkpoint) is snapshotted before the bad command and compared after it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustad.bench.cli import main
from tests.synthetic import write_mvtec_tree

TINY = "tests.tiny_detector:TinyDetector"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_mvtec_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture
def finished(tree, tmp_path):
    """A results folder holding one finished cell."""
    results = tmp_path / "results"
    assert run_tiny(tree, results) == 0
    return results


def run_tiny(root, results, *extra, category="alpha"):
    return main(["run", "--method", TINY, "--dataset", "mvtec", "--root", str(root), "--category", category,
                 "--attack", "pgd", "--steps", "2", "--results", str(results), *extra])


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def broken_copy(tree: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / f"tree-{how}"
    shutil.copytree(tree, copy)
    image = copy / "alpha" / "test" / "blob" / "003.png"
    if how == "truncated":
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 2])
    else:  # a 4×4 image with a 4×4 mask
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image)
        Image.fromarray(np.full((4, 4), 255, np.uint8)).save(copy / "alpha" / "ground_truth" / "blob" / "003_mask.png")
    return copy


# -- cases refused before any work --------------------------------------------------------------
REFUSED = {
    # name: (extra arguments of `bench run` on the tiny cell, message regex)
    "eps covering the whole range": (["--eps", "2"], r"--eps 2 with --norm linf covers the whole \[0, 1\]"),
    "negative eps": (["--eps", "-1"], r"--eps"),
    "config value outside its domain": (["--config", "steps=0"], r"--config steps=0 .*expected an integer >= 1"),
    "image size of zero": (["--config", "image_size=0"], r"image_size=0 .*expected an integer >= 8"),
    "unknown config key": (["--config", "no_such_field=1"], r"unknown config field\(s\) no_such_field"),
    "unknown attack": (["--attack", "pgdd"], r"unknown attack 'pgdd'; valid attacks"),
    "unknown attack option": (["--attack-option", "lossess=js"], r"no option\(s\) lossess"),
}


def exit_code(argv: list[str]) -> int:
    """`main(argv)`'s exit code, argparse's own refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_run_options_are_refused_before_any_work(case, tree, finished, capsys):
    extra, message = REFUSED[case]
    before = snapshot(finished)
    capsys.readouterr()
    assert exit_code(["run", "--method", TINY, "--dataset", "mvtec", "--root", str(tree), "--category", "alpha",
                      "--attack", "pgd", "--steps", "2", "--results", str(finished), *extra]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert snapshot(finished) == before


def test_a_baseline_config_value_outside_its_domain_is_refused_before_building_it(tree, finished, capsys):
    before = snapshot(finished)
    assert main(["run", "--method", "patchcore", "--dataset", "mvtec", "--root", str(tree), "--category", "alpha",
                 "--results", str(finished), "--config", "coreset_ratio=-1"]) == 2
    assert "--config coreset_ratio=-1.0 for method 'patchcore': expected a number in (0, 1]" in capsys.readouterr().err
    assert snapshot(finished) == before


def test_unknown_dataset_and_misspelled_category_write_no_record(tree, finished, capsys):
    before = snapshot(finished)
    assert main(["run", "--method", TINY, "--dataset", "mvtecc", "--root", str(tree), "--results",
                 str(finished)]) == 2
    assert "unknown dataset 'mvtecc'; valid datasets" in capsys.readouterr().err
    assert run_tiny(tree, finished, category="alpah") == 2
    err = capsys.readouterr().err
    assert "--category alpah: not in dataset 'mvtec' (categories there: alpha, beta)" in err
    assert snapshot(finished) == before


def test_results_folder_that_cannot_be_written_is_refused_up_front(tree, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert run_tiny(tree, blocker / "results") == 2
    assert f"--results {blocker / 'results'}: cannot write there" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_mistyped_root_of_the_builtin_dataset_generates_nothing(tmp_path, capsys):
    typo = tmp_path / "textrues"
    assert main(["run", "--method", TINY, "--dataset", "textures", "--root", str(typo), "--category", "brick",
                 "--results", str(tmp_path / "r")]) == 2
    assert "no complete textures tree at" in capsys.readouterr().err
    assert not typo.exists() and not (tmp_path / "r" / "records").exists()


@pytest.mark.parametrize("how, message", [("truncated", r"cannot read image .*003\.png"),
                                          ("tiny", r"003\.png is 4x4 px, smaller than 16 px")])
def test_unusable_test_images_are_found_before_training(how, message, tree, finished, tmp_path, capsys):
    broken = broken_copy(tree, tmp_path, how)
    assert main(["data", "info", "--dataset", "mvtec", "--root", str(broken)]) == 1
    assert re.search(message, capsys.readouterr().out)
    before = snapshot(finished)
    old_records = set((finished / "records").glob("*.json"))
    assert run_tiny(broken, finished) == 1  # the cell fails, the grid goes on
    (new_record,) = set((finished / "records").glob("*.json")) - old_records
    error = json.loads(new_record.read_text())["error"]
    assert re.search(message, error) and "found before any training" in error
    assert [p for p in (finished / "checkpoints").rglob("*.pt") if p.relative_to(finished) not in before] == []
    assert {k: v for k, v in snapshot(finished).items() if k in before} == before


# -- a finished computation is never thrown away --------------------------------------------------
def test_a_record_that_cannot_be_written_is_kept_elsewhere_and_printed(tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROBUSTAD_CACHE", str(tmp_path / "cache"))
    results = tmp_path / "results"
    results.mkdir()
    (results / "records").write_text("a file where the records folder should be")  # e.g. a disk that filled
    assert run_tiny(tree, results) == 1
    out, err = capsys.readouterr()
    assert "pixel AUROC" in out  # the metrics are printed
    fallback = list((tmp_path / "cache" / "records-fallback" / "records").glob("*.json"))
    assert len(fallback) == 1 and f"kept it at {fallback[0]}" in err
    assert json.loads(fallback[0].read_text())["error"] is None
    assert "Traceback" not in err and "During handling" not in err


def test_a_table_that_cannot_be_saved_is_still_printed(finished, capsys):
    (finished / "tables").write_text("a file where the tables folder should be")
    assert main(["table", "--results", str(finished), "--format", "markdown"]) == 1
    out, err = capsys.readouterr()
    assert "TinyDetector" in out and "could not save the table" in err


# -- tables never compare what is not comparable ---------------------------------------------------
def test_records_of_two_dataset_trees_stay_apart_and_csv_columns_are_numbers(tree, tmp_path, capsys):
    other = tmp_path / "other-tree"
    shutil.copytree(tree, other)
    results = tmp_path / "results"
    assert run_tiny(tree, results) == 0 and run_tiny(other, results) == 0
    capsys.readouterr()
    assert main(["table", "--results", str(results), "--layout", "methods", "--task", "al", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "Dataset,TinyDetector clean,TinyDetector adversarial"
    labels = sorted(line.split(",")[0] for line in lines[1:-1])
    assert labels == sorted([f"MVTec AD (root={tree.resolve()})", f"MVTec AD (root={other.resolve()})"])
    for line in lines[1:-1]:
        for value in line.split(",")[1:]:
            float(value.rstrip("*"))
    # one dataset read from two roots is not two datasets: no mean over those rows
    assert lines[-1].startswith("Average,") and set(lines[-1].split(",")[1:]) == {"–"}


# -- files and commands ------------------------------------------------------------------------------
def test_results_are_written_with_the_users_umask(tree, tmp_path):
    before = os.umask(0o022)
    try:
        assert run_tiny(tree, tmp_path / "results") == 0
    finally:
        os.umask(before)
    for path in (tmp_path / "results").rglob("*"):
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o644, path


def test_list_names_the_composite_attack(capsys):
    assert main(["list", "attacks"]) == 0
    assert "worst:A,B,..." in capsys.readouterr().out


# -- killed and concurrent runs (these worked before; kept in the catalogue) ---------------------------
def bench_process(root, results, categories: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robustad.bench.cli", "run", "--method", TINY, "--dataset", "mvtec",
                             "--root", str(root), "--category", categories, "--attack", "pgd", "--steps", "2",
                             "--results", str(results)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_kill_9_mid_grid_then_rerun_completes_without_partial_files(tree, tmp_path):
    results = tmp_path / "results"
    process = bench_process(tree, results, "alpha,beta")
    deadline = time.time() + 300
    while not list((results / "records").glob("*.json")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert bench_process(tree, results, "alpha,beta").wait() == 0
    names = sorted(p.name for p in (results / "records").iterdir())
    assert len(names) == 2 and all(n.endswith(".json") and not n.startswith(".") for n in names)
    assert not [p for p in results.rglob("*.tmp")]


def test_two_grids_at_once_on_one_results_folder_both_complete(tree, tmp_path):
    results = tmp_path / "results"
    first, second = bench_process(tree, results, "alpha"), bench_process(tree, results, "beta")
    assert first.wait() == 0 and second.wait() == 0
    records = [json.loads(p.read_text()) for p in (results / "records").glob("*.json")]
    assert sorted(r["category"] for r in records) == ["alpha", "beta"] and all(r["error"] is None for r in records)
