"""MVTec AD layout (Bergmann et al., CVPR 2019), and any tree that follows it.

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/*.png
    <root>/<category>/ground_truth/<defect>/<name>_mask.png
    <root>/<category>/train/foreground_mask/<name>.png   (optional; PatchGuard's official masks)

Every anomalous test image must have its mask (a missing one is an error naming the image). MPDD,
WFDD, DTD-Synthetic, BTAD, converted VisA and the `folder` dataset reuse `MVTecLayout`.
"""
from __future__ import annotations

from pathlib import Path

from robustad.datasets.anomaly_dataset import DatasetFormat, Sample
from robustad.datasets.image_io import IMAGE_SUFFIXES, list_images
from robustad.datasets.registry import register_dataset

MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)


class MVTecLayout(DatasetFormat):
    """Base for every dataset shipped in MVTec AD's folder layout.

    Subclasses may change `normal_folder` ("good"; BTAD uses "ok") and `mask_suffixes` (the
    stem suffixes tried, in order, for `ground_truth/<defect>/<stem><suffix>.<any image ext>`).
    """

    layout = "<root>/<category>/{train/good, test/good, test/<defect>, ground_truth/<defect>/<name>_mask.png}"
    normal_folder = "good"
    mask_suffixes: tuple[str, ...] = ("_mask", "")
    foreground_folder = "foreground_mask"

    def category_dir(self, category: str) -> Path:
        return self.root / category

    def categories(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and ((p / "train").is_dir() or (p / "test").is_dir())
        )

    def scan(self, category: str, split: str) -> tuple[list[Sample], list[str]]:
        base = self.category_dir(category)
        if split == "train":
            folder = base / "train" / self.normal_folder
            if not folder.is_dir():
                return [], [f"{folder} does not exist (expected layout: {self.layout})"]
            return [Sample(str(p), 0) for p in list_images(folder)], []
        test = base / "test"
        if not test.is_dir():
            return [], [f"{test} does not exist (expected layout: {self.layout})"]
        found: list[Sample] = []
        problems: list[str] = []
        for folder in sorted(p for p in test.iterdir() if p.is_dir() and not p.name.startswith(".")):
            normal = folder.name == self.normal_folder
            for image in list_images(folder):
                if normal:
                    found.append(Sample(str(image), 0))
                    continue
                mask = self.find_mask(base, folder.name, image)
                if mask is None:
                    expected = base / "ground_truth" / folder.name / f"{image.stem}{self.mask_suffixes[0]}.png"
                    problems.append(f"no mask for anomalous image {image}: expected {expected} (or another image extension)")
                else:
                    found.append(Sample(str(image), 1, str(mask), folder.name))
        return found, problems

    def find_mask(self, base: Path, defect: str, image: Path) -> Path | None:
        folder = base / "ground_truth" / defect
        for suffix in self.mask_suffixes:
            for ext in IMAGE_SUFFIXES:
                for candidate in (folder / f"{image.stem}{suffix}{ext}", folder / f"{image.stem}{suffix}{ext.upper()}"):
                    if candidate.is_file():
                        return candidate
        return None

    def foreground_mask(self, sample: Sample) -> Path | None:
        """`<category>/train/foreground_mask/<image name>` (or the same stem, any image extension)."""
        image = Path(sample.image)
        if sample.label != 0 or image.parent.parent.name != "train":
            return None
        return find_same_stem(image.parent.parent / self.foreground_folder, image)


def find_same_stem(folder: Path, image: Path) -> Path | None:
    """`folder/<image name>`, else `folder/<image stem>.<any image extension>`, else None."""
    exact = folder / image.name
    if exact.is_file():
        return exact
    for ext in IMAGE_SUFFIXES:
        for candidate in (folder / f"{image.stem}{ext}", folder / f"{image.stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


@register_dataset("mvtec")
class MVTecAD(MVTecLayout):
    """MVTec AD, or any tree in its layout (15 categories in the real dataset)."""

    name = "mvtec"
    known_categories = MVTEC_CATEGORIES
