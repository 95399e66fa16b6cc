"""A detector that declares `localizes = False` (one score per image): null pixel metrics, the localization
objective refused before training, "not applicable" in grids, "–" in tables. A plug-in declares it too."""
from __future__ import annotations

import json

import pytest

from robustad.bench.cli import main

DETECTION_ONLY = '''
import torch
from robustad.methods import Detector


class ImageScorer(Detector):
    """Scores whole images: M(x) is one cell per image."""

    image_size = 32
    localizes = False

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(4, 1, 1))

    def fit(self, train_set):
        pass

    def forward(self, images):
        return self.net(images)[:, 0]  # (B, 1, 1)
'''

GRID = '''
title = "a detection-only plug-in under both objectives"
profile = "quick"
seeds = [0]

[table]
rows = ["dataset"]
columns = "method"
tasks = ["ad"]

[[runs]]
methods = ["scorer:ImageScorer"]
datasets = ["mvtec"]
categories = ["alpha"]
attacks = ["pgd"]
objectives = ["detection", "localization"]
norm = "linf"
eps = ["8/255"]
steps = 2
'''


@pytest.fixture
def plugin(user_module):
    return user_module("scorer", DETECTION_ONLY)


def run(root, results, objective):
    return main(["run", "--method", "scorer:ImageScorer", "--dataset", "mvtec", "--root", str(root), "--category",
                 "alpha", "--attack", "pgd", "--steps", "2", "--objective", objective, "--results", str(results)])


def test_a_detection_only_plugin_has_null_pixel_metrics_and_dashes_in_tables(plugin, mvtec_root, capsys):
    results = plugin / "results"
    assert run(mvtec_root, results, "detection") == 0
    (path,) = (results / "records").glob("*.json")
    record = json.loads(path.read_text())
    assert record["clean"]["image_auroc"] is not None and record["adversarial"]["image_auroc"] is not None
    assert all(record[phase][key] is None for phase in ("clean", "adversarial")
               for key in ("pixel_auroc", "pixel_aupro"))
    out = capsys.readouterr().out
    assert "pixel AUROC" in out and "–" in out
    assert main(["table", "--results", str(results), "--layout", "categories", "--format", "markdown"]) == 0
    assert "–" in capsys.readouterr().out


def test_the_localization_objective_is_refused_before_anything_runs(plugin, mvtec_root, capsys):
    results = plugin / "refused"
    assert run(mvtec_root, results, "localization") == 2
    err = capsys.readouterr().err
    assert "scorer:ImageScorer" in err and "detection-only" in err
    assert not results.exists()


def test_a_grid_reports_its_localization_cells_as_not_applicable(plugin, mvtec_root, capsys):
    (plugin / "grid.toml").write_text(GRID)
    assert main(["grid", "show", str(plugin / "grid.toml"), "--root", f"mvtec={mvtec_root}"]) == 0
    out = capsys.readouterr().out
    assert "not applicable: method 'scorer:ImageScorer' is detection-only (no localization map): 1 cell" in out
    assert "not runnable here: none" in out and "2 cells" in out
