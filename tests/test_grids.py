"""Grids as data (`bench/grids/grid.py`, issue #28): the shipped paper grids, `bench grid list|show`,
`bench run --grid` on a user's grid over the built-in textures, `bench table --grid` and
`--reference` beside measured values, and clear errors for bad grid files and `--root`s."""
import csv
import io
import json

import pytest

from robustad.bench.cli import main
from robustad.bench.grids.grid import GridError, expand_grid, load_grid, shipped_grids
from robustad.bench.cli_grid import parse_roots
from robustad.bench.results.reference import config_key, load_reference, method_defaults
from robustad.core.parsing import parse_number, split_steps_suffix
from tests.dataset_trees import write_mvtec_like

TINY = "tests.tiny_detector:TinyDetector"
PAPER_GRIDS = [f"paper/table{n}" for n in range(1, 22)] + ["paper/fig2"]
PATCHGUARD_DEFAULTS = method_defaults("patchguard", "paper")  # Table 5's alpha=1 is PatchGuard itself


def test_every_paper_table_and_figure_2_ships_as_a_grid():
    assert sorted(shipped_grids()) == sorted(PAPER_GRIDS)


def _reference_keys(reference, table: str, per_category: bool):
    keys = []
    for row in reference.matching(table=table, any_config=True):
        if row.dataset == "average":
            continue
        variant = row.config_key(PATCHGUARD_DEFAULTS) if row.config is not None else row.value.label
        keys.append((row.method, variant, row.dataset, row.category if per_category else "mean", row.task,
                     row.attack, row.steps, round(row.eps, 6)))
    return keys


def _cell_keys(grid, cells, per_category: bool):
    keys = set()
    for cell in cells:
        run = grid.runs[cell.run]
        variant = run.label if run.not_implemented else config_key(dict(cell.config), PATCHGUARD_DEFAULTS)
        attack, steps = split_steps_suffix(cell.attack)
        keys.add((cell.method, variant, cell.dataset, cell.category if per_category else "mean", cell.objective,
                  attack, steps, round(parse_number(cell.eps_text), 6)))
    return keys


@pytest.mark.parametrize("name", PAPER_GRIDS)
def test_a_paper_grid_expands_to_exactly_the_rows_of_its_published_table(name):
    grid = load_grid(name)
    cells, blocked = expand_grid(grid)
    assert cells and grid.profile == "paper" and grid.seeds == (0,)
    assert set(blocked) == set(cells)  # no dataset root here, nothing is runnable: every cell says why
    assert all(reason for reason in blocked.values())
    if grid.reference_table is None:  # Figure 2 has no figures in the tables
        assert {c.config for c in cells} == {(("adv_train", "false"), ("vit_depth", "12"), ("vit_embed_dim", "768"),
                                              ("vit_heads", "12")),
                                             (("vit_depth", "12"), ("vit_embed_dim", "768"), ("vit_heads", "12"))}
        return
    per_category = "category" in grid.table.rows
    reference = _reference_keys(load_reference("paper"), grid.reference_table, per_category)
    assert len(reference) == len(set(reference))
    assert _cell_keys(grid, cells, per_category) == set(reference)
    if not per_category:  # one cell per category of each published dataset mean
        from robustad.bench.grids.grid import known_categories

        assert len(cells) == sum(len(known_categories(key[2])) for key in reference)
    else:
        assert len(cells) == len(reference)


def test_bench_grid_show_paper_table4_lists_its_cells_and_why_none_runs_without_roots(capsys):
    assert main(["grid", "show", "paper/table4"]) == 0
    out = capsys.readouterr().out
    assert "paper/table4: Table 4: PatchGuard against detection attacks" in out
    assert "372 cells, 31 trainings; runnable here: 0 cells, 0 trainings" in out
    assert "datasets (categories): mvtec (15), visa (12), btad (3), brats2021 (1)" in out
    assert "attacks: pgd-1000, caa, autoattack, a3, segpgd, sea; objectives: detection, localization" in out
    assert "180 cells (15 trainings): no root for dataset 'mvtec' (give --root mvtec=DIR)" in out
    assert "12 cells (1 training): no root for dataset 'brats2021' (give --root brats2021=DIR)" in out


