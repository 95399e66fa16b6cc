"""The sample format every loader produces and the torch Dataset that serves it.

Items are dicts `{"image": (3,H,W) float in [0,1], "label": int, "mask": (1,H,W) {0,1},
"path": str}`; masks are all zero for normal images. `has_masks` is False for datasets without
pixel annotations (Head-CT), and pixel metrics are then reported as not available.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch.utils.data import Dataset

from robustad.datasets.image_io import DatasetError, load_image, load_mask


SPLITS = ("train", "test")


@dataclass(frozen=True)
class Sample:
    image: str  # a file path, or a loader-specific address (e.g. a NIfTI slice "vol.nii.gz#z=80")
    label: int  # 0 normal, 1 anomalous
    mask: str | None = None  # None for normal images (and anomalous ones of mask-less datasets)
    defect: str = "good"


class DatasetFormat:
    """One on-disk layout: lists categories and samples, reads images and masks.

    Subclasses set `name`, `known_categories`, `layout` (a one-line description of the expected
    tree, used in error messages) and implement `categories` and `samples`.
    """

    name: ClassVar[str] = "format"
    layout: ClassVar[str] = ""
    known_categories: ClassVar[tuple[str, ...]] = ()
    has_masks: ClassVar[bool] = True
    default_root: ClassVar[str | None] = None

    def __init__(self, root):
        if root is None:
            raise DatasetError(f"dataset {self.name!r} needs --root DIR (expected layout: {self.layout})")
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DatasetError(f"dataset root {self.root} does not exist (expected layout: {self.layout})")

    def categories(self) -> list[str]:
        raise NotImplementedError

    def samples(self, category: str, split: str) -> list[Sample]:
        raise NotImplementedError

    def load_image(self, sample: Sample, size: int | None) -> torch.Tensor:
        return load_image(sample.image, size)

    def load_mask(self, sample: Sample, size: int | None) -> torch.Tensor:
        return load_mask(sample.mask, size)

    def check_category(self, category: str) -> None:
        valid = self.categories()
        if category not in valid:
            raise DatasetError(
                f"category {category!r} not found in {self.root} for dataset {self.name!r}; "
                f"categories there: {', '.join(valid) or 'none'} (expected layout: {self.layout})"
            )


class AnomalyDataset(Dataset):
    """A list of samples of one category and split, resized to `image_size`."""

    def __init__(self, fmt: DatasetFormat, category: str, split: str, image_size: int | None, samples: list[Sample]):
        self.format = fmt
        self.category = category
        self.split = split
        self.image_size = image_size
        self.samples = samples
        self.has_masks = fmt.has_masks

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = self.format.load_image(sample, self.image_size)
        if sample.mask is not None:
            mask = self.format.load_mask(sample, self.image_size)
            if mask.shape[1:] != image.shape[1:]:
                raise DatasetError(
                    f"mask {sample.mask} has size {tuple(mask.shape[1:])}, image {sample.image} has {tuple(image.shape[1:])}"
                )
        else:
            mask = torch.zeros(1, *image.shape[1:])
        return {"image": image, "label": int(sample.label), "mask": mask, "path": str(sample.image)}

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]
