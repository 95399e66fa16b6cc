"""Every image a cell will use decodes, in full, before any training.

A header read passes a truncated PNG, which would fail only when the test split is read, after a
model was trained and saved. `decode_problems` decodes each
image and mask completely, as the loader does, and reports unreadable files, images too small to
be real data (`MIN_IMAGE_SIDE`, or far smaller than the method's input) and masks whose size
differs from their image's. Files found good are remembered per tree, keyed by their size and
modification time, under `<cache>/decoded/`, so a grid decodes each file once.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from robustad.core.cache import cache_root
from robustad.core.files import write_text_atomic
from robustad.datasets.anomaly_dataset import DatasetFormat, Sample
from robustad.datasets.image_io import DatasetError

MIN_IMAGE_SIDE = 16  # pixels: a smaller image is not data of these benchmarks (a 4×4 PNG, a thumbnail)
MAX_UPSAMPLING = 8  # an image more than 8× smaller than the method's input would be mostly invented


def _stamp(address: str) -> list | None:
    """(size, mtime_ns) of the file behind a sample address (a NIfTI slice "vol.nii.gz#z=80" too)."""
    path = address.split("#", 1)[0]
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _cache_file(fmt: DatasetFormat) -> Path:
    key = hashlib.sha256(f"{fmt.name}:{fmt.root}".encode()).hexdigest()[:16]
    return cache_root() / "decoded" / f"{key}.json"


def _load_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def decode_problems(fmt: DatasetFormat, samples: list[Sample], input_size: int | None = None) -> list[str]:
    """One message per image or mask that does not decode or is unusable (empty when all are fine).

    `input_size`: the method's input size, to refuse images more than `MAX_UPSAMPLING` times smaller.
    """
    cache_path = _cache_file(fmt)
    known = _load_cache(cache_path)
    problems, changed = [], False
    for sample in samples:
        files = [sample.image] + ([sample.mask] if sample.mask is not None else [])
        stamps = [_stamp(f) for f in files]
        entry = known.get(sample.image)
        if None not in stamps and isinstance(entry, dict) and entry.get("stamps") == stamps and "size" in entry:
            size = entry["size"]
        else:
            try:
                image = fmt.load_image(sample, None)
                if sample.mask is not None:
                    mask = fmt.load_mask(sample, None)
                    if tuple(mask.shape[1:]) != tuple(image.shape[1:]):
                        problems.append(f"mask {sample.mask} is {mask.shape[2]}x{mask.shape[1]} px but its image "
                                        f"{sample.image} is {image.shape[2]}x{image.shape[1]} px")
                        continue
            except DatasetError as err:
                problems.append(str(err))
                continue
            size = [int(image.shape[2]), int(image.shape[1])]
            if None not in stamps:
                known[sample.image] = {"stamps": stamps, "size": size}
                changed = True
        side = min(size)
        if side < MIN_IMAGE_SIDE:
            problems.append(f"image {sample.image} is {size[0]}x{size[1]} px, smaller than {MIN_IMAGE_SIDE} px: "
                            f"not usable data")
        elif input_size is not None and side * MAX_UPSAMPLING < input_size:
            problems.append(f"image {sample.image} is {size[0]}x{size[1]} px, more than {MAX_UPSAMPLING}x smaller "
                            f"than the method's {input_size} px input")
    if changed:
        try:
            write_text_atomic(cache_path, json.dumps(known))
        except OSError:
            pass  # a read-only cache only costs the next run a decode
    return problems


def check_decodes(dataset, input_size: int | None = None) -> None:
    """Raises DatasetError naming the first problems of an `AnomalyDataset` (see `decode_problems`)."""
    problems = decode_problems(dataset.format, dataset.samples, input_size)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise DatasetError(f"{dataset.format.name}/{dataset.category} {dataset.split} split: {len(problems)} "
                           f"unusable image(s), found before any training: {shown} "
                           f"(`bench data info --dataset {dataset.format.name} --root {dataset.format.root}` lists all)")
