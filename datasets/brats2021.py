"""BraTS2021 FLAIR as 2D axial slices (Baid et al., arXiv:2107.02314), the way PatchGuard uses it.

Two layouts are read as they come, both as one category, "brain":

1. The released NIfTI volumes (Task 1 training data, 1,251 cases), read with nibabel:

       <root>/BraTS2021_XXXXX/BraTS2021_XXXXX_flair.nii.gz
       <root>/BraTS2021_XXXXX/BraTS2021_XXXXX_seg.nii.gz
       (case folders may sit one level deeper, e.g. <root>/BraTS2021_Training_Data/; `.nii` works too)

   Slice selection (documented, fixed):
   - slices are axial: `volume[:, :, z]` of the 240×240×155 volumes, rotated by 90° (`np.rot90`)
     so the anterior side is up; image and mask get the same rotation;
   - brain tissue is FLAIR > 0 (BraTS volumes are skull-stripped, background is exactly 0); a
     slice is kept when at least `MIN_BRAIN_FRACTION = 0.10` of its pixels are brain tissue;
   - a kept slice is normal when its segmentation is empty, anomalous otherwise (any tumour
     label 1, 2 or 4), and its mask is the tumour (all labels);
   - intensities: each volume is divided by the 99.5th percentile of its brain voxels and
     clipped to [0, 1]; the gray slice is repeated over the three RGB channels.
   Split by patient, never by slice: the case IDs, sorted, are permuted with
   `numpy.random.default_rng(SPLIT_SEED = 0)`; the first `TEST_FRACTION = 0.2` of them are test
   patients. Training uses the normal slices of the other patients only; the test set holds every
   kept slice (normal and anomalous) of the test patients.
   Listing the slices reads every volume once; the per-case result is cached in
   `$ROBUSTAD_CACHE` (default `~/.cache/robustad`) keyed by file size and mtime, so only the
   first listing of a tree is slow. Reading a slice decompresses its volume (the last 4 are kept
   in memory), so shuffled training over the full dataset is slow: `export_slices(root, out)`
   writes the same slices and split once as 8-bit PNGs in layout 2, which reads fast.

2. Slices already exported in the layout of PatchGuard's official code:

       <root>/train/normal/*.png
       <root>/test/normal/*.png
       <root>/test/<anomaly folder>/*.png
       <root>/ground_truth/<image name with "flair" replaced by "seg">   (or the same name)
       <root>/train/foreground_mask/<image name>   (optional; PatchGuard's official masks)

Sample addresses for NIfTI slices are "<flair path>#z=<index>" (masks "<seg path>#z=<index>").
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from robustad.datasets.anomaly_dataset import DatasetFormat, Sample
from robustad.datasets.image_io import DatasetError, image_tensor, list_images, mask_tensor, read_image_size
from robustad.datasets.mvtec import find_same_stem
from robustad.datasets.registry import register_dataset
from robustad.core.cache import cache_root

BRATS_CATEGORY = "brain"
MIN_BRAIN_FRACTION = 0.10
INTENSITY_PERCENTILE = 99.5
SPLIT_SEED = 0
TEST_FRACTION = 0.2
FLAIR_PATTERN = re.compile(r"^(?P<case>.+)_flair\.nii(\.gz)?$")
ADDRESS = re.compile(r"^(?P<path>.+)#z=(?P<z>\d+)$")


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise DatasetError("reading BraTS2021 NIfTI volumes needs nibabel: pip install 'robustad[medical]' "
                           "(or pip install nibabel)") from None
    return nibabel


def read_volume(path) -> np.ndarray:
    """The voxel array of a NIfTI file, as stored (no scaling beyond the header's)."""
    try:
        return np.asanyarray(_nibabel().load(str(path)).dataobj)
    except FileNotFoundError:
        raise DatasetError(f"NIfTI file not found: {path}") from None
    except Exception as err:  # nibabel raises several kinds for a damaged file
        raise DatasetError(f"cannot read NIfTI volume {path}: {err}") from None


@lru_cache(maxsize=4)
def normalized_flair(path: str) -> np.ndarray:
    """(X, Y, Z) float16 FLAIR scaled by the 99.5th percentile of its brain voxels, in [0, 1]."""
    volume = read_volume(path).astype(np.float32)
    if volume.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D volume, found shape {volume.shape}")
    brain = volume[volume > 0]
    scale = float(np.percentile(brain, INTENSITY_PERCENTILE)) if brain.size else 1.0
    return np.clip(volume / max(scale, 1e-6), 0.0, 1.0).astype(np.float16)


@lru_cache(maxsize=4)
def tumour_volume(path: str) -> np.ndarray:
    """(X, Y, Z) boolean tumour mask (any non-zero label)."""
    return read_volume(path) > 0


@lru_cache(maxsize=4096)
def slice_dimensions(path: str) -> tuple[int, int]:
    """(width, height) of an axial slice, from the NIfTI header: rot90 of an (x, y) slice has y
    rows and x columns."""
    try:
        shape = _nibabel().load(path).shape
    except FileNotFoundError:
        raise DatasetError(f"NIfTI file not found: {path}") from None
    except Exception as err:
        raise DatasetError(f"cannot read NIfTI volume {path}: {err}") from None
    return int(shape[0]), int(shape[1])


def axial(volume: np.ndarray, z: int) -> np.ndarray:
    return np.rot90(volume[:, :, z])


def select_slices(flair: np.ndarray, seg: np.ndarray) -> list[tuple[int, int]]:
    """[(z, label)] of the axial slices kept by the documented rule (module docstring)."""
    if flair.shape != seg.shape:
        raise DatasetError(f"FLAIR shape {flair.shape} and segmentation shape {seg.shape} differ")
    brain_fraction = (flair > 0).mean(axis=(0, 1))
    tumour = (seg > 0).any(axis=(0, 1))
    return [(int(z), int(tumour[z])) for z in range(flair.shape[2]) if brain_fraction[z] >= MIN_BRAIN_FRACTION]


def cache_dir() -> Path:
    return cache_root()


@register_dataset("brats2021")
class BraTS2021(DatasetFormat):
    """BraTS2021 FLAIR axial slices from NIfTI volumes or from PatchGuard's exported PNG slices."""

    name = "brats2021"
    known_categories = (BRATS_CATEGORY,)
    layout = ("<root>/BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,seg}.nii.gz, or exported slices "
              "<root>/{train/normal, test/normal, test/<anomaly>, ground_truth/<name flair->seg>}")

    def __init__(self, root):
        super().__init__(root)
        self.exported = (self.root / "train" / "normal").is_dir()
        self.cases: dict[str, Path] = {} if self.exported else self.find_cases()
        if not self.exported and not self.cases:
            raise DatasetError(
                f"BraTS2021 root {self.root}: found no BraTS2021_XXXXX/BraTS2021_XXXXX_flair.nii.gz volumes and no "
                f"exported slices in train/normal; expected layout: {self.layout}"
            )

    def find_cases(self) -> dict[str, Path]:
        """{case id: FLAIR path} of the case folders directly under the root or one level deeper."""
        cases = {}
        for pattern in ("*/*_flair.nii*", "*/*/*_flair.nii*"):
            for path in sorted(self.root.glob(pattern)):
                match = FLAIR_PATTERN.match(path.name)
                if match and path.is_file():
                    cases.setdefault(match["case"], path)
            if cases:
                break
        return dict(sorted(cases.items()))

    def categories(self) -> list[str]:
        return [BRATS_CATEGORY]

    def test_cases(self) -> set[str]:
        ids = sorted(self.cases)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(ids))
        n_test = max(1, int(round(TEST_FRACTION * len(ids)))) if len(ids) > 1 else 0
        return {ids[k] for k in order[:n_test]}

    def scan(self, category: str, split: str) -> tuple[list[Sample], list[str]]:
        if self.exported:
            return self.scan_exported(split)
        test_cases = self.test_cases()
        index, problems = self.slice_index()
        found = []
        for case, flair in self.cases.items():
            if case not in index or (case in test_cases) != (split == "test"):
                continue
            seg = seg_path(flair)
            for z, label in index[case]:
                if split == "train" and label:
                    continue
                found.append(Sample(f"{flair}#z={z}", label, f"{seg}#z={z}" if label else None,
                                    "tumour" if label else "good"))
        return found, problems

    def slice_index(self) -> tuple[dict[str, list[tuple[int, int]]], list[str]]:
        """{case: [(z, label)]} for every readable case, with the problems of the others."""
        cache_file = cache_dir() / "brats2021" / (hashlib.sha256(str(self.root).encode()).hexdigest()[:16] + ".json")
        try:
            cached = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cached = {}
        index, problems, changed = {}, [], False
        for case, flair in self.cases.items():
            seg = seg_path(flair)
            if not seg.is_file():
                problems.append(f"no segmentation for {flair}: expected {seg}")
                continue
            key = [f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (flair, seg)]
            entry = cached.get(case)
            if entry and entry.get("key") == key:
                index[case] = [tuple(s) for s in entry["slices"]]
                continue
            try:
                slices = select_slices(read_volume(flair), read_volume(seg))
            except DatasetError as err:
                problems.append(f"case {case}: {err}")
                continue
            index[case] = slices
            cached[case] = {"key": key, "slices": slices}
            changed = True
        if changed:
            try:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(cached))
                tmp.replace(cache_file)
            except OSError:
                pass  # an unwritable cache only costs time
        return index, problems

    def scan_exported(self, split: str) -> tuple[list[Sample], list[str]]:
        if split == "train":
            return [Sample(str(p), 0) for p in list_images(self.root / "train" / "normal")], []
        test = self.root / "test"
        if not test.is_dir():
            return [], [f"{test} does not exist (expected layout: {self.layout})"]
        found, problems = [], []
        for folder in sorted(p for p in test.iterdir() if p.is_dir()):
            for image in list_images(folder):
                if folder.name == "normal":
                    found.append(Sample(str(image), 0))
                    continue
                truth = self.root / "ground_truth"
                mask = find_same_stem(truth, Path(image.name.replace("flair", "seg"))) or find_same_stem(truth, image)
                if mask is None:
                    problems.append(f"no mask for anomalous image {image}: expected "
                                    f"{truth / image.name.replace('flair', 'seg')}")
                else:
                    found.append(Sample(str(image), 1, str(mask), folder.name))
        return found, problems

    def load_image(self, sample: Sample, size: int | None) -> torch.Tensor:
        if self.exported:
            return super().load_image(sample, size)
        path, z = parse_address(sample.image)
        gray = axial(normalized_flair(path), z).astype(np.float32)
        return image_tensor(np.repeat(gray[..., None], 3, axis=2), size)

    def load_mask(self, sample: Sample, size: int | None) -> torch.Tensor:
        if self.exported:
            return super().load_mask(sample, size)
        path, z = parse_address(sample.mask)
        return mask_tensor(axial(tumour_volume(path), z), size)

    def image_dimensions(self, sample: Sample) -> tuple[int, int]:
        if self.exported:
            return read_image_size(sample.image)
        return slice_dimensions(parse_address(sample.image)[0])

    def mask_dimensions(self, sample: Sample) -> tuple[int, int]:
        if self.exported:
            return read_image_size(sample.mask)
        return slice_dimensions(parse_address(sample.mask)[0])

    def foreground_mask(self, sample: Sample) -> Path | None:
        if not self.exported or sample.label != 0 or Path(sample.image).parent.parent.name != "train":
            return None
        return find_same_stem(self.root / "train" / "foreground_mask", Path(sample.image))


