"""PatchGuard uses the official code's precomputed `foreground_mask/` folders when present."""
import numpy as np
import torch
from PIL import Image

from robustad.datasets import create_dataset
from robustad.methods import create_method
from robustad.methods.patchguard import detector as patchguard_detector
from tests.synthetic import write_mvtec_tree


def add_foreground_masks(root, category="alpha", skip=None):
    folder = root / category / "train" / "foreground_mask"
    folder.mkdir()
    for i, image in enumerate(sorted((root / category / "train" / "good").glob("*.png"))):
        if i == skip:
            continue
        mask = np.zeros((32, 32), np.uint8)
        mask[4:12, 20:28] = 255
        Image.fromarray(mask).save(folder / image.name)


def test_precomputed_masks_are_read_and_used_by_fit(tmp_path, monkeypatch):
    root = write_mvtec_tree(tmp_path / "tree", categories=("alpha",), n_train=4)
    add_foreground_masks(root)
    train = create_dataset("mvtec", root=root, category="alpha", split="train", image_size=32)
    maps = patchguard_detector.precomputed_foreground(train, 32)
    assert maps.shape == (4, 32, 32)
    assert maps[:, 4:12, 20:28].eq(1).all() and maps.sum() == 4 * 64

    used = {}
    original = patchguard_detector.build_pseudo_anomaly_generator

    def spy(config):
        generator = original(config)
        generator.prepare = lambda images: used.setdefault("prepare", True)
        setter = generator.set_foreground_maps
        generator.set_foreground_maps = lambda m: (used.setdefault("maps", m), setter(m))
        return generator

    monkeypatch.setattr(patchguard_detector, "build_pseudo_anomaly_generator", spy)
    model = create_method("patchguard", image_size=32, patch_size=8, vit_embed_dim=32, vit_depth=1, vit_heads=2,
                          disc_heads=2, disc_mlp_dim=32, epochs=0)
    model.fit(train)
    assert "prepare" not in used and torch.equal(used["maps"], maps)


def test_incomplete_masks_fall_back_to_grad_cam(tmp_path):
    root = write_mvtec_tree(tmp_path / "tree", categories=("alpha",), n_train=4)
    add_foreground_masks(root, skip=2)
    train = create_dataset("mvtec", root=root, category="alpha", split="train", image_size=32)
    assert patchguard_detector.precomputed_foreground(train, 32) is None
