"""Head-CT (hemorrhage) (Kitamura, Kaggle 2018), read as released: 200 head CT slices, 100 of them
with an intracranial hemorrhage of any type, and no pixel annotations.

https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage:

    <root>/labels.csv              columns "id, hemorrhage" (id 0–199; hemorrhage 0 or 1)
    <root>/head_ct/head_ct/*.png   (or <root>/head_ct/*.png, or <root>/*.png); 000.png is id 0
    <root>/foreground_mask/<name>  (optional; PatchGuard's official foreground masks)

Split (fixed, documented): the normal images, sorted by id, are permuted with
`numpy.random.default_rng(SPLIT_SEED = 0)`; the first `TRAIN_FRACTION = 0.75` of them (75 of
100) are the training set, the other normal images and every hemorrhage image (25 + 100) are the
test set. The tree exported by PatchGuard's official code (`<root>/{train/good, test/good,
test/<kind>}`) is read too, with its own split.

No masks: `has_masks = False`, anomalous samples have `mask=None`, dataset items carry an all-zero
mask, and pixel metrics must be recorded as not available (tables show "–"). PatchGuard (CVPR
2025) reports image AUROC on Head-CT in Table 1.
"""
from __future__ import annotations

import csv
from functools import cached_property
from pathlib import Path

import numpy as np

from robustad.datasets.anomaly_dataset import DatasetFormat, Sample
from robustad.datasets.image_io import DatasetError, list_images
from robustad.datasets.mvtec import find_same_stem
from robustad.datasets.registry import register_dataset

HEADCT_CATEGORY = "head_ct"
LABELS_FILE = "labels.csv"
IMAGE_FOLDERS = ("head_ct/head_ct", "head_ct", ".")
SPLIT_SEED = 0
TRAIN_FRACTION = 0.75


@register_dataset("headct")
class HeadCT(DatasetFormat):
    """Head-CT: one category, image labels only."""

    name = "headct"
    known_categories = (HEADCT_CATEGORY,)
    has_masks = False
    layout = "<root>/labels.csv (id, hemorrhage) with <root>/head_ct/head_ct/*.png, or <root>/{train/good, test/...}"

    def __init__(self, root):
        super().__init__(root)
        self.exported = (self.root / "train" / "good").is_dir()
        if not self.exported and not (self.root / LABELS_FILE).is_file():
            raise DatasetError(
                f"Head-CT root {self.root}: found neither {self.root / LABELS_FILE} (Head-CT as released) "
                f"nor {self.root / 'train' / 'good'} (exported by PatchGuard's code); expected layout: {self.layout}"
            )

    def categories(self) -> list[str]:
        return [HEADCT_CATEGORY]

    @cached_property
    def image_folder(self) -> Path:
        for folder in IMAGE_FOLDERS:
            if list_images(self.root / folder):
                return (self.root / folder).resolve()
        raise DatasetError(f"Head-CT root {self.root}: no PNG images in head_ct/head_ct/, head_ct/ or the root")

    def read_labels(self) -> tuple[dict[int, int], list[str]]:
        path = self.root / LABELS_FILE
        labels: dict[int, int] = {}
        problems: list[str] = []
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = [h.strip().lower() for h in next(reader, [])]
            if header[:2] != ["id", "hemorrhage"]:
                raise DatasetError(f"{path}: expected the header 'id, hemorrhage', found {', '.join(header) or 'nothing'}")
            for line, row in enumerate(reader, start=2):
                try:
                    ident, label = int(row[0]), int(row[1])
                    if label not in (0, 1):
                        raise ValueError
                except (ValueError, IndexError):
                    problems.append(f"{path} line {line}: expected '<id>, <0|1>', found {','.join(row)!r}")
                    continue
                labels[ident] = label
        return labels, problems

    def scan(self, category: str, split: str) -> tuple[list[Sample], list[str]]:
        if self.exported:
            return self.scan_exported(split)
        labels, problems = self.read_labels()
        images: dict[int, Path] = {}
        for path in list_images(self.image_folder):
            if not path.stem.isdigit():
                problems.append(f"image {path} is not named <id>.png; its label cannot be looked up in {LABELS_FILE}")
            elif int(path.stem) not in labels:
                problems.append(f"image {path} has no row in {self.root / LABELS_FILE}")
            else:
                images[int(path.stem)] = path
        for ident in sorted(set(labels) - set(images)):
            problems.append(f"{self.root / LABELS_FILE} lists id {ident} but {self.image_folder} has no {ident:03d}.png")
        normal = sorted(i for i in images if labels[i] == 0)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(normal))
        n_train = int(round(TRAIN_FRACTION * len(normal)))
        train_ids = sorted(normal[k] for k in order[:n_train])
        if split == "train":
            return [Sample(str(images[i]), 0) for i in train_ids], problems
        chosen = set(train_ids)
        test = [Sample(str(images[i]), labels[i], None, "hemorrhage" if labels[i] else "good")
                for i in sorted(images) if i not in chosen]
        return test, problems

    def scan_exported(self, split: str) -> tuple[list[Sample], list[str]]:
        if split == "train":
            return [Sample(str(p), 0) for p in list_images(self.root / "train" / "good")], []
        test = self.root / "test"
        if not test.is_dir():
            return [], [f"{test} does not exist (expected layout: {self.layout})"]
        found = []
        for folder in sorted(p for p in test.iterdir() if p.is_dir()):
            label = 0 if folder.name == "good" else 1
            found += [Sample(str(p), label, None, folder.name) for p in list_images(folder)]
        return found, []

    def foreground_mask(self, sample: Sample) -> Path | None:
        if sample.label != 0:
            return None
        image = Path(sample.image)
        if self.exported:
            return find_same_stem(self.root / "train" / "foreground_mask", image) if image.parent.parent.name == "train" else None
        return find_same_stem(self.root / "foreground_mask", image)
