"""A `bench run` cell (runner API) on the awkward real layouts: VisA as released (JPG + split CSV
+ class-id masks), BraTS2021 NIfTI volumes, and Head-CT, whose missing masks must give pixel
metrics recorded as not available (None), never as a number."""
from __future__ import annotations

import pytest

from robustad.bench.runner import CellSpec, run_cell
from tests import dataset_trees as trees

TINY = "tests.tiny_detector:TinyDetector"

def mvtec_layout(category, **kw):
    return lambda root: trees.write_mvtec_like(root, [category], n_train=8, n_good=3, n_bad=3, **kw), category


CELLS = {
    "visa": (lambda root: trees.write_visa_released(root, n_train=8, n_test_normal=3, n_bad=3), "candle"),
    "brats2021": (trees.write_brats_nifti, "brain"),
    "headct": (trees.write_headct, "head_ct"),
    "btad": (trees.write_btad, "01"),
}
SLOW_CELLS = {
    "mpdd": mvtec_layout("tubes"),
    "wfdd": mvtec_layout("grid_cloth"),
    "dtd-synthetic": mvtec_layout("Mesh_114"),
    "folder": mvtec_layout("anything", image_ext=".JPG", mask_suffix=""),
}
CELLS.update(SLOW_CELLS)


@pytest.mark.parametrize("name", [n if n not in SLOW_CELLS else pytest.param(n, marks=pytest.mark.slow) for n in CELLS])
def test_run_cell_reads_the_dataset_as_it_comes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTAD_CACHE", str(tmp_path / "cache"))
    writer, category = CELLS[name]
    writer(tmp_path / "data")
    record = run_cell(CellSpec(method=TINY, dataset=name, category=category, root=str(tmp_path / "data"), steps=2,
                               config=(("steps", 8),)),
                      results=tmp_path / "results", log=lambda message: None)
    assert record.error is None and record.dataset == name and record.category == category
    assert record.n_test_anomalous > 0 and record.n_test_normal > 0
    for block in ("clean", "adversarial"):
        assert 0 <= getattr(record, block).image_auroc <= 100
        if name == "headct":
            assert getattr(record, block).pixel_auroc is None and getattr(record, block).pixel_aupro is None
        else:
            assert 0 <= getattr(record, block).pixel_auroc <= 100