def export_slices(root, out) -> Path:
    """Writes the selected slices of the NIfTI tree at `root` as 8-bit PNGs in the exported layout
    (layout 2 of the module docstring) under `out`, keeping the patient split; returns `out`."""
    from PIL import Image

    fmt = BraTS2021(root)
    if fmt.exported:
        raise DatasetError(f"{fmt.root} already holds exported slices")
    out = Path(out).expanduser().resolve()
    for split in ("train", "test"):
        for sample in fmt.samples(BRATS_CATEGORY, split):
            path, z = parse_address(sample.image)
            name = f"{Path(path).name.split('.nii')[0]}_{z}.png"
            folder = out / split / ("anomaly" if sample.label else "normal")
            folder.mkdir(parents=True, exist_ok=True)
            gray = axial(normalized_flair(path), z).astype(np.float32)
            Image.fromarray(np.round(gray * 255).astype(np.uint8)).save(folder / name)
            if sample.label:
                (out / "ground_truth").mkdir(parents=True, exist_ok=True)
                tumour = axial(tumour_volume(parse_address(sample.mask)[0]), z)
                Image.fromarray(tumour.astype(np.uint8) * 255).save(out / "ground_truth" / name.replace("flair", "seg"))
    return out


def seg_path(flair: Path) -> Path:
    return flair.with_name(flair.name.replace("_flair.nii", "_seg.nii"))


def parse_address(address: str) -> tuple[str, int]:
    match = ADDRESS.match(address)
    if match is None:
        raise DatasetError(f"not a NIfTI slice address '<path>#z=<index>': {address!r}")
    return match["path"], int(match["z"])
