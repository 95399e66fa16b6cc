"""PGD-1000 on an MVTec-size category: wall time per precision/variant and the adversarial AUROC they give.

The issue's target: PGD-1000 (L∞, ε = 8/255, step 2.5·ε/steps, no random start, last iterate) on
100 images at 224 px of the `paper` PatchGuard in ≤ 30 s on an H200, with an adversarial AUROC
within 0.5 points of fp32. The script runs each `--variants` entry on the same images (textures/
`--category` test set, both classes, exact masks), in one process, at the engine's batch (the
whole set on CUDA, `attacks/batching.py`):

- `fp32`, `bf16`: eager PGD (bf16 = the runner's `--precision bf16` autocast);
- `fp32_compiled`, `bf16_compiled`: `PGD(compile=True)` (`attacks/compiled_step.py`);
- `fp32_graph`, `bf16_graph`: `PGD(cuda_graph=True)` (CUDA only).

Compilation and CUDA-graph capture happen in an untimed PGD-1 on the same batch shapes first
(reported as `warmup_s`). It reports seconds, images·steps/s, the adversarial image and pixel AUROC
of each variant, their difference to `fp32` in points and the fraction of adversarial pixels that
differ from `fp32`'s. Untrained weights (no `--checkpoint`) collapse every AUROC to ~0, so the AUROC
agreement is only informative with a trained checkpoint.

    python benchmarks/pgd_category.py --device cuda --images 100 --steps 1000 --json
    python benchmarks/pgd_category.py --tiny --json      # CPU smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import torch

VARIANTS = ("fp32", "bf16", "fp32_compiled", "bf16_compiled", "fp32_graph", "bf16_graph")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def test_images(category: str, n_images: int, image_size: int, device: torch.device):
    from robustad.datasets import create_dataset

    dataset = create_dataset("textures", category=category, split="test", image_size=image_size)
    step = max(1, len(dataset) // n_images)
    items = [dataset[(i * step) % len(dataset)] for i in range(n_images)]
    images = torch.stack([item["image"] for item in items]).to(device)
    masks = torch.stack([item["mask"] for item in items]).to(device)
    labels = torch.tensor([float(item["label"]) for item in items], device=device)
    return images, masks, labels


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def aurocs(detector, adv, masks, labels, precision, device):
    from robustad.bench.evaluation.metrics import image_auroc, pixel_auroc

    with torch.no_grad(), autocast(device, precision):
        logits = detector(adv).float()
        scores = detector.score(logits).cpu().numpy()
        maps = detector.anomaly_map(logits, adv.shape[-1]).cpu().numpy()
    return image_auroc(labels.cpu().numpy(), scores), pixel_auroc(masks[:, 0].cpu().numpy(), maps)  # in points


def run_variant(name, detector, images, masks, labels, args, device) -> tuple[dict, torch.Tensor]:
    from robustad.attacks import create_attack
    from robustad.attacks.batching import ChunkedAttack
    from robustad.attacks.objectives import AttackObjective

    precision = name.split("_")[0]
    options = {"compile": name.endswith("_compiled"), "cuda_graph": name.endswith("_graph")}
    with torch.no_grad():
        calibration = AttackObjective.build(detector, images, masks, labels).calibration  # the test set's, once

    def attack(steps):
        return ChunkedAttack(create_attack("pgd", eps=args.eps, steps=steps, keep_best=False, **options),
                             max_batch=args.batch)

    with autocast(device, precision):
        synchronize(device)
        start = time.perf_counter()
        attack(1)(detector, images, masks, labels, calibration=calibration)  # compile / capture / allocator
        synchronize(device)
        warmup = time.perf_counter() - start
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        adv = attack(args.steps)(detector, images, masks, labels, calibration=calibration)
        synchronize(device)
        seconds = time.perf_counter() - start
    image, pixel = aurocs(detector, adv, masks, labels, precision, device)
    return {"seconds": seconds, "warmup_s": warmup, "images_steps_per_s": images.shape[0] * args.steps / seconds,
            "image_auroc": image, "pixel_auroc": pixel,
            "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}, adv


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", default="paper", help="PatchGuard profile (default: paper, 224 px)")
    parser.add_argument("--checkpoint", help="a trained checkpoint of that profile (default: untrained weights)")
    parser.add_argument("--category", default="brick", help="textures category (default: brick)")
    parser.add_argument("--images", type=int, default=100, help="test images (default 100)")
    parser.add_argument("--steps", type=int, default=1000, help="PGD steps (default 1000)")
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--batch", type=int, help="engine batch (default: automatic, the whole set on CUDA)")
    parser.add_argument("--variants", default="fp32,bf16", help=f"comma list of {', '.join(VARIANTS)} "
                        "(default fp32,bf16; fp32 is the reference when present)")
    parser.add_argument("--tiny", action="store_true", help="quick profile at 32 px, 4 images, PGD-3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        parser.error(f"--variants {','.join(args.variants)}: expected a comma list of {', '.join(VARIANTS)}")
    if args.images < 1 or args.steps < 1:
        parser.error("--images and --steps must be at least 1")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    if torch.device(args.device).type != "cuda" and any(v.endswith("_graph") for v in args.variants):
        parser.error("--variants *_graph need --device cuda")
    return args


def main(argv=None) -> dict:
    from robustad.methods import create_method

    args = parse_args(argv)
    device = torch.device(args.device)
    overrides = {"image_size": 32} if args.tiny else {}
    if args.tiny:
        args.profile, args.images, args.steps = "quick", min(args.images, 4), min(args.steps, 3)
    detector = create_method("patchguard", profile=args.profile, seed=args.seed, **overrides)
    if args.checkpoint:
        detector.load_checkpoint(args.checkpoint)
    detector.to(device).eval()
    images, masks, labels = test_images(args.category, args.images, detector.image_size, device)
    results, advs = {}, {}
    for name in args.variants:
        results[name], advs[name] = run_variant(name, detector, images, masks, labels, args, device)
        print(f"{name:>14}: {results[name]['seconds']:8.2f} s ({results[name]['images_steps_per_s']:.0f} "
              f"images·steps/s), warm-up {results[name]['warmup_s']:.1f} s, pixel AUROC "
              f"{results[name]['pixel_auroc']:.2f}", file=sys.stderr, flush=True)
    reference = "fp32" if "fp32" in results else args.variants[0]
    for name, result in results.items():
        result["image_auroc_delta"] = result["image_auroc"] - results[reference]["image_auroc"]
        result["pixel_auroc_delta"] = result["pixel_auroc"] - results[reference]["pixel_auroc"]
        result["differing_pixels"] = float((advs[name] != advs[reference]).float().mean())
    summary = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "profile": args.profile, "checkpoint": args.checkpoint,
        "images": args.images, "steps": args.steps, "image_size": detector.image_size, "reference": reference,
        "fastest": min(results, key=lambda n: results[n]["seconds"]), "variants": results,
    }
    print(json.dumps(summary, indent=1) if args.json else summary)
    return summary


if __name__ == "__main__":
    main()
