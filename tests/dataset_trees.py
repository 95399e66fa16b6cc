"""Tiny dataset trees in each benchmark dataset's real layout, file formats and naming, for the
loader tests: BMP images with PNG masks (BTAD), upper-case .JPG with class-id masks and a split
CSV (VisA), NIfTI volumes (BraTS2021), labels.csv (Head-CT), PatchGuard's foreground_mask folders.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from tests.synthetic import defect, texture

SIZE = 32


def _save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_mvtec_like(root: Path, categories, *, normal="good", defect_name="bad", image_ext=".png",
                     mask_ext=".png", mask_suffix="_mask", n_train=4, n_good=2, n_bad=2, foreground=False,
                     seed=0) -> Path:
    """<root>/<category>/{train/<normal>, test/<normal>, test/<defect>, ground_truth/<defect>}."""
    rng = np.random.default_rng(seed)
    for category in categories:
        base = Path(root) / category
        for i in range(n_train):
            _save(texture(rng, SIZE), base / "train" / normal / f"{i:03d}{image_ext}")
            if foreground:
                _save(np.full((SIZE, SIZE), 255, np.uint8), base / "train" / "foreground_mask" / f"{i:03d}{image_ext}")
        for i in range(n_good):
            _save(texture(rng, SIZE), base / "test" / normal / f"{i:03d}{image_ext}")
        for i in range(n_bad):
            image, mask = defect(rng, texture(rng, SIZE))
            _save(image, base / "test" / defect_name / f"{i:03d}{image_ext}")
            _save(mask, base / "ground_truth" / defect_name / f"{i:03d}{mask_suffix}{mask_ext}")
    return Path(root)


def write_btad(root: Path, seed=0) -> Path:
    """BTAD as unpacked from btad.zip: BTech_Dataset_transformed/{01,02,03}; 01 BMP images with
    PNG masks, 02 PNG with PNG, 03 BMP with BMP; normal folder "ok", anomalies "ko"."""
    formats = {"01": (".bmp", ".png"), "02": (".png", ".png"), "03": (".bmp", ".bmp")}
    base = Path(root) / "BTech_Dataset_transformed"
    for k, (category, (image_ext, mask_ext)) in enumerate(formats.items()):
        write_mvtec_like(base, [category], normal="ok", defect_name="ko", image_ext=image_ext, mask_ext=mask_ext,
                         mask_suffix="", foreground=category == "01", seed=seed + k)
    return Path(root)


def write_visa_released(root: Path, categories=("candle", "pcb1"), n_train=4, n_test_normal=2, n_bad=2, seed=0) -> Path:
    """VisA as released: <category>/Data/Images/{Normal,Anomaly}/*.JPG, Data/Masks/Anomaly/*.png
    (class ids 1, 2 in the first category, 0/255 in the others) and split_csv/1cls.csv."""
    rng = np.random.default_rng(seed)
    rows = [("object", "split", "label", "image", "mask")]
    for c, category in enumerate(categories):
        data = Path(root) / category / "Data"
        for i in range(n_train + n_test_normal):
            name = f"{i:04d}.JPG"
            _save(texture(rng, SIZE), data / "Images" / "Normal" / name)
            split = "train" if i < n_train else "test"
            if split == "train":
                _save(np.full((SIZE, SIZE), 255, np.uint8), data / "Images" / "foreground_mask" / name)
            rows.append((category, split, "normal", f"{category}/Data/Images/Normal/{name}", ""))
        for i in range(n_bad):
            image, mask = defect(rng, texture(rng, SIZE))
            if c == 0:
                mask = np.where(mask > 0, 1 + i % 2, 0).astype(np.uint8)  # class ids
            _save(image, data / "Images" / "Anomaly" / f"{i:03d}.JPG")
            _save(mask, data / "Masks" / "Anomaly" / f"{i:03d}.png")
            rows.append((category, "test", "anomaly", f"{category}/Data/Images/Anomaly/{i:03d}.JPG",
                         f"{category}/Data/Masks/Anomaly/{i:03d}.png"))
    split_csv = Path(root) / "split_csv" / "1cls.csv"
    split_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(split_csv, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return Path(root)


def write_visa_converted(root: Path, categories=("candle",), seed=0) -> Path:
    """VisA converted by spot-diff's prepare_data.py: visa_pytorch/1cls/<category>/..., masks with
    the image stem and .png, images .JPG."""
    write_mvtec_like(Path(root) / "visa_pytorch" / "1cls", categories, image_ext=".JPG", mask_suffix="", seed=seed)
    return Path(root)


def brain_volume(rng, shape=(SIZE, SIZE, 10), brain_slices=range(2, 9)) -> np.ndarray:
    """A skull-stripped FLAIR-like int16 volume: a bright disk in `brain_slices`, zero elsewhere."""
    x, y = np.mgrid[: shape[0], : shape[1]]
    disk = (x - shape[0] / 2) ** 2 + (y - shape[1] / 2) ** 2 < (shape[0] * 0.35) ** 2
    volume = np.zeros(shape, np.int16)
    for z in brain_slices:
        volume[:, :, z] = np.where(disk, rng.integers(800, 1200, shape[:2]), 0)
    return volume


def write_brats_nifti(root: Path, n_cases=5, seed=0) -> dict:
    """<root>/BraTS2021_0000k/BraTS2021_0000k_{flair,seg}.nii.gz, 32×32×10 volumes. Even cases
    have a tumour in slices 4–5 (FLAIR brightened there); slices 0–1 and 9 hold no brain. Returns
    {case: set of tumour slices}."""
    import nibabel

    rng = np.random.default_rng(seed)
    tumours = {}
    for k in range(n_cases):
        case = f"BraTS2021_{k:05d}"
        flair = brain_volume(rng)
        seg = np.zeros(flair.shape, np.uint8)
        tumours[case] = set()
        if k % 2 == 0:
            seg[12:20, 8:14, 4:6] = 2
            seg[14:16, 10:12, 4:6] = 4
            flair[seg > 0] = 3000
            tumours[case] = {4, 5}
        folder = Path(root) / case
        folder.mkdir(parents=True, exist_ok=True)
        nibabel.save(nibabel.Nifti1Image(flair, np.eye(4)), folder / f"{case}_flair.nii.gz")
        nibabel.save(nibabel.Nifti1Image(seg, np.eye(4)), folder / f"{case}_seg.nii.gz")
    return tumours


def write_brats_exported(root: Path, n_train=4, n_normal=2, n_bad=2, seed=0) -> Path:
    """PatchGuard's exported slices: train/normal, test/normal, test/anomaly, ground_truth/<flair→seg>."""
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        _save(texture(rng, SIZE)[..., 0], Path(root) / "train" / "normal" / f"BraTS2021_{i:05d}_flair_60.png")
        _save(np.full((SIZE, SIZE), 255, np.uint8), Path(root) / "train" / "foreground_mask" / f"BraTS2021_{i:05d}_flair_60.png")
    for i in range(n_normal):
        _save(texture(rng, SIZE)[..., 0], Path(root) / "test" / "normal" / f"BraTS2021_{10 + i:05d}_flair_60.png")
    for i in range(n_bad):
        image, mask = defect(rng, texture(rng, SIZE))
        _save(image[..., 0], Path(root) / "test" / "anomaly" / f"BraTS2021_{20 + i:05d}_flair_70.png")
        _save(mask, Path(root) / "ground_truth" / f"BraTS2021_{20 + i:05d}_seg_70.png")
    return Path(root)


def write_headct(root: Path, n_normal=8, n_hemorrhage=8, seed=0) -> Path:
    """Head-CT as released on Kaggle: labels.csv ("id, hemorrhage", hemorrhage first) and
    head_ct/head_ct/000.png…, grayscale PNGs of varying size."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "head_ct" / "head_ct"
    lines = ["id, hemorrhage"]
    for ident in range(n_normal + n_hemorrhage):
        label = 1 if ident < n_hemorrhage else 0
        size = SIZE + 4 * (ident % 3)
        _save(texture(rng, size)[..., 0], folder / f"{ident:03d}.png")
        lines.append(f"{ident},{label}")
    (Path(root) / "labels.csv").write_text("\n".join(lines) + "\n")
    return Path(root)
