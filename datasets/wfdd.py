"""WFDD, the Woven Fabric Defect Detection dataset (Chen et al., GLASS, ECCV 2024), as released.

https://github.com/cqylunlun/GLASS#dataset-release — MVTec AD layout, 4 categories:

    <root>/<category>/train/good/*.png
    <root>/<category>/test/{good,<defect>}/*.png
    <root>/<category>/ground_truth/<defect>/<name>_mask.png

A texture dataset: PatchGuard's official code treats the whole image as foreground
(`whole_image_foreground = True`). PatchGuard (CVPR 2025) reports WFDD in Tables 1–2 and 17.
"""
from __future__ import annotations

from robustad.datasets.mvtec import MVTecLayout
from robustad.datasets.registry import register_dataset

WFDD_CATEGORIES = ("grey_cloth", "grid_cloth", "pink_flower", "yellow_cloth")


@register_dataset("wfdd")
class WFDD(MVTecLayout):
    """WFDD in its released MVTec-style layout."""

    name = "wfdd"
    known_categories = WFDD_CATEGORIES
    whole_image_foreground = True
