"""Broken trees give the documented errors, and `dataset_info` lists every problem; image and
mask decoding edge cases (16-bit, grayscale, alpha, JPEG masks, palette class ids)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from robustad.datasets import DatasetError, create_dataset
from robustad.datasets.image_io import load_image, load_mask
from robustad.datasets.info import dataset_info, format_dataset_info
from tests import dataset_trees as trees


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTAD_CACHE", str(tmp_path / "cache"))


def test_missing_mask_is_an_error_naming_the_image(tmp_path):
    trees.write_mvtec_like(tmp_path, ["grid_cloth"])
    (tmp_path / "grid_cloth" / "ground_truth" / "bad" / "001_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"no mask for anomalous image .*test/bad/001\.png: expected .*001_mask\.png"):
        create_dataset("wfdd", root=tmp_path, category="grid_cloth", split="test", image_size=16)
    cat = dataset_info("wfdd", tmp_path)["categories"]["grid_cloth"]
    assert (cat["test_anomalous"], cat["masks"]) == (1, 1)
    assert len(cat["problems"]) == 1 and "001.png" in cat["problems"][0]


def test_every_missing_mask_is_listed(tmp_path):
    trees.write_btad(tmp_path)
    for path in (tmp_path / "BTech_Dataset_transformed" / "03" / "ground_truth" / "ko").iterdir():
        path.unlink()
    info = dataset_info("btad", tmp_path)
    assert [len(info["categories"][c]["problems"]) for c in ("01", "02", "03")] == [0, 0, 3]  # two masks, no anomalous image left
    assert "1 more problem:" in str(pytest.raises(DatasetError, create_dataset, "btad", root=tmp_path, category="03",
                                                  split="test", image_size=None).value)


def test_visa_missing_mask_and_missing_image_listed_in_split_csv(tmp_path):
    trees.write_visa_released(tmp_path)
    (tmp_path / "pcb1" / "Data" / "Masks" / "Anomaly" / "000.png").unlink()
    (tmp_path / "pcb1" / "Data" / "Images" / "Normal" / "0001.JPG").unlink()
    problems = dataset_info("visa", tmp_path)["categories"]["pcb1"]["problems"]
    assert any("no mask for anomalous image" in p and "Anomaly/000.JPG" in p for p in problems)
    assert any("listed in" in p and "0001.JPG" in p for p in problems)


def test_unreadable_image_is_reported_and_raises_on_load(tmp_path):
    trees.write_mvtec_like(tmp_path, ["bottle"])
    broken = tmp_path / "bottle" / "test" / "good" / "001.png"
    broken.write_bytes(b"not a png at all")
    problems = dataset_info("mvtec", tmp_path)["categories"]["bottle"]["problems"]
    assert problems and "cannot read image" in problems[0] and "001.png" in problems[0]
    test = create_dataset("mvtec", root=tmp_path, category="bottle", split="test", image_size=16)
    index = [s.image for s in test.samples].index(str(broken))
    with pytest.raises(DatasetError, match="cannot read image .*001.png"):
        test[index]


def test_mask_of_another_size_is_reported(tmp_path):
    trees.write_mvtec_like(tmp_path, ["bottle"])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "bottle" / "ground_truth" / "bad" / "000_mask.png")
    problems = dataset_info("mvtec", tmp_path)["categories"]["bottle"]["problems"]
    assert problems == [f"mask {tmp_path / 'bottle/ground_truth/bad/000_mask.png'} is 8x8 px but its image "
                        f"{tmp_path / 'bottle/test/bad/000.png'} is 32x32 px"]


def test_empty_category(tmp_path):
    trees.write_mvtec_like(tmp_path, ["bottle"], n_train=0)
    with pytest.raises(DatasetError, match="bottle/train/good does not exist"):
        create_dataset("mvtec", root=tmp_path, category="bottle", split="train", image_size=16)
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="category 'bottle' has no train images"):
        create_dataset("mvtec", root=tmp_path, category="bottle", split="train", image_size=16)
    assert any("no training images" in p for p in dataset_info("mvtec", tmp_path)["categories"]["bottle"]["problems"])


@pytest.mark.parametrize("name", ["mvtec", "visa", "btad", "brats2021", "headct", "folder"])
def test_wrong_root(name, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        dataset_info(name, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    if name in ("visa", "brats2021", "headct"):  # layouts recognized by their own files
        with pytest.raises(DatasetError, match="found n"):
            dataset_info(name, tmp_path / "empty")
    else:
        info = dataset_info(name, tmp_path / "empty")
        assert info["categories"] == {} and "no categories found" in info["problems"][0]


def test_unknown_category_lists_the_valid_ones(tmp_path):
    trees.write_mvtec_like(tmp_path, ["bracket_black", "tubes"])
    with pytest.raises(DatasetError, match="category 'bracket_white' not found .*bracket_black, tubes"):
        create_dataset("mpdd", root=tmp_path, category="bracket_white", split="test", image_size=16)
    assert "bracket_white" in dataset_info("mpdd", tmp_path)["missing_categories"]


def test_info_is_json_serializable_with_the_documented_keys(tmp_path):
    trees.write_headct(tmp_path)
    info = json.loads(json.dumps(dataset_info("headct", tmp_path)))
    assert set(info["categories"]["head_ct"]) >= {"train", "test_normal", "test_anomalous", "masks", "problems", "image_sizes"}
    assert info["has_masks"] is False and info["categories"]["head_ct"]["image_sizes"] == {"32x32": 6, "36x36": 5, "40x40": 5}
    text = format_dataset_info(info)
    assert "–" in text and "pixel metrics are not available" in text


def test_sixteen_bit_grayscale_is_scaled_by_its_bit_depth(tmp_path):
    twelve_bit = np.array([[0, 4095], [2048, 1024]], np.uint16)
    Image.fromarray(twelve_bit).save(tmp_path / "ct12.png")
    image = load_image(tmp_path / "ct12.png", None)
    assert image.shape == (3, 2, 2) and image[:, 0, 1].tolist() == [1.0, 1.0, 1.0]
    assert image[0, 1, 0].item() == pytest.approx(2048 / 4095)
    sixteen_bit = np.array([[0, 65535], [32768, 100]], np.uint16)
    Image.fromarray(sixteen_bit).save(tmp_path / "mr16.png")
    assert load_image(tmp_path / "mr16.png", None)[0, 1, 0].item() == pytest.approx(32768 / 65535)
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "gray8.png")
    assert load_image(tmp_path / "gray8.png", None)[:, 0, 1].tolist() == [1.0, 1.0, 1.0]


def test_masks_ignore_alpha_and_jpeg_noise_and_keep_class_ids(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, :3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert load_mask(tmp_path / "alpha.png", None).sum() == 1
    noisy = np.full((16, 16), 3, np.uint8)
    noisy[:8] = 250
    Image.fromarray(noisy).save(tmp_path / "mask.jpg", quality=70)
    assert load_mask(tmp_path / "mask.jpg", None).sum() == 128
    palette = Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    palette.save(tmp_path / "classes.png")
    assert load_mask(tmp_path / "classes.png", None)[0].tolist() == [[0.0, 1.0], [1.0, 0.0]]
