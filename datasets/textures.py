"""`textures`: the built-in offline dataset, real photographs with synthetic surface defects.

The photographs ship inside scikit-image (public domain / CC0, no download): `brick`, `grass`,
`gravel` (512×512 grey) and `immunohistochemistry` (512×512 colour), `hubble_deep_field`
(872×1000 colour). Each category is one photograph:

- the photo is cut into three vertical bands; normal **train** crops come from the outer two,
  every **test** crop from the middle one, so no train pixel is ever a test pixel. Each crop is
  `crop_size` = 128 px at a random position in its band, flipped at random (horizontal and
  vertical, p = 0.5 each);
- **test anomalies** are test-band crops with one synthetic defect each
  (`robustad.datasets.surface_defects`: scratch, hole, stain, foreign texture, crack; not any
  method's pseudo-anomaly generator), with the exact mask of the changed pixels.

Defaults per category: 64 train, 24 normal test and 5 defective test images per defect kind
(25), sized for a 2-core CPU. The tree is generated once, deterministically from `seed`, in
MVTec AD layout (`robustad.datasets.mvtec`) into
`${ROBUSTAD_CACHE:-~/.cache/robustad}/textures-v1-seed<seed>/` (or into `--root DIR`), through a
temporary sibling folder renamed into place when complete, with a `manifest.json` (version,
seed, counts, scikit-image version, sha256 of every file). A later call reuses it; a folder
without a complete manifest is never read.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from robustad.core.files import file_sha256
from robustad.datasets.image_io import DatasetError
from robustad.datasets.mvtec import MVTecLayout
from robustad.datasets.registry import register_dataset
from robustad.datasets.surface_defects import DEFECT_KINDS, apply_defect
from robustad.core.cache import cache_root

TEXTURES_VERSION = 1
TEXTURE_PHOTOS = ("brick", "grass", "gravel", "immunohistochemistry", "hubble_deep_field")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TextureCounts:
    """Images per category: `n_train` normal train, `n_test_good` normal test, and
    `n_defects_per_kind` defective test images for each kind in `DEFECT_KINDS`."""

    n_train: int = 64
    n_test_good: int = 24
    n_defects_per_kind: int = 5
    crop_size: int = 128

    def __post_init__(self):
        for name, value in asdict(self).items():
            least = 64 if name == "crop_size" else 1  # defects keep a 20 px margin and need room
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"textures: {name} must be an integer >= {least}, got {value!r}")


@dataclass(frozen=True)
class GeneratedImage:
    """One image of the tree, in memory: `relpath` under the root, `image` (H, W, C) uint8,
    `mask` (H, W) bool or None for normal images, `source` the defect-free crop (None if normal)."""

    relpath: str
    image: np.ndarray
    mask: np.ndarray | None = None
    source: np.ndarray | None = None


def load_photo(name: str) -> np.ndarray:
    """The scikit-image photograph `name` as uint8 (H, W, C), C = 1 for grey, 3 for colour."""
    if name not in TEXTURE_PHOTOS:
        raise DatasetError(f"textures: unknown category {name!r}; expected one of {', '.join(TEXTURE_PHOTOS)}")
    import skimage.data

    try:
        photo = np.asarray(getattr(skimage.data, name)())
    except Exception as err:  # a stripped scikit-image install would try to download it
        raise DatasetError(
            f"textures: scikit-image could not load its bundled photo {name!r} ({err}); the built-in dataset "
            f"needs a complete scikit-image install (pip install scikit-image), or use --dataset mvtec --root DIR"
        ) from None
    photo = photo[..., None] if photo.ndim == 2 else photo[..., :3]
    return photo.astype(np.uint8)


def band_boxes(width: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Column ranges [start, stop) of the train bands (outer two thirds) and the test band (middle)."""
    third = width // 3
    return [(0, third), (width - third, width)], (third, width - third)


def random_crop(rng: np.random.Generator, photo: np.ndarray, columns: tuple[int, int], size: int) -> np.ndarray:
    """A `size` crop lying inside the column range `columns`, randomly flipped."""
    start, stop = columns
    if stop - start < size or photo.shape[0] < size:
        raise DatasetError(f"textures: a {size} px crop does not fit a {stop - start}×{photo.shape[0]} px band; "
                           f"use a smaller crop_size")
    x = int(rng.integers(start, stop - size + 1))
    y = int(rng.integers(0, photo.shape[0] - size + 1))
    crop = photo[y : y + size, x : x + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    return np.ascontiguousarray(crop)


def category_rng(seed: int, category: str, part: str) -> np.random.Generator:
    """An independent generator per (seed, category, part), so counts in one part never shift another."""
    key = [TEXTURE_PHOTOS.index(category), ["train", "good", *DEFECT_KINDS].index(part)]
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def render_category(category: str, seed: int = 0, counts: TextureCounts = TextureCounts(),
                    photos: dict[str, np.ndarray] | None = None) -> Iterator[GeneratedImage]:
    """Every image of one category, in memory, deterministically from `seed`.

    `photos` maps category names to their photographs (loaded when missing); defects of kind
    `foreign` take their texture from another category's photo.
    """
    photos = photos if photos is not None else {}
    for name in TEXTURE_PHOTOS:
        if name not in photos:
            photos[name] = load_photo(name)
    photo = photos[category]
    train_bands, test_band = band_boxes(photo.shape[1])
    size = counts.crop_size

    rng = category_rng(seed, category, "train")
    for i in range(counts.n_train):
        band = train_bands[int(rng.integers(len(train_bands)))]
        yield GeneratedImage(f"{category}/train/good/{i:03d}.png", random_crop(rng, photo, band, size))
    rng = category_rng(seed, category, "good")
    for i in range(counts.n_test_good):
        yield GeneratedImage(f"{category}/test/good/{i:03d}.png", random_crop(rng, photo, test_band, size))
    others = [name for name in TEXTURE_PHOTOS if name != category]
    for kind in DEFECT_KINDS:
        rng = category_rng(seed, category, kind)
        for i in range(counts.n_defects_per_kind):
            source = random_crop(rng, photo, test_band, size)
            donor = photos[others[int(rng.integers(len(others)))]]
            image, mask = apply_defect(kind, source, rng, donor)
            yield GeneratedImage(f"{category}/test/{kind}/{i:03d}.png", image, mask, source)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array).save(path, optimize=False)


