"""How much of each `textures` defect survives an ε-bounded attacker, at a given image size (not a test).

python benchmarks/defect_contrast.py --category brick --sizes 64,128 [--eps 8/255]

The built-in dataset keeps each defective test image's defect-free source crop, so the change a
defect makes is known exactly. After resizing image and source the way the loader does (bilinear,
antialiased; masks nearest-neighbour), this prints per defect kind: the share of defect pixels that
differ from the source by more than ε in some channel, their median change, and the share of
anomalous patches (the detector's grid: `--grid`, 8 in the quick PatchGuard) where under 5% of the
pixels changed by more than ε (over the images with an anomalous patch at that grid). An L∞ attacker
with budget ε can undo any change of at most ε, so a defect that lies mostly within ε of its normal
source cannot be localized robustly by any detector; this bounds what "keeps its clean AUROC under
attack" can mean at that size.
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
    """Per defect kind: share of defect pixels changed by > eps, median change (/255), fragile patches."""
    per_kind: dict[str, list[tuple[float, float, float | None]]] = {}
    for item in render_category(category):
        if item.mask is None:
            continue
        kind = item.relpath.split("/")[2]
        change = (as_tensor(item.image, size) - as_tensor(item.source, size)).abs().amax(1)[0]
        mask = mask_tensor(item.mask, size)[0] > 0.5
        if not bool(mask.any()):
            continue
        beyond = (change > eps) & mask
        cell = size // grid
        anomalous = F.avg_pool2d(mask.float()[None, None], cell)[0, 0] > 0.05
        changed = F.avg_pool2d(beyond.float()[None, None], cell)[0, 0]
        fragile = float((changed[anomalous] < 0.05).float().mean()) if bool(anomalous.any()) else None
        per_kind.setdefault(kind, []).append(
            (float(beyond[mask].float().mean()), float(change[mask].median()) * 255, fragile))
    return {kind: {"pixels_beyond_eps": round(float(np.mean([v[0] for v in values])), 3),
                   "median_change_255": round(float(np.mean([v[1] for v in values])), 1),
                   "fragile_patches": round(float(np.mean([v[2] for v in values if v[2] is not None] or [0.0])), 3),
                   "images": len(values)}
            for kind, values in per_kind.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--category", default="brick", choices=TEXTURE_PHOTOS)
    parser.add_argument("--sizes", default="64,128", help="image sizes, comma-separated (default: 64,128)")
    parser.add_argument("--eps", type=parse_eps, default=8 / 255, help="L∞ budget, e.g. 8/255")
    parser.add_argument("--grid", type=int, default=8, help="patches per side of the detector (default: 8)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        if size % args.grid:
            parser.error(f"--sizes: {size} is not a multiple of --grid {args.grid}")
    result = {size: defect_contrast(args.category, size, args.eps, args.grid) for size in sizes}
    if args.json:
        print(json.dumps({"category": args.category, "eps": args.eps, "grid": args.grid, "sizes": result}))
        return
    print(f"{args.category}, ε = {args.eps * 255:.1f}/255, {args.grid}×{args.grid} patches")
    print(f"{'size':>5} {'defect':<9} {'pixels > ε':>10} {'median |Δ|':>11} {'patches < 5% > ε':>17}")
    for size, kinds in result.items():
        for kind, row in kinds.items():
            print(f"{size:>5} {kind:<9} {row['pixels_beyond_eps']:>10.2f} {row['median_change_255']:>9.1f}/255"
                  f" {row['fragile_patches']:>17.2f}")


if __name__ == "__main__":
    main()
