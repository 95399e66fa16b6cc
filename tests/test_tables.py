"""Tables from result records: expected outputs, bad files, duplicates, selection, LaTeX validity.

The expected files under tests/data/tables/ were generated from tests/data/records/ and checked by
hand (e.g. PatchGuard on MVTec AD, image AUROC: bottle's two seeds give 96.6 / 83.7, metal nut
88.8 / 54.5, so the dataset value is 92.7 / 69.1). After a deliberate change of the output,
regenerate them with `python -m tests.test_tables` and review the diff.
"""
import copy
import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from robustad.bench.results.records import Record
from robustad.bench.report.tables import build_table, format_cell_result, load_records, unique_cells, write_tables

DATA = Path(__file__).parent / "data"
EXPECTED = {  # file name -> build_table arguments
    "methods_ad.tex": dict(layout="methods", task="ad", fmt="latex"),
    "methods_al.csv": dict(layout="methods", task="al", fmt="csv"),
    "categories.md": dict(layout="categories", fmt="markdown"),
    "attacks.md": dict(layout="attacks", fmt="markdown"),
}


@pytest.fixture
def results(tmp_path):
    shutil.copytree(DATA / "records", tmp_path / "records")
    return tmp_path


def fixture_records():
    records, problems = load_records(DATA)
    assert len(problems) == 1 and "copy.json" in problems[0]  # the older duplicate of one cell
    return records


def a_record(**changes) -> Record:
    record = json.loads(next((DATA / "records").glob("patchguard__mvtec__bottle__pgd__*seed0*.json")).read_text())
    record.update(changes)
    return Record.from_json(record)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_table_matches_expected_file(name):
    assert build_table(fixture_records(), **EXPECTED[name]) == (DATA / "tables" / name).read_text()


def test_bad_files_are_named_and_skipped(results):
    folder = results / "records"
    good = json.loads(next(folder.glob("patchguard__btad__01__*.json")).read_text())
    (folder / "corrupt.json").write_text("{not json")
    (folder / "truncated.json").write_text(json.dumps(good)[:200])  # a write cut short
    (folder / "list.json").write_text("[1, 2]")
    (folder / "other_schema.json").write_text(json.dumps({**good, "cell_id": "x", "schema": 2}))
    partial = {k: v for k, v in good.items() if k not in ("versions", "n_test")}
    (folder / "partial.json").write_text(json.dumps({**partial, "cell_id": "partial"}))
    bad_metric = copy.deepcopy(good)
    bad_metric.update(cell_id="bad-metric")
    bad_metric["adversarial"]["image_auroc"] = "71.1"
    (folder / "bad_metric.json").write_text(json.dumps(bad_metric))
    (folder / "bad_norm.json").write_text(json.dumps({**good, "cell_id": "bad-norm", "norm": "l1"}))
    (folder / "bad_seed.json").write_text(json.dumps({**good, "cell_id": "bad-seed", "seed": [0]}))
    (folder / ".atomic.json.tmp").write_text("{")  # an atomic write in progress is not a record
    (folder / "notes.txt").write_text("not json")

    records, problems = load_records(results)
    assert len(records) == len(fixture_records())
    named = {Path(p.split(":")[0]).name: p for p in problems}
    assert set(named) == {"corrupt.json", "truncated.json", "list.json", "other_schema.json", "partial.json",
                          "bad_metric.json", "bad_norm.json", "bad_seed.json", next(folder.glob("*.copy.json")).name}
    assert "not valid JSON" in named["truncated.json"]
    assert "not a result record" in named["list.json"]
    assert "schema 2" in named["other_schema.json"]
    assert "missing n_test, versions" in named["partial.json"]
    assert "adversarial.image_auroc" in named["bad_metric.json"]
    assert "norm" in named["bad_norm.json"]
    assert build_table(records, layout="methods", fmt="markdown") == build_table(fixture_records(), fmt="markdown")


def test_missing_folder_is_a_problem_not_a_crash(tmp_path):
    records, problems = load_records(tmp_path)
    assert records == [] and "no records folder" in problems[0]
    with pytest.raises(ValueError, match="no usable result records"):
        write_tables(tmp_path)


def test_duplicates_keep_the_newest_successful_record():
    old = a_record(created="2026-01-01T00:00:00+00:00")
    new = a_record(created="2026-02-01T00:00:00+00:00", clean={**vars(old.clean), "image_auroc": 11.0})
    failed_newest = a_record(created="2026-03-01T00:00:00+00:00", error="RuntimeError: boom",
                             clean=None, adversarial=None)
    kept, dropped = unique_cells([old, failed_newest, new])
    assert kept == [new] and len(dropped) == 2
    table = build_table([old, new, failed_newest], layout="categories", fmt="csv")
    assert "Bottle,11.0," in table


