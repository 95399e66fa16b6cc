"""Every benchmark dataset loader, on a tiny tree in that dataset's real layout, read through
`dataset_info` (what `bench data info` prints) and through `create_dataset` (what `bench run` uses)."""
from __future__ import annotations

import pytest
import torch

from robustad.datasets import DATASETS, create_dataset, list_categories, open_format
from robustad.datasets.info import dataset_info, format_dataset_info
from tests import dataset_trees as trees


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTAD_CACHE", str(tmp_path / "cache"))


def mvtec_layout(categories, **kw):
    return lambda root: trees.write_mvtec_like(root, categories, **kw)


# name -> (tree writer, {category: (train, test normal, test anomalous)}, foreground masks in train)
CASES = {
    "mvtec": (mvtec_layout(["bottle", "carpet"], foreground=True), {"bottle": (4, 2, 2), "carpet": (4, 2, 2)}, 8),
    "mpdd": (mvtec_layout(["bracket_black", "tubes"]), {"bracket_black": (4, 2, 2), "tubes": (4, 2, 2)}, 0),
    "wfdd": (mvtec_layout(["grey_cloth", "pink_flower"]), {"grey_cloth": (4, 2, 2), "pink_flower": (4, 2, 2)}, 0),
    "dtd-synthetic": (mvtec_layout(["Blotchy_099", "Woven_127"]), {"Blotchy_099": (4, 2, 2), "Woven_127": (4, 2, 2)}, 0),
    "folder": (mvtec_layout(["mine"], image_ext=".JPG", mask_suffix=""), {"mine": (4, 2, 2)}, 0),
    "btad": (trees.write_btad, {"01": (4, 2, 2), "02": (4, 2, 2), "03": (4, 2, 2)}, 4),
    "visa": (trees.write_visa_released, {"candle": (4, 2, 2), "pcb1": (4, 2, 2)}, 8),
    "brats2021": (trees.write_brats_nifti, {"brain": (7 + 7 + 5 + 5, 5, 2)}, 0),  # test case: BraTS2021_00002
    "headct": (trees.write_headct, {"head_ct": (6, 2, 8)}, 0),
}


def test_every_registered_benchmark_dataset_is_covered():
    assert set(DATASETS.names()) - {"textures"} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_info_counts_match_the_tree(name, tmp_path):
    writer, expected, foreground = CASES[name]
    writer(tmp_path)
    info = dataset_info(name, tmp_path)
    assert sorted(info["categories"]) == sorted(expected)
    for category, (train, normal, anomalous) in expected.items():
        cat = info["categories"][category]
        assert cat["problems"] == []
        assert (cat["train"], cat["test_normal"], cat["test_anomalous"]) == (train, normal, anomalous)
        assert cat["masks"] == (anomalous if info["has_masks"] else 0)
        assert sum(cat["image_sizes"].values()) == train + normal + anomalous
    assert sum(c["foreground_masks"] for c in info["categories"].values()) == foreground
    text = format_dataset_info(info)
    assert "0 problems found" in text and all(c in text for c in expected)


@pytest.mark.parametrize("name", sorted(CASES))
def test_create_dataset_serves_the_shared_item_format(name, tmp_path):
    writer, expected, _ = CASES[name]
    writer(tmp_path)
    assert list_categories(name, tmp_path) == sorted(expected)
    category = sorted(expected)[0]
    train = create_dataset(name, root=tmp_path, category=category, split="train", image_size=16)
    test = create_dataset(name, root=tmp_path, category=category, split="test", image_size=16)
    assert set(train.labels) == {0}
    assert sorted(test.labels) == [0] * expected[category][1] + [1] * expected[category][2]
    for item in [train[0]] + [test[i] for i in range(len(test))]:
        assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
        assert 0 <= item["image"].min() and item["image"].max() <= 1 and item["image"].max() > 0.2
        assert item["mask"].shape == (1, 16, 16)
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        if item["label"] == 0 or not test.has_masks:
            assert item["mask"].sum() == 0
        else:
            assert item["mask"].sum() > 0, item["path"]
    again = create_dataset(name, root=tmp_path, category=category, split="test", image_size=16)
    assert again.samples == test.samples  # deterministic order


def test_visa_masks_with_class_ids_and_255_are_binarized(tmp_path):
    trees.write_visa_released(tmp_path)
    for category in ("candle", "pcb1"):  # candle: class ids 1 and 2; pcb1: 0/255
        test = create_dataset("visa", root=tmp_path, category=category, split="test", image_size=None)
        masks = [test[i]["mask"] for i in range(len(test)) if test[i]["label"] == 1]
        assert len(masks) == 2 and all(m.max() == 1 and set(m.unique().tolist()) == {0.0, 1.0} for m in masks)


def test_visa_train_split_follows_the_split_csv(tmp_path):
    trees.write_visa_released(tmp_path)
    train = create_dataset("visa", root=tmp_path, category="candle", split="train", image_size=None)
    assert [p.split("/")[-1] for p in (s.image for s in train.samples)] == ["0000.JPG", "0001.JPG", "0002.JPG", "0003.JPG"]


def test_visa_converted_layout(tmp_path):
    trees.write_visa_converted(tmp_path)
    info = dataset_info("visa", tmp_path)
    assert list(info["categories"]) == ["candle"]
    assert (info["categories"]["candle"]["test_anomalous"], info["categories"]["candle"]["problems"]) == (2, [])
    assert "pcb1" in info["missing_categories"]


def test_btad_reads_the_unpacked_archive_folder_and_mixed_formats(tmp_path):
    trees.write_btad(tmp_path)
    fmt = open_format("btad", tmp_path)
    assert fmt.root.name == "BTech_Dataset_transformed"
    suffixes = {c: {(s.image[-4:], s.mask[-4:]) for s in fmt.samples(c, "test") if s.label} for c in ("01", "02", "03")}
    assert suffixes == {"01": {(".bmp", ".png")}, "02": {(".png", ".png")}, "03": {(".bmp", ".bmp")}}


def test_folder_reads_a_single_category_tree(tmp_path):
    trees.write_mvtec_like(tmp_path / "parts", ["widget"])
    assert list_categories("folder", tmp_path / "parts" / "widget") == ["widget"]
    test = create_dataset("folder", root=tmp_path / "parts" / "widget", category="widget", split="test", image_size=8)
    assert sorted(test.labels) == [0, 0, 1, 1]


def test_foreground_masks_of_the_official_code_are_exposed(tmp_path):
    trees.write_mvtec_like(tmp_path / "mvtec", ["bottle"], foreground=True)
    train = create_dataset("mvtec", root=tmp_path / "mvtec", category="bottle", split="train", image_size=16)
    assert train.format.foreground_mask(train.samples[0]).parent.name == "foreground_mask"
    assert train.foreground_mask(0).shape == (1, 16, 16) and train.foreground_mask(0).min() == 1
    test = create_dataset("mvtec", root=tmp_path / "mvtec", category="bottle", split="test", image_size=16)
    assert test.foreground_mask(0) is None
    trees.write_visa_released(tmp_path / "visa")
    visa = create_dataset("visa", root=tmp_path / "visa", category="candle", split="train", image_size=16)
    assert all(visa.format.foreground_mask(s) is not None for s in visa.samples)
    assert open_format("wfdd", tmp_path / "mvtec").whole_image_foreground
    assert not open_format("mvtec", tmp_path / "mvtec").whole_image_foreground
