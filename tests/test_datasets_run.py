"""A `bench run` cell (runner API) on the awkward real layouts: VisA as released (JPG + split CSV
+ class-id masks), BraTS2021 NIfTI volumes, and Head-CT, whose missing masks must give pixel
metrics recorded as not available (None), never as a number."""
from __future__ import annotations

import pytest

from robustad.bench.runner import CellSpec, run_cell
from tests import dataset_trees as trees

TINY = "tests.tiny_detector:TinyDetector"

CELLS = {
    "visa": (lambda root: trees.write_visa_released(root, n_train=8, n_test_normal=3, n_bad=3), "candle"),
    "brats2021": (trees.write_brats_nifti, "brain"),
    "headct": (trees.write_headct, "head_ct"),
}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_run_cell_reads_the_dataset_as_it_comes(name, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTAD_CACHE_DIR", str(tmp_path / "cache"))
    writer, category = CELLS[name]
    writer(tmp_path / "data")
    record = run_cell(CellSpec(method=TINY, dataset=name, category=category, root=str(tmp_path / "data"), steps=2,
                               config=(("steps", 15),)),
                      results=tmp_path / "results", log=lambda message: None)
    assert record["error"] is None and record["dataset"] == name and record["category"] == category
    assert record["n_test_anomalous"] > 0 and record["n_test_normal"] > 0
    for block in ("clean", "adversarial"):
        assert 0 <= record[block]["image_auroc"] <= 100
        if name == "headct":
            assert record[block]["pixel_auroc"] is None and record[block]["pixel_aupro"] is None
        else:
            assert 0 <= record[block]["pixel_auroc"] <= 100
