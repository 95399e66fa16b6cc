"""PatchGuard adversarial training steps in bf16 against fp32: step time and the loss curves side by side.

The issue's training target: one optimizer step of the `paper` preset (PGD-10 on 16 normal + 16
pseudo-anomalous images, then the loss of the four batches and AdamW) in bf16 autocast, with the
same losses as fp32 to within bf16 noise over a few hundred steps. For each precision this script
builds the same PatchGuard (same seed, so the same initial weights) on textures/`--category`,
draws the same batches (same generator seed: `methods/patchguard/training_batches.py`, prefetched
by a background thread with `--prefetch`) and runs `--steps` calls of
`adversarial_training.training_step` at the config's learning rate (no schedule: the comparison,
not a fit), recording every step's loss and time. Levers, each an option so that a GPU run can
measure it: `--prefetch` (pseudo anomalies drawn by a thread ahead of the step),
`--compile-attack` (config `train_attack_compile=true`: the training PGD step through
torch.compile), `--compile-blocks` (torch.compile of the ViT blocks and discriminator, as
`fit_time.py --compile blocks`).

It reports per precision the median step time after `--warmup` steps, and between the curves the
mean and largest relative difference of their `--window`-step moving averages, and writes
`train_precision.json` (with both curves) and `train_precision.png` to OUTDIR.

    python benchmarks/train_precision.py OUTDIR --device cuda --profile paper --steps 150
    python benchmarks/train_precision.py OUTDIR --tiny      # CPU smoke run, seconds
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robustad.core.files import write_text_atomic


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_precision(precision: str, args, device: torch.device) -> dict:
    from robustad.datasets import create_dataset
    from robustad.methods import create_method
    from robustad.methods.patchguard.adversarial_training import training_step
    from robustad.methods.patchguard.detector import (build_pseudo_anomaly_generator, generator_config,
                                                      training_images)
    from robustad.methods.patchguard.training_batches import training_batches

    overrides = {"train_precision": precision, "train_attack_compile": args.compile_attack, **args.overrides}
    detector = create_method("patchguard", profile=args.profile, seed=args.seed, **overrides).to(device)
    config = detector.config
    train = create_dataset("textures", category=args.category, split="train", image_size=detector.image_size)
    images = training_images(train, detector.image_size, config.patch_size)
    pseudo = build_pseudo_anomaly_generator(generator_config(config, train))
    pseudo.prepare(images)
    if args.compile_blocks:
        for block in detector.net.vit.blocks:
            block.compile()
        detector.net.head.compile()
    optimizer = torch.optim.AdamW(detector.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    batch_size = min(config.batch_size, len(images))
    epochs = -(-(args.warmup + args.steps) // max(1, len(images) // batch_size))
    losses, seconds = [], []
    batches = training_batches(images, pseudo, generator, batch_size, epochs, prefetch=args.prefetch)
    synchronize(device)
    last = time.perf_counter()
    for step, batch in enumerate(batches):
        if step == args.warmup + args.steps:
            break
        normal = batch.normal.to(device, non_blocking=True)
        anomalous = batch.anomalous.to(device, non_blocking=True).float()
        masks = batch.masks.to(device, non_blocking=True).float()
        losses.append(training_step(detector, optimizer, normal, anomalous, masks))  # float(): syncs
        now = time.perf_counter()
        seconds.append(now - last)  # the whole step, drawing the batch included (what a fit waits for)
        last = now
    timed = seconds[args.warmup:]
    return {"precision": precision, "losses": losses, "step_seconds": seconds,
            "median_step_s": statistics.median(timed) if timed else None,
            "batch": batch_size, "train_steps": config.train_steps, "image_size": config.image_size,
            "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def moving_average(values, window: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def compare_curves(reference, other, window: int) -> dict:
    """Relative differences of the `window`-step moving averages of two loss curves of equal length."""
    a, b = moving_average(reference, window), moving_average(other, window)
    relative = np.abs(b - a) / np.maximum(np.abs(a), 1e-12)
    return {"window": window, "mean_relative_difference": float(relative.mean()),
            "max_relative_difference": float(relative.max()),
            "final_reference": float(a[-1]), "final_other": float(b[-1])}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 4))
    for name, run in result["runs"].items():
        ax.plot(run["losses"], alpha=0.35, label=f"{name} (per step)")
        smooth = moving_average(run["losses"], result["window"])
        ax.plot(np.arange(len(smooth)) + result["window"] - 1, smooth, label=f"{name} ({result['window']}-step mean)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(f"PatchGuard {result['profile']} on {result['device']}: bf16 vs fp32", fontsize=10)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", help="folder for train_precision.json and train_precision.png (created)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", default="paper", help="PatchGuard profile (default: paper)")
    parser.add_argument("--category", default="brick", help="textures category (default: brick)")
    parser.add_argument("--steps", type=int, default=150, help="timed and compared steps per precision (default 150)")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing (default 3)")
    parser.add_argument("--window", type=int, default=20, help="moving-average window of the comparison (default 20)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list (default fp32,bf16; the first is the "
                        "reference)")
    parser.add_argument("--prefetch", action="store_true", help="draw the batches in a background thread")
    parser.add_argument("--compile-attack", action="store_true", help="config train_attack_compile=true")
    parser.add_argument("--compile-blocks", action="store_true", help="torch.compile the ViT blocks and head")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="PatchGuard config overrides")
    parser.add_argument("--tiny", action="store_true", help="quick profile at 32 px, PGD-2, 6 steps (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        args.overrides[key] = value
    if args.tiny:
        args.profile, args.steps, args.warmup, args.window = "quick", 6, 1, 3
        args.overrides = {"image_size": "32", "train_steps": "2", "batch_size": "4", **args.overrides}
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        parser.error(f"--precisions {args.precisions!r}: expected a comma list of fp32, bf16")
    args.precisions = precisions
    if args.steps < 2 or args.warmup < 0:
        parser.error("--steps must be at least 2 and --warmup at least 0")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    runs = {}
    for precision in args.precisions:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        runs[precision] = run_precision(precision, args, device)
        print(f"{precision}: median step {runs[precision]['median_step_s']:.4f} s, final loss "
              f"{runs[precision]['losses'][-1]:.4f}", file=sys.stderr, flush=True)
    reference = args.precisions[0]
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "profile": args.profile, "overrides": args.overrides,
        "steps": args.steps, "warmup": args.warmup, "window": args.window,
        "levers": {"prefetch": args.prefetch, "compile_attack": args.compile_attack,
                   "compile_blocks": args.compile_blocks},
        "runs": runs,
        "median_step_s": {name: run["median_step_s"] for name, run in runs.items()},
        "curve_differences": {name: compare_curves(runs[reference]["losses"], run["losses"], args.window)
                              for name, run in runs.items() if name != reference},
    }
    if "fp32" in runs and "bf16" in runs:
        result["bf16_speedup"] = runs["fp32"]["median_step_s"] / runs["bf16"]["median_step_s"]
    write_text_atomic(outdir / "train_precision.json", json.dumps(result, indent=1))
    plot(result, outdir / "train_precision.png")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    return result


if __name__ == "__main__":
    main()
