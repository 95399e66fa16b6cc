"""DTD-Synthetic (Aota et al., WACV 2023), as released: DTD textures with synthetic defects.

MVTec AD layout, 12 categories named after their DTD texture:

    <root>/<category>/train/good/*.png
    <root>/<category>/test/{good,bad}/*.png
    <root>/<category>/ground_truth/bad/<name>_mask.png

A texture dataset: PatchGuard's official code treats the whole image as foreground
(`whole_image_foreground = True`). PatchGuard (CVPR 2025) reports it in Tables 1–2 and 18.
"""
from __future__ import annotations

from robustad.datasets.mvtec import MVTecLayout
from robustad.datasets.registry import register_dataset

DTD_SYNTHETIC_CATEGORIES = (
    "Blotchy_099", "Fibrous_183", "Marbled_078", "Matted_069", "Mesh_114", "Perforated_037",
    "Stratified_154", "Woven_001", "Woven_068", "Woven_104", "Woven_125", "Woven_127",
)


@register_dataset("dtd-synthetic")
class DTDSynthetic(MVTecLayout):
    """DTD-Synthetic in its released MVTec-style layout."""

    name = "dtd-synthetic"
    known_categories = DTD_SYNTHETIC_CATEGORIES
    whole_image_foreground = True