def test_bench_grid_show_counts_what_a_root_makes_runnable(tmp_path, capsys):
    root = write_mvtec_like(tmp_path / "mvtec", ["bottle", "cable"])
    assert main(["grid", "show", "paper/table4", "--root", f"mvtec={root}"]) == 0
    out = capsys.readouterr().out
    assert "runnable here: 24 cells, 2 trainings" in out  # 2 categories x 6 attacks x 2 objectives
    assert (f"156 cells (13 trainings): dataset 'mvtec' under {root} lacks these categories: capsule, carpet"
            in out)
    # bench run --grid runs exactly those cells, on any executor; a dry run lists their groups
    results = tmp_path / "results"
    assert main(["run", "--grid", "paper/table4", "--root", f"mvtec={root}", "--results", str(results), "--dry-run",
                 "--profile", "quick"]) == 0
    captured = capsys.readouterr()
    assert "dry run: 2 group(s) to run (24 cells); 0 done" in captured.out
    assert "patchguard on mvtec/bottle, seed 0, quick: pgd-1000 8/255, caa 8/255" in captured.out
    assert "not run: 144 cells: no root for dataset 'visa' (give --root visa=DIR)" in captured.err
    assert not (results / "records").exists()


def test_bench_grid_show_says_which_methods_and_variants_are_not_implemented(capsys):
    assert main(["grid", "show", "paper/table1"]) == 0
    out = capsys.readouterr().out
    assert "594 cells, 594 trainings" in out
    assert "not implemented" not in out  # every method of Table 1 runs (GLAD, PrincipaLS, ZARND, RODEO included)
    for table, cells, variant in (("table6", 310, "pseudo_anomaly=glass"), ("table10", 124, "alpha=0 backbone=resnet50"),
                                  ("table11", 186, "alpha=0 attention=bigbird")):
        assert main(["grid", "show", f"paper/{table}"]) == 0
        out = capsys.readouterr().out
        assert f"{cells} cells, {cells // 2} trainings" in out and f"config: {variant}\n" in out
        assert "not implemented" not in out


def test_bench_grid_list_prints_every_grid_with_its_counts(capsys):
    assert main(["grid", "list"]) == 0
    out = capsys.readouterr().out
    for name in PAPER_GRIDS:
        assert f"\n{name} " in out
    line = next(line for line in out.splitlines() if line.startswith("paper/table4 "))
    assert line.split()[1:6] == ["372", "cells", "31", "trainings", "0"]


USER_GRID = f"""
title = "Tiny detector on textures"
profile = "quick"
seeds = [0]
datasets = ["textures"]
categories = ["brick", "grass"]
objectives = ["detection", "localization"]

[table]
rows = ["dataset", "task"]
columns = "attack"
tasks = ["ad", "al"]

[[runs]]
methods = ["{TINY}"]
config = {{ steps = "10" }}
attacks = ["pgd-3", "fgsm"]

[[runs]]
label = "not here"
methods = ["no-such-method"]
attacks = ["pgd-3"]

[[runs]]
methods = ["{TINY}"]
config = {{ steps = "10" }}
attacks = ["no-such-attack"]
"""


def _records(results):
    return [json.loads(p.read_text()) for p in sorted((results / "records").glob("*.json"))]