def test_failed_cell_shows_missing_and_is_counted():
    ok = a_record()
    failed = a_record(cell_id="failed", category="cable", error="ValueError: bad input", clean=None, adversarial=None)
    table = build_table([ok, failed], layout="categories", fmt="markdown")
    assert re.search(r"\| Cable\s+\| –\s+\| –", table)
    assert "1 of 2 cells failed" in table
    assert "97.6\\*" in table  # the average covers one category of two


def test_filters_select_the_attack_setting():
    records = fixture_records()
    fgsm = build_table(records, layout="methods", fmt="markdown", attack="fgsm", eps="8/255", norm="linf")
    assert "under FGSM," in fgsm
    # only PatchGuard has FGSM records (seed 0): bottle 97.6 / 90.0, metal nut 88.8 / 70.0; one column, no bold
    assert "| MVTec AD  | 93.2 / 80.0  |" in fgsm
    apgd = build_table(records, layout="methods", fmt="csv", attack="apgd-100")
    assert "PatchGuard" in apgd and "PatchCore" not in apgd
    with pytest.raises(ValueError, match="attack=pgd, eps=4/255"):
        build_table(records, attack="pgd", eps="4/255")


def test_detection_objective_is_preferred_for_ad_and_localization_for_al():
    loc = [a_record(cell_id=f"loc{i}", category=c) for i, c in enumerate(["bottle", "cable", "grid"])]
    det = [a_record(cell_id="det", objective="detection", adversarial={"image_auroc": 33.0, "pixel_auroc": 44.0,
                                                                       "pixel_aupro": 1.0})]
    ad = build_table(loc + det, layout="methods", task="ad", fmt="markdown")
    al = build_table(loc + det, layout="methods", task="al", fmt="markdown")
    assert "detection objective" in ad and "/ 33.0" in ad and "most common of 2" in ad
    assert "localization objective" in al and "/ 84.6" in al


def test_best_adversarial_value_is_bold_in_latex_with_ties():
    base = a_record()
    other = a_record(cell_id="other", method="patchcore", clean={**vars(base.clean), "image_auroc": 99.0})
    text = build_table([base, other], layout="methods", fmt="latex")
    assert text.count(r"\textbf{84.7}") == 4  # tied best in the dataset row and in the average row
    low = a_record(cell_id="low", method="patchcore", adversarial={**vars(base.adversarial), "image_auroc": 3.0})
    text = build_table([base, low], layout="methods", fmt="latex")
    assert r"\textbf{84.7}" in text and r"\textbf{3.0}" not in text


def test_attack_with_step_suffix_groups_with_its_steps():
    named = a_record(cell_id="named", attack="pgd-20", steps=None)
    table = build_table([a_record(), named], layout="attacks", fmt="csv")
    assert table.splitlines()[0] == "Dataset,Task,Clean,PGD-20"


def test_latex_is_well_formed():
    for layout in ("methods", "categories", "attacks"):
        text = build_table(fixture_records(), layout=layout, fmt="latex")
        for table in text.split(r"\end{table}")[:-1]:
            spec = re.search(r"\\begin\{tabular\}\{([lc]+)\}", table).group(1)
            assert table.count(r"\toprule") == table.count(r"\bottomrule") == 1
            body = table.split(r"\toprule")[1].split(r"\bottomrule")[0]
            rows = [r for r in body.split("\\\\") if "&" in r]
            assert rows and all(r.count("&") == len(spec) - 1 for r in rows if "multicolumn" not in r)
            assert table.count("{") == table.count("}")
            assert re.search(r"(?<!\\)_", table) is None  # underscores escaped (my_defense)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles(tmp_path):
    tables = "\n".join(build_table(fixture_records(), layout=layout, fmt="latex")
                       for layout in ("methods", "categories", "attacks"))
    document = ("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
                "\\begin{document}\n" + tables + "\n\\end{document}\n")
    (tmp_path / "tables.tex").write_text(document)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]


def test_write_tables_and_cli(results, capsys):
    from robustad.bench.cli import main

    paths = write_tables(results, layout="methods", task="al", fmt="csv")
    assert paths == [results.resolve() / "tables" / "methods_al.csv"]
    assert paths[0].read_text() == (DATA / "tables" / "methods_al.csv").read_text()
    assert main(["table", "--results", str(results), "--layout", "categories", "--format", "markdown"]) == 0
    assert (results / "tables" / "categories.md").read_text() == (DATA / "tables" / "categories.md").read_text()
    assert "copy.json" in capsys.readouterr().err  # the duplicate is reported


