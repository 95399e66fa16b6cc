"""A handful of example maps per grid cell, so that `bench figure maps` (the paper's Figure 1) needs
no model and no attack: the runner keeps the first few anomalous and normal test images it meets
(2 and 2 by default), with their clean and adversarial images and anomaly maps, and writes them to
`<results>/examples/<cell_id>.npz` next to the record, which names the file (`Record.examples`).

The file is small: images and masks as uint8 (H, W, 3) / (H, W), maps as float16 (float32 when a
map's values do not fit in float16), compressed; written atomically (`core/files.py`).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from robustad.core.files import write_bytes_atomic

EXAMPLES_FOLDER = "examples"
ARRAYS = ("images", "adversarial_images", "masks", "clean_maps", "adversarial_maps", "labels", "indices")
FLOAT16_MAX = float(np.finfo(np.float16).max)


def examples_relative_path(cell_id: str) -> str:
    """Where a cell's examples live, relative to the results folder (what the record stores)."""
    return f"{EXAMPLES_FOLDER}/{cell_id}.npz"


def _uint8_images(images) -> np.ndarray:
    """(B, 3, H, W) floats in [0, 1] -> (B, H, W, 3) uint8."""
    array = images.detach().float().cpu().clamp(0, 1).numpy()
    return np.round(array.transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def _compact_maps(maps: np.ndarray) -> np.ndarray:
    finite = maps[np.isfinite(maps)]
    fits = finite.size == 0 or np.abs(finite).max() < FLOAT16_MAX
    return maps.astype(np.float16 if fits else np.float32)


class ExampleCollector:
    """Keeps the first `anomalous` anomalous and `normal` normal images of the test set, in loader
    order, during the runner's clean pass, and their adversarial versions during the attack pass."""

    def __init__(self, anomalous: int = 2, normal: int = 2):
        self.wanted = {1: anomalous, 0: normal}
        self.positions: list[int] = []  # positions in the evaluated test subset
        self.clean: dict[int, dict] = {}
        self.adversarial: dict[int, dict] = {}

    def add_clean(self, start: int, images, masks, labels, maps) -> None:
        """A clean batch whose first image is at position `start`; maps (B, H, W)."""
        for offset, label in enumerate(labels.tolist()):
            label = int(label)
            if self.wanted.get(label, 0) <= sum(1 for p in self.positions if self.clean[p]["label"] == label):
                continue
            position = start + offset
            self.positions.append(position)
            self.clean[position] = {
                "image": _uint8_images(images[offset:offset + 1])[0],
                "mask": (masks[offset, 0] > 0.5).cpu().numpy().astype(np.uint8),
                "map": maps[offset].detach().float().cpu().numpy(),
                "label": label,
            }

    def add_adversarial(self, start: int, images, maps) -> None:
        for position in self.positions:
            if start <= position < start + len(images):
                offset = position - start
                self.adversarial[position] = {"image": _uint8_images(images[offset:offset + 1])[0],
                                              "map": maps[offset].detach().float().cpu().numpy()}

    def arrays(self) -> dict[str, np.ndarray] | None:
        """The examples as arrays (anomalous first), or None when there are none."""
        kept = sorted((p for p in self.positions if p in self.adversarial), key=lambda p: (-self.clean[p]["label"], p))
        if not kept:
            return None
        return {
            "images": np.stack([self.clean[p]["image"] for p in kept]),
            "adversarial_images": np.stack([self.adversarial[p]["image"] for p in kept]),
            "masks": np.stack([self.clean[p]["mask"] for p in kept]),
            "clean_maps": _compact_maps(np.stack([self.clean[p]["map"] for p in kept])),
            "adversarial_maps": _compact_maps(np.stack([self.adversarial[p]["map"] for p in kept])),
            "labels": np.array([self.clean[p]["label"] for p in kept], dtype=np.uint8),
            "indices": np.array(kept, dtype=np.int64),
        }


def save_examples(results: Path, cell_id: str, arrays: dict[str, np.ndarray]) -> str:
    """Writes the examples atomically; returns their path relative to `results`."""
    relative = examples_relative_path(cell_id)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes_atomic(Path(results) / relative, buffer.getvalue())
    return relative


def load_examples(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an examples file; a missing or malformed file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no examples file (rerun the cell with a current `bench run` to save one)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable examples file ({err})") from None
    missing = [key for key in ARRAYS if key not in arrays]
    if missing:
        raise ValueError(f"{path}: examples file without {', '.join(missing)}")
    return arrays
