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

from robustad.datasets.image_io import DatasetError, load_image, load_mask, read_image_size


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
    tree, used in error messages) and implement `categories` and either `scan` (preferred: it
    reports every problem of a tree, which `bench data info` lists) or `samples`.

    Foreground masks: PatchGuard's official code ships precomputed foreground masks for the
    training images of some datasets (`<category>/train/foreground_mask/<image name>` for MVTec
    AD, MPDD and BTAD, `<category>/Data/Images/foreground_mask/<image name>` for VisA,
    `train/foreground_mask/<image name>` for the exported BraTS2021 and Head-CT slices).
    `foreground_mask(sample)` returns that file when it exists, else None; `whole_image_foreground`
    is True for texture datasets (WFDD, DTD-Synthetic), where the official code treats the whole
    image as foreground.
    """

    name: ClassVar[str] = "format"
    layout: ClassVar[str] = ""
    known_categories: ClassVar[tuple[str, ...]] = ()
    has_masks: ClassVar[bool] = True
    whole_image_foreground: ClassVar[bool] = False
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
        """The samples of one category and split, in a deterministic order; raises DatasetError
        naming the first problem found (a missing mask, a missing folder)."""
        if type(self).scan is DatasetFormat.scan:
            raise NotImplementedError(f"{type(self).__name__} implements neither samples() nor scan()")
        found, problems = self.scan(category, split)
        if problems:
            extra = len(problems) - 1
            more = f" (and {extra} more problem{'s' if extra > 1 else ''}: run `bench data info`)" if extra else ""
            raise DatasetError(problems[0] + more)
        return found

    def scan(self, category: str, split: str) -> tuple[list[Sample], list[str]]:
        """(samples, problems): like `samples`, but collects every problem instead of raising.

        Samples with a problem (an anomalous image without its mask) are left out of the list.
        """
        if type(self).samples is DatasetFormat.samples:
            raise NotImplementedError(f"{type(self).__name__} implements neither samples() nor scan()")
        try:
            return self.samples(category, split), []
        except DatasetError as err:
            return [], [str(err)]

    def load_image(self, sample: Sample, size: int | None) -> torch.Tensor:
        return load_image(sample.image, size)

    def load_mask(self, sample: Sample, size: int | None) -> torch.Tensor:
        return load_mask(sample.mask, size)

    def image_dimensions(self, sample: Sample) -> tuple[int, int]:
        """(width, height) of the sample's image, read from its header only."""
        return read_image_size(sample.image)

    def mask_dimensions(self, sample: Sample) -> tuple[int, int]:
        """(width, height) of the sample's mask, read from its header only."""
        return read_image_size(sample.mask)

    def foreground_mask(self, sample: Sample) -> Path | None:
        """The official code's precomputed foreground mask of a training image, or None."""
        return None

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

    def foreground_mask(self, index: int) -> torch.Tensor | None:
        """(1, H, W) {0, 1} precomputed foreground mask of item `index` (see DatasetFormat), or None."""
        path = self.format.foreground_mask(self.samples[index])
        return None if path is None else load_mask(path, self.image_size)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]