def test_format_cell_result():
    text = format_cell_result(a_record())
    assert "PatchGuard on MVTec AD/bottle" in text and "PGD-20" in text
    assert re.search(r"image AUROC\s+97\.6\s+84\.7", text)
    assert re.search(r"pixel AUPRO\s+90\.1\s+70\.2", text)
    failed = format_cell_result(a_record(error="RuntimeError: out of memory", clean=None, adversarial=None))
    assert "FAILED: RuntimeError: out of memory" in failed


def regenerate():
    (DATA / "tables").mkdir(exist_ok=True)
    for name, arguments in EXPECTED.items():
        (DATA / "tables" / name).write_text(build_table(fixture_records(), **arguments))


if __name__ == "__main__":
    regenerate()


def test_failed_record_of_the_runner_loads(tmp_path):
    from robustad.bench.results.records import write_record
    from robustad.bench.cells import CellSpec, failed_record

    spec = CellSpec(method="patchguard", dataset="mvtec", category="bottle", attack="pgd-1000")
    write_record(tmp_path, failed_record(spec, RuntimeError("out of memory")))
    write_record(tmp_path, a_record())
    records, problems = load_records(tmp_path)
    assert problems == [] and len(records) == 2
    table = build_table(records, layout="attacks", fmt="csv")
    assert table.splitlines()[0] == "Dataset,Task,Clean,PGD-20,PGD-1000"


@pytest.mark.slow
def test_records_written_by_the_runner_make_every_table(mvtec_root, tmp_path):
    from robustad.bench.runner import CellSpec, run_cells

    specs = [CellSpec(method="tests.tiny_detector:TinyDetector", dataset="mvtec", category="alpha",
                      root=str(mvtec_root), steps=2)]
    specs.append(CellSpec(method="tests.tiny_detector:TinyDetector", dataset="mvtec", category="no-such-category",
                          root=str(mvtec_root), steps=2))  # fails: its record has an error
    run_cells(specs, results=tmp_path, log=lambda message: None)
    records, problems = load_records(tmp_path)
    assert problems == [] and len(records) == 2 and sum(r.failed for r in records) == 1
    for layout in ("methods", "categories", "attacks"):
        for fmt in ("latex", "markdown", "csv"):
            assert write_tables(tmp_path, layout=layout, task="al", fmt=fmt, records=records)[0].stat().st_size > 0
    csv = build_table(records, layout="categories", fmt="csv")
    assert re.search(r"Alpha,\d+\.\d,\d+\.\d,\d+\.\d,\d+\.\d", csv) and "No-such-category,–,–,–,–" in csv
    assert "pixel AUPRO" in format_cell_result(records[0])


def test_a_reference_row_that_matches_no_measured_cell_is_named_with_why(tmp_path, capsys):
    """A user's figure for `pgd` (the profile's steps) beside records of PGD-20 matches nothing: the table
    says which row and how the nearest measured cell differs."""
    from robustad.bench.cli import main
    from robustad.bench.report.tables import unmatched_reference_rows
    from robustad.bench.results.reference import load_reference

    shutil.copytree(DATA / "records", tmp_path / "records")
    csv = tmp_path / "mine.csv"
    csv.write_text("table,method,dataset,category,task,attack,clean,adversarial,norm,eps,metric,paper_label,note\n"
                   "T1,patchguard,mvtec,bottle,AL,pgd,97.0,60.0,linf,8/255,pixel_auroc,Ours,\n"
                   "T1,patchguard,mvtec,bottle,AL,pgd-20,97.0,60.0,linf,8/255,pixel_auroc,Ours,\n")
    lines = unmatched_reference_rows(load_reference(str(csv)), fixture_records())
    assert len(lines) == 1 and "line 2" in lines[0] and "attack pgd vs measured pgd-20" in lines[0]
    assert unmatched_reference_rows(load_reference("paper"), fixture_records()) == []
    assert main(["table", "--results", str(tmp_path), "--reference", str(csv), "--format", "markdown"]) == 0
    assert "line 2" in capsys.readouterr().err


def test_one_dataset_read_from_two_roots_has_separate_rows_and_no_average(tmp_path):
    records = [r for r in fixture_records() if r.dataset == "mvtec" and r.attack == "pgd"]
    other_root = [dataclasses.replace(r, root="/elsewhere/mvtec", cell_id=r.cell_id + "-b") for r in records]
    table = build_table(records + other_root, layout="methods", task="al", fmt="csv")
    assert "root=/elsewhere/mvtec" in table and table.count("MVTec") >= 2
    average = next(line for line in table.splitlines() if line.startswith("Average"))
    assert not re.search(r"\d", average), average
    assert "No Average" in build_table(records + other_root, layout="methods", task="al", fmt="markdown")
    assert re.search(r"\d", next(line for line in build_table(records, layout="methods", task="al", fmt="csv")
                                 .splitlines() if line.startswith("Average")))
