"""`bench data info`: what a dataset tree holds and every problem found in it.

`dataset_info(name, root)` returns

    {"dataset": name, "root": "/abs/root", "has_masks": bool,
     "missing_categories": [known categories absent from the tree],
     "problems": [tree-level problems],
     "categories": {"<name>": {"train": n, "test_normal": n, "test_anomalous": n, "masks": n,
                               "foreground_masks": n, "image_sizes": {"WxH": n, ...},
                               "problems": ["...", ...]}}}

Counts are those a run would use (an anomalous image without its mask is a problem and is not
counted). Every image and mask is decoded in full, as a run would (`decode_check.py`, cached per
tree): a truncated or unreadable file, an image under 16 px or a mask of another size than its
image is a problem;
`masks` counts the anomalous test images with a mask (0 for datasets without masks, such as
Head-CT, where `has_masks` is False). A wrong root raises DatasetError.
"""
from __future__ import annotations

from collections import Counter

from tabulate import tabulate

from robustad.datasets.anomaly_dataset import DatasetFormat
from robustad.datasets.decode_check import decode_problems
from robustad.datasets.image_io import DatasetError
from robustad.datasets.registry import open_format


def dataset_info(name: str, root) -> dict:
    """Per category: counts of train / test normal / test anomalous images and masks, image
    sizes seen, and every problem found (see the module docstring for the structure)."""
    fmt = open_format(name, root)
    categories = fmt.categories()
    info = {
        "dataset": name,
        "root": str(fmt.root),
        "has_masks": fmt.has_masks,
        "missing_categories": [c for c in fmt.known_categories if c not in categories],
        "problems": [],
        "categories": {},
    }
    if not categories:
        info["problems"].append(f"no categories found under {fmt.root} (expected layout: {fmt.layout})")
    for category in categories:
        info["categories"][category] = category_info(fmt, category)
    return info


def category_info(fmt: DatasetFormat, category: str) -> dict:
    train, problems = fmt.scan(category, "train")
    test, test_problems = fmt.scan(category, "test")
    problems = problems + test_problems
    normal = [s for s in test if s.label == 0]
    anomalous = [s for s in test if s.label == 1]
    sizes: Counter = Counter()
    foreground = 0
    problems += decode_problems(fmt, train + test)  # a full decode: truncated files, tiny images, mask sizes
    for sample in train + test:
        try:
            width, height = fmt.image_dimensions(sample)
        except DatasetError:
            continue  # reported by the decode above
        sizes[f"{width}x{height}"] += 1
    for sample in train:
        foreground += fmt.foreground_mask(sample) is not None
    if not train:
        problems.append(f"category {category!r} has no training images (expected layout: {fmt.layout})")
    if not normal:
        problems.append(f"category {category!r} has no normal test images: image AUROC is undefined")
    if not anomalous:
        problems.append(f"category {category!r} has no anomalous test images: image AUROC is undefined")
    return {
        "train": len(train),
        "test_normal": len(normal),
        "test_anomalous": len(anomalous),
        "masks": sum(s.mask is not None for s in anomalous),
        "foreground_masks": foreground,
        "image_sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
        "problems": problems,
    }


def format_dataset_info(info: dict) -> str:
    """A text report of `dataset_info`: one table row per category, then every problem."""
    lines = [f"dataset {info['dataset']} at {info['root']}"]
    rows = []
    for name, cat in info["categories"].items():
        sizes = ", ".join(f"{size} ({n})" if len(cat["image_sizes"]) > 1 else size for size, n in cat["image_sizes"].items())
        rows.append([name, cat["train"], cat["test_normal"], cat["test_anomalous"],
                     cat["masks"] if info["has_masks"] else "–", cat["foreground_masks"], sizes or "–",
                     len(cat["problems"])])
    if rows:
        lines.append(tabulate(rows, headers=["category", "train", "test normal", "test anomalous", "masks",
                                             "fg masks", "image sizes", "problems"]))
    if not info["has_masks"]:
        lines.append("this dataset has no pixel masks: pixel metrics are not available")
    if info["missing_categories"]:
        lines.append(f"known categories not found: {', '.join(info['missing_categories'])}")
    problems = list(info["problems"]) + [f"{name}: {p}" for name, cat in info["categories"].items() for p in cat["problems"]]
    lines.append(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found" + (":" if problems else ""))
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)
