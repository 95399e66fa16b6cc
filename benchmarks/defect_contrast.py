"""How much of each `textures` defect survives an ε-bounded attacker, at a given image size (not a test).

python benchmarks/defect_contrast.py --category brick --sizes 64,128 [--eps 8/255]
python benchmarks/defect_contrast.py --category brick --pseudo [--set anomaly_min_change=16/255]

The built-in dataset keeps each defective test image's defect-free source crop, so the change a
defect makes is known exactly. After resizing image and source the way the loader does (bilinear,
antialiased; masks nearest-neighbour), this prints per defect kind: the share of defect pixels that
differ from the source by more than ε in some channel, their median change, and the share of
anomalous patches (the detector's grid: `--grid`, 8 in the quick PatchGuard) where under 5% of the
pixels changed by more than ε (over the images with an anomalous patch at that grid). An L∞ attacker
with budget ε can undo any change of at most ε, so a defect that lies mostly within ε of its normal
source cannot be localized robustly by any detector; this bounds what "keeps its clean AUROC under
attack" can mean at that size.

`--pseudo` asks the same of the quick PatchGuard's training pseudo anomalies (its generator at its
image size, `--set` overriding its config as `bench run --config`): the share of anomalous patches
in which no pixel, or under 5% of the pixels, changed by more than ε and by more than 2ε. A pseudo-anomaly
patch within 2ε of its source (which the normal batch labels normal) cannot be told apart from it
under attack by any model: for adversarial training it is a wrong label.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from robustad.attacks.threat_model import parse_eps
from robustad.datasets.image_io import mask_tensor
from robustad.datasets.textures import TEXTURE_PHOTOS, render_category


def as_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W[, C]) uint8 -> (1, C, size, size) float in [0, 1], resized like the dataset loader."""
    x = torch.from_numpy(np.ascontiguousarray(image)).float() / 255
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x[None]


def defect_contrast(category: str, size: int, eps: float, grid: int) -> dict:
    """Per defect kind: share of defect pixels changed by > ε and > 2ε, median change (/255), fragile patches.

    A patch is fragile at a bound when under 5% of its pixels changed by more than it: within ε the
    attacker undoes the defect; within 2ε it can make the defect and its normal source meet.
    """
    per_kind: dict[str, list[dict]] = {}
    for item in render_category(category):
        if item.mask is None:
            continue
        kind = item.relpath.split("/")[2]
        change = (as_tensor(item.image, size) - as_tensor(item.source, size)).abs().amax(1)[0]
        mask = mask_tensor(item.mask, size)[0] > 0.5
        if not bool(mask.any()):
            continue
        cell = size // grid
        anomalous = F.avg_pool2d(mask.float()[None, None], cell)[0, 0] > 0.05
        row = {"median_change_255": float(change[mask].median()) * 255}
        for name, bound in (("", eps), ("_2eps", 2 * eps)):
            beyond = (change > bound) & mask
            changed = F.avg_pool2d(beyond.float()[None, None], cell)[0, 0]
            row[f"pixels_beyond{name or '_eps'}"] = float(beyond[mask].float().mean())
            row[f"fragile_patches{name}"] = float((changed[anomalous] < 0.05).float().mean()) if bool(anomalous.any()) else None
        per_kind.setdefault(kind, []).append(row)

    def mean(values: list[dict], key: str, digits: int) -> float:
        present = [v[key] for v in values if v[key] is not None]
        return round(float(np.mean(present or [0.0])), digits)

    keys = ("pixels_beyond_eps", "pixels_beyond_2eps", "median_change_255", "fragile_patches", "fragile_patches_2eps")
    return {kind: {**{key: mean(values, key, 1 if key == "median_change_255" else 3) for key in keys},
                   "images": len(values)}
            for kind, values in per_kind.items()}


