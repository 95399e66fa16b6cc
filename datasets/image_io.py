"""Reading images and masks from disk into tensors of the shared format.

Images become float RGB tensors in [0, 1], (3, H, W); grayscale images are repeated over the
three channels. 16-bit images are divided by 65535, or by 4095 when no pixel exceeds 4095 (12-bit
CT/MR data stored in 16-bit files, as scanners export it); 32-bit integer and float images are
scaled by their own min–max range. Masks become {0, 1} float tensors (1, H, W); any non-zero value
is anomalous (masks ship as 0/255 or as class ids), except in lossy JPEG masks, where a pixel is
anomalous above 127. An alpha channel never counts as mask.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class DatasetError(ValueError):
    """A dataset tree or file is missing or not what the loader expects."""


def open_image(path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
        return image
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from None


def read_image_size(path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from None


TWELVE_BIT_MAX = 4095.0


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Float RGB array (H, W, 3) in [0, 1]; see the module docstring for >8-bit images."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        is_16_bit = image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535)
        if is_16_bit:
            scale = TWELVE_BIT_MAX if high <= TWELVE_BIT_MAX else 65535.0
        else:
            array = array - low
            scale = max(high - low, 1e-12)
        gray = np.clip(array / scale, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def load_image(path, size: int | None) -> torch.Tensor:
    """(3, size, size) float tensor in [0, 1]; bilinear resize (antialiased)."""
    return image_tensor(to_rgb_array(open_image(path)), size)


def image_tensor(array: np.ndarray, size: int | None) -> torch.Tensor:
    """(H, W, 3) float array in [0, 1] -> (3, size, size) tensor; bilinear resize (antialiased)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1).contiguous()
    if size is not None and tuple(tensor.shape[1:]) != (size, size):
        tensor = torch.nn.functional.interpolate(
            tensor[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0].clamp(0, 1)
    return tensor


def load_mask(path, size: int | None) -> torch.Tensor:
    """(1, size, size) {0, 1} tensor; nearest-neighbour resize after binarizing."""
    image = open_image(path)
    array = np.asarray(image)
    if image.mode in ("RGBA", "LA", "PA"):
        array = array[..., :-1]  # drop the alpha channel
    if array.ndim == 3:
        array = array.max(axis=2)
    threshold = 127 if Path(path).suffix.lower() in (".jpg", ".jpeg") else 0
    return mask_tensor(array > threshold, size)


def mask_tensor(binary: np.ndarray, size: int | None) -> torch.Tensor:
    """(H, W) boolean array -> (1, size, size) {0, 1} float tensor; nearest-neighbour resize."""
    binary = torch.from_numpy(np.ascontiguousarray(binary, dtype=np.float32))[None]
    if size is not None and tuple(binary.shape[1:]) != (size, size):
        binary = torch.nn.functional.interpolate(binary[None], size=(size, size), mode="nearest")[0]
    return binary


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    """Image files in `folder` (any case of extension), sorted by name; hidden files skipped."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
