"""Small generated data for the test suite: textures with defects, written in MVTec AD layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour texture (H, W, 3) uint8."""
    base = rng.normal(0.0, 1.0, (size // 4 + 1, size // 4 + 1, 3))
    up = np.kron(base, np.ones((4, 4, 1)))[:size, :size]
    stripes = 0.5 + 0.2 * np.sin(np.arange(size) / 2.0)[None, :, None]
    image = np.clip(0.5 + 0.1 * up + (stripes - 0.5), 0, 1)
    return (image * 255).astype(np.uint8)


def defect(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A darkened/brightened blob with its exact mask."""
    size = image.shape[0]
    mask = np.zeros((size, size), np.uint8)
    h, w = rng.integers(size // 6, size // 3, 2)
    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
    mask[y:y + h, x:x + w] = 255
    out = image.astype(np.float32)
    factor = 0.6 if rng.random() < 0.5 else 1.45
    out[mask > 0] = np.clip(out[mask > 0] * factor, 0, 255)
    return out.astype(np.uint8), mask


def write_mvtec_tree(root: Path, categories=("alpha", "beta"), n_train=12, n_good=6, n_bad=6, size=32, seed=0) -> Path:
    """Writes <root>/<category>/{train/good,test/good,test/blob,ground_truth/blob} PNGs."""
    rng = np.random.default_rng(seed)
    for category in categories:
        base = Path(root) / category
        for folder in ("train/good", "test/good", "test/blob", "ground_truth/blob"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n_train):
            Image.fromarray(texture(rng, size)).save(base / "train/good" / f"{i:03d}.png")
        for i in range(n_good):
            Image.fromarray(texture(rng, size)).save(base / "test/good" / f"{i:03d}.png")
        for i in range(n_bad):
            image, mask = defect(rng, texture(rng, size))
            Image.fromarray(image).save(base / "test/blob" / f"{i:03d}.png")
            Image.fromarray(mask).save(base / "ground_truth/blob" / f"{i:03d}_mask.png")
    return Path(root)