def pseudo_anomaly_contrast(category: str, eps: float, overrides: dict, draws: int = 10, seed: int = 0) -> dict:
    """Shares of the quick PatchGuard's pseudo-anomaly patches (5% rule) whose pixels barely changed.

    For each of `draws` pseudo anomalies of every training image of the `textures` category:
    "no_pixel_beyond_*" counts anomalous patches with no pixel changed by more than ε (2ε) in any
    channel, "under_5pct_beyond_*" those with fewer than 5% of their pixels changed that much;
    "median_change" is the median over the masks' pixels of the largest channel change (×255), to
    compare with the test defects' median |Δ|.
    """
    from robustad.datasets import create_dataset
    from robustad.methods import create_method
    from robustad.methods.patchguard.adversarial_training import patch_labels
    from robustad.methods.patchguard.detector import build_pseudo_anomaly_generator, generator_config, training_images

    config = create_method("patchguard", profile="quick", **overrides).config
    train = create_dataset("textures", category=category, split="train", image_size=config.image_size)
    images = training_images(train, config.image_size, config.patch_size)
    generator = build_pseudo_anomaly_generator(generator_config(config, train))
    generator.prepare(images)
    random = torch.Generator().manual_seed(seed)
    counts: dict[str, list[torch.Tensor]] = {}
    for _ in range(draws):
        anomalous, masks = generator(images, torch.arange(len(images)), random)
        labels = patch_labels(masks.float(), config.grid_size) > 0.5
        change = (anomalous.float() - images).abs().amax(1, keepdim=True)
        counts.setdefault("mask_change", []).append(change[masks.bool()])
        for name, bound in (("eps", eps), ("2eps", 2 * eps)):
            share = F.avg_pool2d((change > bound).float(), config.patch_size)[:, 0][labels]
            counts.setdefault(f"no_pixel_beyond_{name}", []).append(share == 0)
            counts.setdefault(f"under_5pct_beyond_{name}", []).append(share < 0.05)
    mask_change = torch.cat(counts.pop("mask_change"))
    result = {key: round(float(torch.cat(values).float().mean()), 3) for key, values in counts.items()}
    result["median_change"] = round(255 * float(mask_change.median()), 1)
    result["anomalous_patches"] = int(sum(len(v) for v in counts["no_pixel_beyond_eps"]))
    result["image_size"], result["grid"] = config.image_size, config.grid_size
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--category", default="brick", choices=TEXTURE_PHOTOS)
    parser.add_argument("--sizes", default="64,128", help="image sizes, comma-separated (default: 64,128)")
    parser.add_argument("--eps", type=parse_eps, default=8 / 255, help="L∞ budget, e.g. 8/255")
    parser.add_argument("--grid", type=int, default=8, help="patches per side of the detector (default: 8)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--pseudo", action="store_true",
                        help="measure the quick PatchGuard's training pseudo anomalies instead of the test defects")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="with --pseudo: PatchGuard config overrides, e.g. anomaly_min_change=16/255")
    parser.add_argument("--draws", type=int, default=10, help="with --pseudo: pseudo anomalies per training image")
    args = parser.parse_args(argv)
    if args.pseudo:
        bad = [item for item in args.set if "=" not in item]
        if bad:
            parser.error(f"--set {bad[0]!r}: expected KEY=VALUE")
        result = pseudo_anomaly_contrast(args.category, args.eps, dict(item.split("=", 1) for item in args.set),
                                         args.draws)
        print(json.dumps({"category": args.category, "eps": args.eps, "set": args.set, **result}))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        if size % args.grid:
            parser.error(f"--sizes: {size} is not a multiple of --grid {args.grid}")
    result = {size: defect_contrast(args.category, size, args.eps, args.grid) for size in sizes}
    if args.json:
        print(json.dumps({"category": args.category, "eps": args.eps, "grid": args.grid, "sizes": result}))
        return
    print(f"{args.category}, ε = {args.eps * 255:.1f}/255, {args.grid}×{args.grid} patches")
    print(f"{'size':>5} {'defect':<9} {'pixels > ε':>10} {'pixels > 2ε':>11} {'median |Δ|':>11} "
          f"{'patches < 5% > ε':>17} {'patches < 5% > 2ε':>18}")
    for size, kinds in result.items():
        for kind, row in kinds.items():
            print(f"{size:>5} {kind:<9} {row['pixels_beyond_eps']:>10.2f} {row['pixels_beyond_2eps']:>11.2f} "
                  f"{row['median_change_255']:>9.1f}/255 {row['fragile_patches']:>17.2f} {row['fragile_patches_2eps']:>18.2f}")


if __name__ == "__main__":
    main()
