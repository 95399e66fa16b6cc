"""VisA, the Visual Anomaly dataset (Zou et al., SPot-the-difference, ECCV 2022), read as released.

https://github.com/amazon-science/spot-diff — 12 categories. Two layouts are read as they come:

As released (`VisA_20220922.tar`), split by the official one-class split file:

    <root>/split_csv/1cls.csv            columns object,split,label,image,mask
    <root>/<category>/Data/Images/Normal/*.JPG
    <root>/<category>/Data/Images/Anomaly/*.JPG
    <root>/<category>/Data/Masks/Anomaly/*.png       (0/255 or class ids; any non-zero is anomalous)
    <root>/<category>/Data/Images/foreground_mask/<image name>   (optional; PatchGuard's official masks)

Converted by spot-diff's `utils/prepare_data.py` (or anomalib) into MVTec AD's layout, found at
`<root>/visa_pytorch/<category>`, `<root>/visa_pytorch/1cls/<category>`,
`<root>/VisA_pytorch/1cls/<category>`, `<root>/1cls/<category>` or `<root>/<category>`:

    <category>/{train/good, test/good, test/bad, ground_truth/bad/<image stem>.png}

`split_csv/1cls.csv` is part of the spot-diff repository; if your copy of the archive lacks it, put
it at `<root>/split_csv/1cls.csv`. PatchGuard (CVPR 2025) reports VisA in Tables 1–2 and 14.
"""
from __future__ import annotations

import csv
from functools import cached_property
from pathlib import Path

from robustad.datasets.anomaly_dataset import Sample
from robustad.datasets.image_io import DatasetError
from robustad.datasets.mvtec import MVTecLayout, find_same_stem
from robustad.datasets.registry import register_dataset

VISA_CATEGORIES = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
    "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum",
)
SPLIT_FILE = Path("split_csv") / "1cls.csv"
SPLIT_COLUMNS = ("object", "split", "label", "image", "mask")
CONVERTED_FOLDERS = ("visa_pytorch", "visa_pytorch/1cls", "VisA_pytorch/1cls", "VisA_pytorch", "1cls", ".")


@register_dataset("visa")
class VisA(MVTecLayout):
    """VisA as released (split by `split_csv/1cls.csv`) or converted to MVTec AD's layout."""

    name = "visa"
    known_categories = VISA_CATEGORIES
    layout = ("<root>/split_csv/1cls.csv with <root>/<category>/Data/{Images/{Normal,Anomaly},Masks/Anomaly}, "
              "or <root>/visa_pytorch/<category>/{train/good, test/good, test/bad, ground_truth/bad}")

    def __init__(self, root):
        super().__init__(root)
        self.converted_root = None
        if not self.is_released_layout():
            self.converted_root = self.find_converted_root()
            if self.converted_root is None:
                raise DatasetError(
                    f"VisA root {self.root}: found neither {self.root / SPLIT_FILE} with <category>/Data folders "
                    f"(VisA as released; the split file is also in github.com/amazon-science/spot-diff) nor a "
                    f"converted tree (visa_pytorch/<category>/train/good); expected layout: {self.layout}"
                )

    def is_released_layout(self) -> bool:
        if not (self.root / SPLIT_FILE).is_file():
            return False
        return any((self.root / c / "Data").is_dir() for c in self.split_categories())

    def find_converted_root(self) -> Path | None:
        for folder in CONVERTED_FOLDERS:
            base = (self.root / folder).resolve()
            if base.is_dir() and any((p / "train" / "good").is_dir() for p in base.iterdir() if p.is_dir()):
                return base
        return None

    @cached_property
    def split_rows(self) -> list[dict]:
        path = self.root / SPLIT_FILE
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = tuple(name.strip() for name in (reader.fieldnames or ()))
            if not set(SPLIT_COLUMNS) <= set(header):
                raise DatasetError(f"{path}: expected the columns {','.join(SPLIT_COLUMNS)}, found {','.join(header)}")
            return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]

    def split_categories(self) -> list[str]:
        return sorted({row["object"] for row in self.split_rows})

    def category_dir(self, category: str) -> Path:
        return (self.converted_root or self.root) / category

    def categories(self) -> list[str]:
        if self.converted_root is not None:
            return sorted(p.name for p in self.converted_root.iterdir() if (p / "train" / "good").is_dir())
        return [c for c in self.split_categories() if (self.root / c / "Data").is_dir()]

    def scan(self, category: str, split: str) -> tuple[list[Sample], list[str]]:
        if self.converted_root is not None:
            return super().scan(category, split)
        found: list[Sample] = []
        problems: list[str] = []
        for row in self.split_rows:
            if row["object"] != category or row["split"] != split:
                continue
            image = self.root / row["image"]
            if not image.is_file():
                problems.append(f"image listed in {self.root / SPLIT_FILE} not found: {image}")
                continue
            if row["label"] == "normal":
                found.append(Sample(str(image), 0))
                continue
            mask = self.root / row["mask"] if row["mask"] else image.parent.parent.parent / "Masks" / "Anomaly" / f"{image.stem}.png"
            if not mask.is_file():
                problems.append(f"no mask for anomalous image {image}: expected {mask}")
                continue
            found.append(Sample(str(image), 1, str(mask), "anomaly"))
        found.sort(key=lambda s: s.image)
        return found, problems

    def foreground_mask(self, sample: Sample) -> Path | None:
        """`<category>/Data/Images/foreground_mask/<image name>` for the released layout."""
        if self.converted_root is not None:
            return super().foreground_mask(sample)
        image = Path(sample.image)
        if sample.label != 0:
            return None
        return find_same_stem(image.parent.parent / "foreground_mask", image)
