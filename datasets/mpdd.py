"""MPDD, the Metal Parts Defect Detection dataset (Jezek et al., ICUMT 2021), as released.

https://github.com/stepanje/MPDD — MVTec AD layout, 6 categories:

    <root>/<category>/train/good/*.png
    <root>/<category>/test/{good,<defect>}/*.png
    <root>/<category>/ground_truth/<defect>/<name>_mask.png
    <root>/<category>/train/foreground_mask/<name>.png   (optional; PatchGuard's official masks)

PatchGuard (CVPR 2025) reports MPDD in its Tables 1–2 and 16.
"""
from __future__ import annotations

from robustad.datasets.mvtec import MVTecLayout
from robustad.datasets.registry import register_dataset

MPDD_CATEGORIES = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes")


@register_dataset("mpdd")
class MPDD(MVTecLayout):
    """MPDD in its released MVTec-style layout."""

    name = "mpdd"
    known_categories = MPDD_CATEGORIES
