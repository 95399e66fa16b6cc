"""Seconds per forward and backward pass of PatchGuard's network on one batch, per backbone variant.

One training step of PatchGuard is (train_steps + 1) such passes (the training attack's steps and
the update), so this ratio is the ratio of fit times. Variants are timed in one process, one after
another, on the same random batch; each prints the median of `--repeats` passes after one warm-up.

    OMP_NUM_THREADS=1 python benchmarks/backbone_step_cost.py --profile quick --batch 32
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from robustad.methods import create_method

VARIANTS = {
    "vit": {},
    "resnet50 (resnet_width=64)": {"backbone": "resnet50", "alpha": 0, "backbone_init": "scratch", "resnet_width": 64},
    "resnet50 (resnet_width=16)": {"backbone": "resnet50", "alpha": 0, "backbone_init": "scratch", "resnet_width": 16},
    "unet": {"backbone": "unet", "alpha": 0},
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    out = {}
    for name, overrides in VARIANTS.items():
        detector = create_method("patchguard", profile=args.profile, **overrides).train()
        images = torch.rand(args.batch, 3, detector.image_size, detector.image_size)
        times = []
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            detector(images.requires_grad_(True)).float().sum().backward()
            times.append(time.perf_counter() - start)
        out[name] = round(statistics.median(times[1:]), 3)
        print(json.dumps({"variant": name, "seconds": out[name]}), flush=True)
    print(json.dumps({"profile": args.profile, "batch": args.batch, "threads": torch.get_num_threads(),
                      "seconds": out, "ratio_to_vit": {k: round(v / out["vit"], 1) for k, v in out.items()}}))


if __name__ == "__main__":
    main()
