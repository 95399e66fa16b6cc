"""MVTec AD layout (Bergmann et al., CVPR 2019), and any tree that follows it.

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/*.png
    <root>/<category>/ground_truth/<defect>/<name>_mask.png

Every anomalous test image must have its mask (a missing one is an error naming the image).
"""
from __future__ import annotations

from pathlib import Path

from robustad.datasets.anomaly_dataset import DatasetFormat, Sample
from robustad.datasets.image_io import IMAGE_SUFFIXES, DatasetError, list_images
from robustad.datasets.registry import register_dataset

MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)


class MVTecLayout(DatasetFormat):
    """Base for every dataset shipped in MVTec AD's folder layout."""

    layout = "<root>/<category>/{train/good, test/good, test/<defect>, ground_truth/<defect>/<name>_mask.png}"
    normal_folder = "good"
    mask_suffixes = ("_mask",  "")

    def categories(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "train").is_dir() or (p / "test").is_dir())

    def samples(self, category: str, split: str) -> list[Sample]:
        base = self.root / category
        if split == "train":
            return [Sample(str(p), 0) for p in list_images(base / "train" / self.normal_folder)]
        test = base / "test"
        if not test.is_dir():
            raise DatasetError(f"{test} does not exist (expected layout: {self.layout})")
        out: list[Sample] = []
        for folder in sorted(p for p in test.iterdir() if p.is_dir()):
            normal = folder.name == self.normal_folder
            for image in list_images(folder):
                if normal:
                    out.append(Sample(str(image), 0))
                else:
                    out.append(Sample(str(image), 1, str(self.find_mask(base, folder.name, image)), folder.name))
        return out

    def find_mask(self, base: Path, defect: str, image: Path) -> Path:
        folder = base / "ground_truth" / defect
        for suffix in self.mask_suffixes:
            for ext in IMAGE_SUFFIXES:
                for candidate in (folder / f"{image.stem}{suffix}{ext}", folder / f"{image.stem}{suffix}{ext.upper()}"):
                    if candidate.is_file():
                        return candidate
        raise DatasetError(
            f"no mask for anomalous image {image}: expected {folder / (image.stem + '_mask.png')}"
        )


@register_dataset("mvtec")
class MVTecAD(MVTecLayout):
    """MVTec AD, or any tree in its layout (15 categories in the real dataset)."""

    name = "mvtec"
    known_categories = MVTEC_CATEGORIES
