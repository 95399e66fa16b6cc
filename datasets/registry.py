"""The dataset registry and factory: `create_dataset("mvtec", root=..., category="bottle", split="test")`."""
from __future__ import annotations

from robustad.core.registry import Registry
from robustad.datasets.anomaly_dataset import SPLITS, AnomalyDataset, DatasetFormat
from robustad.datasets.image_io import DatasetError

DATASETS: Registry = Registry("dataset")
register_dataset = DATASETS.register


def open_format(name: str, root=None) -> DatasetFormat:
    """The dataset format object for `name` at `root` (the format's own default root if None)."""
    cls = DATASETS.get(name)
    return cls(root if root is not None else cls.default_root)


def create_dataset(name: str, *, root=None, category: str, split: str, image_size: int | None) -> AnomalyDataset:
    """A torch Dataset of one category and split, images resized to `image_size`."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    fmt = open_format(name, root)
    fmt.check_category(category)
    samples = fmt.samples(category, split)
    if not samples:
        raise DatasetError(f"dataset {name!r} category {category!r} has no {split} images under {fmt.root} "
                           f"(expected layout: {fmt.layout})")
    if split == "train" and not any(s.label == 0 for s in samples):
        raise DatasetError(f"dataset {name!r} category {category!r} has no normal training images under {fmt.root}")
    return AnomalyDataset(fmt, category, split, image_size, samples)


def list_categories(name: str, root=None) -> list[str]:
    return open_format(name, root).categories()
