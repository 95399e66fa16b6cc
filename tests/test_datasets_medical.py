"""BraTS2021 (NIfTI volumes and exported slices) and Head-CT (labels.csv, no masks)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robustad.datasets import DatasetError, create_dataset, open_format
from robustad.datasets.brats2021 import MIN_BRAIN_FRACTION, parse_address
from robustad.datasets.info import dataset_info
from tests import dataset_trees as trees


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTAD_CACHE", str(tmp_path / "cache"))


def case_of(sample) -> str:
    return Path(parse_address(sample.image)[0]).parent.name


def test_brats_splits_by_patient_and_trains_on_normal_slices_only(tmp_path):
    tumours = trees.write_brats_nifti(tmp_path / "brats", n_cases=5)
    train = create_dataset("brats2021", root=tmp_path / "brats", category="brain", split="train", image_size=None)
    test = create_dataset("brats2021", root=tmp_path / "brats", category="brain", split="test", image_size=None)
    train_cases, test_cases = {case_of(s) for s in train.samples}, {case_of(s) for s in test.samples}
    assert train_cases and test_cases and not train_cases & test_cases
    assert train_cases | test_cases == set(tumours)
    assert set(train.labels) == {0}
    for sample in train.samples:
        assert parse_address(sample.image)[1] not in tumours[case_of(sample)]
    # slices 0, 1 and 9 hold no brain tissue and are never selected
    assert {parse_address(s.image)[1] for s in train.samples + test.samples} == set(range(2, 9))
    anomalous = [s for s in test.samples if s.label]
    assert {parse_address(s.image)[1] for s in anomalous} == tumours[case_of(anomalous[0])] == {4, 5}


def test_brats_slices_match_their_segmentation_and_are_scaled(tmp_path):
    import nibabel

    trees.write_brats_nifti(tmp_path, n_cases=5)
    test = create_dataset("brats2021", root=tmp_path, category="brain", split="test", image_size=None)
    index = next(i for i, s in enumerate(test.samples) if s.label)
    item = test[index]
    path, z = parse_address(test.samples[index].mask)
    seg = np.asanyarray(nibabel.load(path).dataobj)[:, :, z] > 0
    assert torch.equal(item["mask"][0], torch.from_numpy(np.rot90(seg).astype(np.float32)))
    image = item["image"]
    assert image.shape == (3, 32, 32) and torch.equal(image[0], image[2])
    assert image.min() == 0 and image.max() == 1  # the tumour saturates the 99.5th-percentile scale
    assert image[0][item["mask"][0] == 0].max() < 1  # normal tissue stays below it
    normal = test[next(i for i, s in enumerate(test.samples) if not s.label)]
    assert normal["mask"].sum() == 0 and (normal["image"] > 0).float().mean() >= MIN_BRAIN_FRACTION
    resized = create_dataset("brats2021", root=tmp_path, category="brain", split="test", image_size=16)[index]
    assert resized["image"].shape == (3, 16, 16) and resized["mask"].sum() > 0


def test_brats_index_is_cached_and_refreshed_when_a_volume_changes(tmp_path):
    trees.write_brats_nifti(tmp_path / "brats", n_cases=3)
    first = open_format("brats2021", tmp_path / "brats").samples("brain", "test")
    cache_files = list((tmp_path / "cache" / "brats2021").glob("*.json"))
    assert len(cache_files) == 1
    assert open_format("brats2021", tmp_path / "brats").samples("brain", "test") == first
    import nibabel

    seg_file = Path(parse_address(next(s for s in first if s.label).mask)[0])
    time.sleep(0.01)
    nibabel.save(nibabel.Nifti1Image(np.zeros((32, 32, 10), np.uint8), np.eye(4)), seg_file)  # tumour removed
    again = open_format("brats2021", tmp_path / "brats").samples("brain", "test")
    assert [s.image for s in again] == [s.image for s in first] and not any(s.label for s in again)


def test_brats_missing_segmentation_and_unreadable_volume(tmp_path):
    trees.write_brats_nifti(tmp_path, n_cases=5)
    (tmp_path / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz").unlink()
    (tmp_path / "BraTS2021_00003" / "BraTS2021_00003_flair.nii.gz").write_bytes(b"garbage")
    problems = dataset_info("brats2021", tmp_path)["categories"]["brain"]["problems"]
    assert any("no segmentation for" in p and "BraTS2021_00001_flair" in p for p in problems)
    assert any("cannot read NIfTI volume" in p and "BraTS2021_00003_flair" in p for p in problems)
    with pytest.raises(DatasetError, match="no segmentation for"):
        create_dataset("brats2021", root=tmp_path, category="brain", split="train", image_size=None)


def test_brats_exported_slices_of_the_official_code(tmp_path):
    trees.write_brats_exported(tmp_path)
    test = create_dataset("brats2021", root=tmp_path, category="brain", split="test", image_size=16)
    assert sorted(test.labels) == [0, 0, 1, 1]
    assert all(Path(s.mask).name.startswith("BraTS2021_") and "_seg_" in s.mask for s in test.samples if s.label)
    train = create_dataset("brats2021", root=tmp_path, category="brain", split="train", image_size=16)
    assert train[0]["image"].shape == (3, 16, 16) and train.foreground_mask(0) is not None
    (tmp_path / "ground_truth" / "BraTS2021_00021_seg_70.png").unlink()
    with pytest.raises(DatasetError, match="no mask for anomalous image .*BraTS2021_00021_flair_70.png"):
        create_dataset("brats2021", root=tmp_path, category="brain", split="test", image_size=16)


def test_headct_split_is_fixed_and_has_no_masks(tmp_path):
    trees.write_headct(tmp_path, n_normal=8, n_hemorrhage=8)
    train = create_dataset("headct", root=tmp_path, category="head_ct", split="train", image_size=16)
    test = create_dataset("headct", root=tmp_path, category="head_ct", split="test", image_size=16)
    assert len(train) == 6 and set(train.labels) == {0}
    assert sorted(test.labels) == [0, 0] + [1] * 8
    assert not {s.image for s in train.samples} & {s.image for s in test.samples}
    assert test.has_masks is False and all(s.mask is None for s in test.samples)
    assert all(test[i]["mask"].sum() == 0 for i in range(len(test)))
    again = create_dataset("headct", root=tmp_path, category="head_ct", split="train", image_size=16)
    assert again.samples == train.samples


def test_headct_label_problems(tmp_path):
    trees.write_headct(tmp_path)
    (tmp_path / "head_ct" / "head_ct" / "003.png").unlink()
    with open(tmp_path / "labels.csv", "a") as handle:
        handle.write("99,7\n")
    problems = dataset_info("headct", tmp_path)["categories"]["head_ct"]["problems"]
    assert any("lists id 3" in p and "003.png" in p for p in problems)
    assert any("line 18" in p and "99,7" in p for p in problems)
    (tmp_path / "labels.csv").write_text("name,label\n0,1\n")
    with pytest.raises(DatasetError, match="expected the header 'id, hemorrhage'"):
        dataset_info("headct", tmp_path)


def test_headct_exported_layout(tmp_path):
    trees.write_mvtec_like(tmp_path, ["."], defect_name="hemorrhage")
    test = create_dataset("headct", root=tmp_path, category="head_ct", split="test", image_size=16)
    assert sorted(test.labels) == [0, 0, 1, 1] and all(s.mask is None for s in test.samples)


def test_brats_export_keeps_slices_split_and_masks(tmp_path):
    from robustad.datasets.brats2021 import export_slices

    trees.write_brats_nifti(tmp_path / "nifti", n_cases=5)
    export_slices(tmp_path / "nifti", tmp_path / "png")
    for split in ("train", "test"):
        volumes = create_dataset("brats2021", root=tmp_path / "nifti", category="brain", split=split, image_size=None)
        slices = create_dataset("brats2021", root=tmp_path / "png", category="brain", split=split, image_size=None)
        assert sorted(volumes.labels) == sorted(slices.labels)
        by_name = {Path(s.image).name: i for i, s in enumerate(slices.samples)}
        for i, sample in enumerate(volumes.samples):
            path, z = parse_address(sample.image)
            j = by_name[f"{Path(path).name.split('.nii')[0]}_{z}.png"]
            assert (volumes[i]["image"] - slices[j]["image"]).abs().max() <= 0.5 / 255 + 1e-6
            assert torch.equal(volumes[i]["mask"], slices[j]["mask"])
