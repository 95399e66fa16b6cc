"""`folder`: any tree in MVTec AD's layout, with its categories discovered.

    <root>/<category>/train/good/*            one folder per category, or a single category:
    <root>/<category>/test/good/*             <root>/{train/good, test/..., ground_truth/...}
    <root>/<category>/test/<defect>/*         (its category is then the root folder's name)
    <root>/<category>/ground_truth/<defect>/<name>_mask.<ext>  (or <name>.<ext>)

Images may be PNG, JPEG, BMP or TIFF, with any case of extension.
"""
from __future__ import annotations

from pathlib import Path

from robustad.datasets.mvtec import MVTecLayout
from robustad.datasets.registry import register_dataset


@register_dataset("folder")
class Folder(MVTecLayout):
    """Your own data in MVTec AD's layout; no known category list."""

    name = "folder"
    layout = ("<root>/<category>/{train/good, test/good, test/<defect>, ground_truth/<defect>/<name>[_mask].<ext>} "
              "or <root>/{train/good, test/..., ground_truth/...} for a single category")

    def is_single_category(self) -> bool:
        return (self.root / "train").is_dir() or (self.root / "test").is_dir()

    def categories(self) -> list[str]:
        if self.is_single_category():
            return [self.root.name]
        return super().categories()

    def category_dir(self, category: str) -> Path:
        return self.root if self.is_single_category() else self.root / category