def sha256(path: Path) -> str:
    return file_sha256(path)


def default_textures_root(seed: int = 0) -> Path:
    """`${ROBUSTAD_CACHE:-~/.cache/robustad}/textures-v<version>-seed<seed>`."""
    return cache_root() / f"textures-v{TEXTURES_VERSION}-seed{seed}"


def read_manifest(root: Path) -> dict | None:
    """The manifest of a complete tree at `root`, or None if there is none (or it is unreadable)."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all((root / name).is_file() for name in files):
        return None
    return manifest


def generate_textures(root=None, seed: int = 0, n_train: int = 64, n_test_good: int = 24,
                      n_defects_per_kind: int = 5, crop_size: int = 128,
                      categories: tuple[str, ...] = TEXTURE_PHOTOS) -> Path:
    """Generates the `textures` tree at `root` (default `default_textures_root(seed)`) and returns it.

    Reuses a complete tree made with the same version, seed, counts and categories. The tree is
    written into a temporary sibling folder and renamed into place, so a crash never leaves a
    folder that looks complete. `root` may be an empty folder; a non-empty folder without a
    matching manifest is an error (it is never overwritten).
    """
    counts = TextureCounts(n_train, n_test_good, n_defects_per_kind, crop_size)
    unknown = [c for c in categories if c not in TEXTURE_PHOTOS]
    if unknown or not categories:
        raise DatasetError(f"textures: unknown categories {unknown}; expected some of {', '.join(TEXTURE_PHOTOS)}")
    root = Path(root).expanduser().resolve() if root is not None else default_textures_root(seed)
    wanted = {"version": TEXTURES_VERSION, "seed": seed, "counts": asdict(counts), "categories": list(categories)}

    manifest = read_manifest(root) if root.is_dir() else None
    if manifest is not None:
        if {k: manifest.get(k) for k in wanted} != wanted:
            raise DatasetError(f"textures: {root} holds a tree made with different settings "
                               f"({ {k: manifest.get(k) for k in wanted} }, asked for {wanted}); use another --root")
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"textures: {root} exists but holds no complete textures tree ({MANIFEST} missing "
                           f"or incomplete); delete it or choose another --root")

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the finished tree is an ordinary shared folder
    try:
        import skimage

        photos = {name: load_photo(name) for name in TEXTURE_PHOTOS}
        files: dict[str, str] = {}
        for category in categories:
            for item in render_category(category, seed, counts, photos):
                write_png(staging / item.relpath, item.image)
                files[item.relpath] = sha256(staging / item.relpath)
                if item.mask is not None:
                    kind = Path(item.relpath).parent.name
                    mask_path = f"{category}/ground_truth/{kind}/{Path(item.relpath).stem}_mask.png"
                    write_png(staging / mask_path, item.mask.astype(np.uint8) * 255)
                    files[mask_path] = sha256(staging / mask_path)
        manifest = {**wanted, "defect_kinds": list(DEFECT_KINDS), "skimage_version": skimage.__version__,
                    "files": dict(sorted(files.items()))}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        try:
            if root.is_dir():
                root.rmdir()  # an empty folder the user named with --root; rename cannot replace it everywhere
            staging.rename(root)
        except OSError:
            if read_manifest(root) is None:  # not another process finishing the same tree first
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


@register_dataset("textures")
class Textures(MVTecLayout):
    """Built-in offline dataset: scikit-image texture photos with synthetic surface defects (MVTec layout)."""

    name = "textures"
    known_categories = TEXTURE_PHOTOS
    default_root = None  # generated on first use under default_textures_root()
    whole_image_foreground = True  # every category is a texture: the foreground is the whole image

    def __init__(self, root=None):
        if root is None:
            super().__init__(generate_textures())  # the built-in tree, made once in the cache
        elif read_manifest(Path(root).expanduser()) is not None:
            super().__init__(root)  # a complete tree, whatever seed and counts made it
        else:  # never generate a whole tree where a mistyped --root points
            raise DatasetError(f"textures: no complete textures tree at {Path(root).expanduser().resolve()}; leave out "
                               f"--root to use the built-in one (made once under the cache), or make one there with "
                               f"`bench data download textures --root {root}`")