def test_a_users_grid_over_textures_runs_and_its_table_shows_reference_values(tmp_path, capsys):
    grid = tmp_path / "mine.toml"
    grid.write_text(USER_GRID)
    results = tmp_path / "results"
    assert main(["grid", "show", str(grid)]) == 0
    out = capsys.readouterr().out
    assert "16 cells, 4 trainings; runnable here: 8 cells, 2 trainings" in out
    assert "4 cells (2 trainings): method 'no-such-method' is not implemented in robustad" in out
    assert "4 cells (2 trainings): attack 'no-such-attack': unknown attack 'no-such-attack'" in out

    assert main(["run", "--grid", str(grid), "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert "grid " + str(grid) + ": 16 cells, 4 trainings; runnable here: 8 cells" in err
    assert "not run: 4 cells: method 'no-such-method' is not implemented in robustad" in err
    records = _records(results)
    assert len(records) == 8 and all(r["error"] is None for r in records)
    assert {(r["category"], r["attack"], r["objective"]) for r in records} == {
        (c, a, o) for c in ("brick", "grass") for a in ("pgd-3", "fgsm") for o in ("detection", "localization")}
    assert {r["profile"] for r in records} == {"quick"} and {r["config_overrides"]["steps"] for r in records} == {10}

    # a published figure for the mean over both categories (AD, PGD-3) and one for brick (AL)
    ad = [r for r in records if r["attack"] == "pgd-3" and r["objective"] == "detection"]
    clean_ad = sum(r["clean"]["image_auroc"] for r in ad) / 2
    adversarial_ad = sum(r["adversarial"]["image_auroc"] for r in ad) / 2
    reference = tmp_path / "mine.csv"
    reference.write_text(
        "table,method,dataset,category,task,attack,clean,adversarial,norm,eps,metric,paper_label,note,config\n"
        f"T1,{TINY},textures,mean,AD,pgd-3,60.0,10.0,linf,8/255,image_auroc,Tiny,,steps=10\n"
        f"T1,{TINY},textures,brick,AL,pgd-3,70.0,20.0,linf,8/255,pixel_auroc,Tiny,,steps=10\n")

    assert main(["table", "--results", str(results), "--grid", str(grid), "--reference", str(reference),
                 "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    ad_row = next(r for r in rows if r["Task"] == "AD")
    assert float(ad_row["PGD-3 clean"]) == pytest.approx(clean_ad, abs=0.05)
    assert ad_row["PGD-3 clean ref"] == "60.0" and ad_row["PGD-3 adversarial ref"] == "10.0"
    assert float(ad_row["PGD-3 adversarial difference"]) == pytest.approx(round(adversarial_ad, 1) - 10.0, abs=1e-6)
    assert ad_row["FGSM clean ref"] == "" and ad_row["FGSM clean"] != ""  # no figure published for FGSM
    al_row = next(r for r in rows if r["Task"] == "AL")
    assert al_row["PGD-3 clean ref"] == ""  # the AL figure is brick's alone, not the mean's

    # the layouts of `bench table` put the figure beside the measured one, readable in LaTeX
    assert main(["table", "--results", str(results), "--reference", str(reference), "--layout", "categories",
                 "--attack", "pgd-3", "--objective", "localization", "--format", "latex"]) == 0
    latex = capsys.readouterr().out
    brick = [r for r in records if r["attack"] == "pgd-3" and r["objective"] == "localization"
             and r["category"] == "brick"][0]
    pixel_clean = round(brick["clean"]["pixel_auroc"], 1)
    difference = f"{pixel_clean - 70.0:+.1f}".replace("-", "$-$")
    assert f"{pixel_clean:.1f} (ref 70.0, {difference})" in latex
    assert "the published figure (ref: " + str(reference.resolve()).replace("_", r"\_") in latex  # LaTeX-escaped
    assert main(["table", "--results", str(results), "--reference", str(reference), "--attack", "pgd-3",
                 "--objective", "detection", "--task", "ad", "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert f"{clean_ad:.1f} (ref 60.0, " in markdown
    assert (results / "tables" / "methods_ad_vs_ref.md").is_file()


def test_the_paper_table_layout_shows_the_published_figures_before_anything_ran(tmp_path, capsys):
    assert main(["table", "--results", str(tmp_path), "--grid", "paper/table4", "--reference", "paper",
                 "--format", "markdown"]) == 0
    captured = capsys.readouterr()
    assert "no record under" in captured.err
    lines = [line for line in captured.out.splitlines() if line.startswith("|")]
    assert lines[0].split("|")[3:9] == [" PGD-1000       ", " CAA            ", " AutoAttack     ", " A³             ",
                                        " SegPGD         ", " SEA            "]
    assert lines[2].startswith("| MVTec AD  | AD     | – (paper 71.1) | – (paper 74.8)")
    assert main(["table", "--results", str(tmp_path), "--grid", "paper/table1", "--reference", "paper",
                 "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    # implemented methods are labelled by their display name, the others (GLAD) by the paper's label
    assert "| Average " in out and "| PrincipaLS " in out and "| GLAD " in out
    assert "– (paper 89.3) / – (paper 74.1)" in out


@pytest.mark.parametrize("text, expected", [
    ("title = 'x'\n[[runs]]\nmethods = ['a']\ndatasets = ['textures']\nattacks = ['pgd']\nmetods = ['b']\n",
     r"runs\[0\]\.metods: unknown key"),
    ("title = 'x\n", "not valid TOML"),
    ("[[runs]]\nmethods = ['a']\nattacks = ['pgd']\n", r"runs\[0\]: missing key 'datasets'"),
    ("[[runs]]\nmethods = ['a']\ndatasets = ['d']\nattacks = ['pgd']\nobjectives = ['segmentation']\n",
     r"runs\[0\]\.objectives: expected detection and/or localization"),
    ("[[runs]]\nmethods = ['a']\ndatasets = ['d']\nattacks = ['pgd']\neps = ['eight']\n",
     r"runs\[0\]\.eps: 'eight' is not a budget"),
    ("[[runs]]\nmethods = []\ndatasets = ['d']\nattacks = ['pgd']\n", r"runs\[0\]\.methods: expected a non-empty list"),
    ("profile = 'fast'\n[[runs]]\nmethods = ['a']\ndatasets = ['d']\nattacks = ['pgd']\n", "profile: expected one of"),
    ("[table]\ncolumns = 'colour'\n[[runs]]\nmethods = ['a']\ndatasets = ['d']\nattacks = ['pgd']\n",
     r"table\.columns: 'colour' is not a dimension"),
    ("seeds = 3\n[[runs]]\nmethods = ['a']\ndatasets = ['d']\nattacks = ['pgd']\n", "seeds: expected a non-empty list"),
    ("colour = 'red'\n[[runs]]\nmethods = ['a']\ndatasets = ['d']\nattacks = ['pgd']\n", "colour: unknown key"),
])
def test_a_bad_grid_file_is_named_with_the_key_at_fault(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(GridError, match=f"grid file {path}.*{expected}"):
        load_grid(str(path))
    assert main(["grid", "show", str(path)]) == 2
    assert f"bench: error: grid file {path}" in capsys.readouterr().err


def test_grid_names_and_cell_options_are_checked_before_anything_runs(tmp_path, capsys):
    assert main(["grid", "show", "paper/table99"]) == 2
    assert "--grid paper/table99: no such grid; expected a shipped grid (paper/fig2, paper/table1" in capsys.readouterr().err
    assert main(["run", "--grid", "paper/table7", "--attack", "fgsm", "--results", str(tmp_path)]) == 2
    assert "--attack: not with --grid" in capsys.readouterr().err
    assert main(["run", "--dataset", "textures", "--results", str(tmp_path)]) == 2
    assert "--method is required (or --grid NAME)" in capsys.readouterr().err
    assert main(["run", "--grid", "paper/table7", "--results", str(tmp_path)]) == 2
    assert "no cell of grid paper/table7 can run here" in capsys.readouterr().err
    assert not (tmp_path / "records").exists()


def test_roots_are_given_per_dataset_or_for_every_dataset(tmp_path):
    assert parse_roots(["/data/all"]) == {None: "/data/all"}
    assert parse_roots(["mvtec=/data/m", "visa=/data/v", "/data/rest"]) == {"mvtec": "/data/m", "visa": "/data/v",
                                                                           None: "/data/rest"}
    assert parse_roots(["/data/a=b"]) == {None: "/data/a=b"}  # not a dataset before '=': a plain folder
    with pytest.raises(ValueError, match="a second root for dataset mvtec"):
        parse_roots(["mvtec=/a", "mvtec=/b"])
    with pytest.raises(ValueError, match="expected DIR or DATASET=DIR"):
        parse_roots(["mvtec="])
