"""The built-in `textures` dataset: defects with exact masks, deterministic cached generation, MVTec layout."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from robustad.datasets import DatasetError, create_dataset, list_categories
from robustad.datasets import textures as textures_module
from robustad.datasets.surface_defects import DEFECT_KINDS, MIN_AREA, apply_defect
from robustad.datasets.textures import (
    TEXTURE_PHOTOS,
    TextureCounts,
    band_boxes,
    generate_textures,
    load_photo,
    random_crop,
    render_category,
)

SMALL = dict(n_train=4, n_test_good=2, n_defects_per_kind=1)
TWO = ("brick", "immunohistochemistry")  # one grey, one colour


@pytest.fixture(scope="module")
def photos():
    return {name: load_photo(name) for name in TEXTURE_PHOTOS}


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    return generate_textures(tmp_path_factory.mktemp("textures") / "tree", seed=0, categories=TWO, **SMALL)


def changed_pixels(image: np.ndarray, source: np.ndarray) -> np.ndarray:
    return (image != source).any(axis=2)


def test_photos_load_offline_with_at_least_one_colour(photos):
    assert len(photos) >= 4
    channels = {name: photo.shape[2] for name, photo in photos.items()}
    assert 3 in channels.values() and 1 in channels.values()
    for name, photo in photos.items():
        assert photo.dtype == np.uint8 and min(photo.shape[:2]) >= 384, name


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("surface", ["brick", "immunohistochemistry", "hubble_deep_field", "black", "white"])
def test_defect_mask_is_exactly_the_changed_pixels(kind, surface, photos):
    rng = np.random.default_rng(DEFECT_KINDS.index(kind))
    if surface == "black":
        source = np.zeros((128, 128, 3), np.uint8)
    elif surface == "white":
        source = np.full((128, 128, 1), 255, np.uint8)
    else:
        source = random_crop(rng, photos[surface], band_boxes(photos[surface].shape[1])[1], 128)
    for _ in range(3):
        image, mask = apply_defect(kind, source, rng, donor=photos["gravel"])
        assert image.shape == source.shape and image.dtype == np.uint8 and mask.dtype == bool
        np.testing.assert_array_equal(mask, changed_pixels(image, source))
        assert mask.sum() >= MIN_AREA


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_defects_are_moderate_not_gross(kind, photos):
    """Mean change inside the mask: visible (> 2%) but far from painting the region black (< 40%)."""
    rng = np.random.default_rng(7)
    changes = []
    for name in ("brick", "grass", "gravel", "immunohistochemistry"):
        for _ in range(4):
            source = random_crop(rng, photos[name], (0, 512), 128)
            image, mask = apply_defect(kind, source, rng, donor=photos["hubble_deep_field"])
            changes.append(np.abs(image.astype(float) - source)[mask].mean() / 255)
    assert 0.02 < np.mean(changes) < 0.4, changes
    assert max(changes) < 0.6


@pytest.mark.parametrize("kind", ["stain", "foreign"])
def test_a_blob_whose_centre_the_edge_noise_ate_is_still_a_moderate_defect(kind, photos, monkeypatch):
    """Edge noise can leave no pixel covered by more than half (about 1 stain in 1300 drew NaN colours)."""
    from robustad.datasets import surface_defects

    yy, xx = np.mgrid[:128, :128]
    ring = np.clip(0.45 - np.abs(np.hypot(yy - 64, xx - 64) - 12) / 20, 0, 1)  # coverage peaks at 0.45
    monkeypatch.setattr(surface_defects, "blob_coverage", lambda *args, **kwargs: ring)
    source = random_crop(np.random.default_rng(0), photos["brick"], (0, 512), 128)
    image, mask = apply_defect(kind, source, np.random.default_rng(1), donor=photos["grass"])
    np.testing.assert_array_equal(mask, ring >= 0.2)
    np.testing.assert_array_equal(mask, changed_pixels(image, source))
    assert np.abs(image.astype(float) - source)[mask].mean() / 255 < 0.4  # not painted black by NaN


def test_unknown_defect_and_bad_image_are_clear_errors():
    with pytest.raises(ValueError, match="scratch"):
        apply_defect("dent", np.zeros((64, 64, 3), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        apply_defect("hole", np.zeros((64, 64, 3)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="donor"):
        apply_defect("foreign", np.zeros((64, 64, 3), np.uint8), np.random.default_rng(0))


def test_crops_stay_inside_their_band_and_bands_are_disjoint():
    columns = np.broadcast_to(np.arange(1000, dtype=np.int32)[None, :, None], (600, 1000, 1))
    train_bands, test_band = band_boxes(1000)
    used = np.zeros(1000, int)
    for start, stop in [*train_bands, test_band]:
        used[start:stop] += 1
    assert used.max() == 1
    rng = np.random.default_rng(0)
    for band in [*train_bands, test_band]:
        for _ in range(50):
            crop = random_crop(rng, columns, band, 128)
            assert crop.shape == (128, 128, 1)
            assert band[0] <= crop.min() and crop.max() < band[1]


def test_rendered_anomalies_match_their_source_crop(photos):
    counts = TextureCounts(**SMALL)
    for category in TEXTURE_PHOTOS:
        items = list(render_category(category, 0, counts, photos))
        normal = [i for i in items if i.mask is None]
        defective = [i for i in items if i.mask is not None]
        assert len(normal) == counts.n_train + counts.n_test_good
        assert len(defective) == counts.n_defects_per_kind * len(DEFECT_KINDS)
        for item in defective:
            np.testing.assert_array_equal(item.mask, changed_pixels(item.image, item.source))
            assert item.mask.any()


def test_train_and_test_images_are_distinct(small_tree):
    for category in TWO:
        train = [np.asarray(Image.open(p)) for p in sorted((small_tree / category / "train/good").glob("*.png"))]
        test = [np.asarray(Image.open(p)) for p in sorted((small_tree / category / "test").rglob("*.png"))]
        assert len(train) == SMALL["n_train"] and len(test) == SMALL["n_test_good"] + len(DEFECT_KINDS)
        assert len({a.tobytes() for a in train + test}) == len(train) + len(test)


def test_generation_is_deterministic_and_seeded(small_tree, tmp_path):
    again = generate_textures(tmp_path / "again", seed=0, categories=TWO, **SMALL)
    other = generate_textures(tmp_path / "other", seed=1, categories=TWO, **SMALL)
    files = json.loads((small_tree / "manifest.json").read_text())["files"]
    assert files == json.loads((again / "manifest.json").read_text())["files"]
    other_files = json.loads((other / "manifest.json").read_text())["files"]
    assert other_files.keys() == files.keys() and other_files != files
    for name, digest in files.items():
        assert (small_tree / name).read_bytes() == (again / name).read_bytes()
        assert textures_module.sha256(small_tree / name) == digest
    masks = [n for n in files if "/ground_truth/" in n]
    assert len(masks) == len(TWO) * len(DEFECT_KINDS)


def test_tree_reads_through_the_mvtec_loader(small_tree):
    assert list_categories("mvtec", small_tree) == sorted(TWO)
    for name in ("mvtec", "textures"):  # `textures` opens a complete tree of any counts as it is
        test = create_dataset(name, root=small_tree, category="immunohistochemistry", split="test", image_size=64)
        items = [test[i] for i in range(len(test))]
        assert sum(i["label"] for i in items) == len(DEFECT_KINDS)
        for item in items:
            assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
            assert (item["mask"].sum() > 0) == (item["label"] == 1)
        assert not np.allclose(items[0]["image"][0], items[0]["image"][2])  # colour survives
    brick = create_dataset("mvtec", root=small_tree, category="brick", split="train", image_size=32)[0]["image"]
    assert np.allclose(brick[0], brick[1])  # grey stays grey


def test_a_second_call_reuses_the_tree(small_tree, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in small_tree.rglob("*")}
    monkeypatch.setattr(textures_module, "render_category", lambda *a, **k: pytest.fail("regenerated"))
    assert generate_textures(small_tree, seed=0, categories=TWO, **SMALL) == small_tree
    assert {p: p.stat().st_mtime_ns for p in small_tree.rglob("*")} == before
    with pytest.raises(DatasetError, match="different settings"):
        generate_textures(small_tree, seed=0, categories=TWO, n_train=5, n_test_good=2, n_defects_per_kind=1)


def test_a_crash_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    real = textures_module.write_png
    written = []

    def crash_after_a_few(path, array):
        if len(written) == 5:
            raise RuntimeError("simulated crash")
        written.append(path)
        real(path, array)

    monkeypatch.setattr(textures_module, "write_png", crash_after_a_few)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_textures(root, categories=("brick",), **SMALL)
    assert not root.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(textures_module, "write_png", real)
    assert (generate_textures(root, categories=("brick",), **SMALL) / "manifest.json").is_file()


def test_another_process_finishing_first_is_not_an_error(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    real = textures_module.write_png
    state = {"raced": False}

    def other_process_wins(path, array):
        if not state["raced"]:
            state["raced"] = True
            monkeypatch.setattr(textures_module, "write_png", real)
            generate_textures(root, categories=("brick",), **SMALL)  # completes while we are still writing
            monkeypatch.setattr(textures_module, "write_png", other_process_wins)
        real(path, array)

    monkeypatch.setattr(textures_module, "write_png", other_process_wins)
    assert generate_textures(root, categories=("brick",), **SMALL) == root.resolve()
    assert state["raced"] and textures_module.read_manifest(root) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["tree"]  # our staging folder was removed


def test_a_half_written_folder_is_never_used(tmp_path):
    half = tmp_path / "half"
    (half / "brick/train/good").mkdir(parents=True)
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(half / "brick/train/good/000.png")
    with pytest.raises(DatasetError, match="no complete textures tree"):
        generate_textures(half, categories=("brick",), **SMALL)
    with pytest.raises(DatasetError, match="no complete textures tree"):
        create_dataset("textures", root=half, category="brick", split="train", image_size=32)
    # a mistyped --root is refused, never filled with a new tree
    with pytest.raises(DatasetError, match="no complete textures tree at .*bench data download textures"):
        create_dataset("textures", root=tmp_path / "typo", category="brick", split="train", image_size=32)
    assert not (tmp_path / "typo").exists()
    # A manifest naming a file that is gone is incomplete too.
    (half / "manifest.json").write_text(json.dumps({"files": {"brick/train/good/001.png": "0"}}))
    with pytest.raises(DatasetError, match="no complete textures tree"):
        generate_textures(half, categories=("brick",), **SMALL)


def test_an_empty_root_folder_is_filled(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    assert generate_textures(root, categories=("grass",), **SMALL) == root.resolve()
    assert len(list((root / "grass/train/good").glob("*.png"))) == SMALL["n_train"]


def test_bad_counts_and_categories_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="n_train"):
        generate_textures(tmp_path / "x", n_train=0)
    with pytest.raises(ValueError, match="crop_size"):
        generate_textures(tmp_path / "x", crop_size=16)
    with pytest.raises(DatasetError, match="brick"):
        generate_textures(tmp_path / "x", categories=("marble",))


def test_create_dataset_just_works_on_a_fresh_machine(tmp_path, monkeypatch):
    """Default counts into the default cache (about 4 s on a 2-core CPU), then reused."""
    monkeypatch.setenv("ROBUSTAD_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / ".textures-v1-seed0.partial-crashed").mkdir()  # a dead run's leftovers are ignored
    test = create_dataset("textures", category="brick", split="test", image_size=64)
    counts = TextureCounts()
    assert len(test) == counts.n_test_good + counts.n_defects_per_kind * len(DEFECT_KINDS)
    assert test[len(test) - 1]["image"].shape == (3, 64, 64)
    root = tmp_path / "cache" / "textures-v1-seed0"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["categories"] == list(TEXTURE_PHOTOS)
    assert sorted(list_categories("textures")) == sorted(TEXTURE_PHOTOS)
    train = create_dataset("textures", category="hubble_deep_field", split="train", image_size=None)
    assert len(train) == counts.n_train and train[0]["image"].shape == (3, 128, 128)
