"""BTAD, the beanTech Anomaly Detection dataset (Mishra et al., VT-ADL, ISIE 2021), as released.

http://avires.dimi.uniud.it/papers/btad/btad.zip unpacks to `BTech_Dataset_transformed/`; pass
that folder or the one above it as `--root`:

    <root>/{01,02,03}/train/ok/*.bmp|png
    <root>/{01,02,03}/test/ok/*.bmp|png
    <root>/{01,02,03}/test/ko/*.bmp|png
    <root>/{01,02,03}/ground_truth/ko/<same stem>.png|bmp
    <root>/{01,02,03}/train/foreground_mask/<name>   (optional; PatchGuard's official masks)

Product 01 ships BMP images with PNG masks, 02 PNG with PNG, 03 BMP with BMP; the mask has the
image's stem. PatchGuard (CVPR 2025) reports BTAD in Tables 1–2 and 15.
"""
from __future__ import annotations

from robustad.datasets.mvtec import MVTecLayout
from robustad.datasets.registry import register_dataset

BTAD_CATEGORIES = ("01", "02", "03")
BTAD_ARCHIVE_FOLDER = "BTech_Dataset_transformed"


@register_dataset("btad")
class BTAD(MVTecLayout):
    """BTAD's three products; normal images are in `ok`, anomalous ones in `ko`."""

    name = "btad"
    known_categories = BTAD_CATEGORIES
    layout = "<root>/{01,02,03}/{train/ok, test/ok, test/ko, ground_truth/ko/<stem>.png|bmp}"
    normal_folder = "ok"
    mask_suffixes = ("", "_mask")

    def __init__(self, root):
        super().__init__(root)
        nested = self.root / BTAD_ARCHIVE_FOLDER
        if nested.is_dir() and not any((self.root / c).is_dir() for c in BTAD_CATEGORIES):
            self.root = nested
