"""Memory left behind after each batch of an attack, for every variant of the PGD engine (no leaks).

Runs PGD-`--steps` on `--batches` successive batches of the same shape for each variant (eager,
`compile=True`, `cuda_graph=True` on CUDA, each in fp32 and bf16 autocast) and records after each
batch what stays allocated: on CUDA `torch.cuda.memory_allocated` (and the batch's peak), on the
CPU the bytes of the tensors Python still holds (garbage-collected first) and the resident memory.
`growth_*` is the last batch's value minus the second's (the first batch warms up allocators,
compiles and captures); it must be ≤ 0 up to allocator noise.

    python benchmarks/memory_flat.py --device cuda --json
    python benchmarks/memory_flat.py --tiny --json       # CPU smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import warnings
import json

import torch


def live_tensor_mib() -> float:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() touches deprecated lazy objects (torch.distributed.reduce_op)
        warnings.simplefilter("ignore")
        return sum(o.numel() * o.element_size() for o in gc.get_objects() if isinstance(o, torch.Tensor)) / 2**20


def resident_mib() -> float | None:
    import os

    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None


def measure(variant: str, detector, images, masks, steps: int, batches: int, device: torch.device) -> dict:
    from robustad.attacks import create_attack

    precision, _, kind = variant.partition("_")
    options = {"compile": kind == "compiled", "cuda_graph": kind == "graph"}
    attack = create_attack("pgd", eps=8 / 255, steps=steps, **options)
    context = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    after, peaks, live, resident = [], [], [], []
    with context:
        for _ in range(batches):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            adv = attack(detector, images, masks)
            del adv
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                after.append(torch.cuda.memory_allocated(device) / 2**20)
                peaks.append(torch.cuda.max_memory_allocated(device) / 2**20)
            live.append(live_tensor_mib())
            resident.append(resident_mib())
    result = {"live_tensor_mib": live, "resident_mib": resident,
              "growth_live_tensor_mib": live[-1] - live[1] if batches > 1 else None}
    if device.type == "cuda":
        result.update(allocated_after_mib=after, peak_mib=peaks, growth_allocated_mib=after[-1] - after[1],
                      growth_peak_mib=peaks[-1] - peaks[1])
    return result


def main(argv=None) -> dict:
    from robustad.methods import create_method

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--images", type=int, default=32, help="images per batch (default 32)")
    parser.add_argument("--steps", type=int, default=5, help="PGD steps per batch (default 5)")
    parser.add_argument("--batches", type=int, default=5, help="successive batches per variant (default 5)")
    parser.add_argument("--variants", help="comma list, e.g. fp32_eager,fp32_compiled,fp32_graph,bf16_graph "
                        "(default: all that the device supports)")
    parser.add_argument("--tiny", action="store_true", help="quick profile at 32 px, 4 images, 2 steps, 3 batches")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    kinds = ["eager", "compiled"] + (["graph"] if device.type == "cuda" else [])
    variants = ([v.strip() for v in args.variants.split(",") if v.strip()] if args.variants
                else [f"{p}_{k}" for p in ("fp32", "bf16") for k in kinds])
    for variant in variants:
        precision, _, kind = variant.partition("_")
        if precision not in ("fp32", "bf16") or kind not in kinds:
            parser.error(f"--variants {variant!r}: expected fp32|bf16 _ {'|'.join(kinds)}")
    overrides = {}
    if args.tiny:
        args.profile, args.images, args.steps, args.batches = "quick", 4, 2, 3
        overrides = {"image_size": 32}
    if args.batches < 2:
        parser.error("--batches must be at least 2 (the first one warms up)")
    detector = create_method("patchguard", profile=args.profile, seed=0, **overrides).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    size = detector.image_size
    images = torch.rand(args.images, 3, size, size, generator=generator).to(device)
    masks = torch.zeros(args.images, 1, size, size)
    masks[1::2, :, size // 4:size // 2, size // 4:size // 2] = 1
    masks = masks.to(device)
    results = {v: measure(v, detector, images, masks, args.steps, args.batches, device) for v in variants}
    key = "growth_allocated_mib" if device.type == "cuda" else "growth_live_tensor_mib"
    summary = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "profile": args.profile, "images": args.images, "steps": args.steps, "batches": args.batches,
               "max_growth_mib": max(r[key] for r in results.values()), "growth_key": key, "variants": results}
    print(json.dumps(summary, indent=1) if args.json else summary)
    return summary


if __name__ == "__main__":
    main()
