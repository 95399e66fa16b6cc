"""Where a PatchGuard fit spends its time, and what torch.compile saves (a benchmark, not a test).

python benchmarks/fit_time.py [--profile quick] [--set KEY=VALUE ...] [--steps 20] [--compile none,blocks]
    [--category brick] [--device cpu] [--json] [--fit-epochs N]

Builds the profile's PatchGuard on one `textures` category (its 64 training images, the same seed)
and times, per optimizer step of `fit` (batch of normal images + their pseudo anomalies):

- `pseudo_s`: drawing the batch's pseudo anomalies (CPU, the configured generator);
- `attack_s`: the training attack alone (`adversarial_examples`, PGD-`train_steps`);
- `step_s`: one whole `training_step` (attack + loss + backward + AdamW); `update_s` = step − attack.

each as the median over `--steps` steps after `--warmup` untimed ones, for each `--compile` mode:
`none` (eager), `blocks` (`torch.compile` in place on the discriminator and each ViT block but the regularized
ones, whose attention a hook reads: the state dict is unchanged), `attack` (the training PGD's forward and input
gradient through torch.compile: config `train_attack_compile=true`). `fit_estimate_s` = (pseudo + step) × the profile's optimizer steps;
`speedup_vs_none` compares step times measured in this one process. `compile_warmup_s` is the
time of the warm-up steps (where compilation happens). `--fit-epochs N` also times whole N-epoch fits
with the pseudo anomalies drawn in place and prefetched by a background thread
(`methods/patchguard/training_batches.py`; the fit prefetches on an accelerator only).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

try:
    import robustad  # noqa: F401
except ImportError:  # device machine: map the repo folders onto the robustad namespace without installing
    import types

    package = types.ModuleType("robustad")
    package.__path__ = [str(Path(__file__).resolve().parents[1])]
    sys.modules["robustad"] = package
import torch
from robustad.core.profiles import Profile
from robustad.datasets import create_dataset
from robustad.methods import create_method

COMPILE_MODES = ("none", "blocks", "attack")


def compile_blocks(net, skip: tuple = ()) -> None:
    """`torch.compile` each ViT block but `skip` and the discriminator head, in place (state dict unchanged).

    The regularized blocks stay eager: their attention is read by a forward hook on the block's
    attention module, which a compiled block would not call (dynamo skips nested-module hook guards).
    """
    for index, block in enumerate(net.vit.blocks):
        if index not in skip:
            block.compile()
    net.head.compile()


def build(profile: str, overrides: dict, category: str, device: torch.device, seed: int):
    from robustad.methods.patchguard.detector import (build_pseudo_anomaly_generator, generator_config,
                                                      training_images)

    detector = create_method("patchguard", profile=profile, seed=seed, **overrides).to(device)
    train = create_dataset("textures", category=category, split="train", image_size=detector.image_size)
    images = training_images(train, detector.image_size, detector.config.patch_size)
    pseudo = build_pseudo_anomaly_generator(generator_config(detector.config, train))
    pseudo.prepare(images)
    return detector, images, pseudo


def time_mode(mode: str, args, overrides: dict, device: torch.device) -> dict:
    from robustad.methods.patchguard.adversarial_training import adversarial_examples, training_batch, training_step

    detector, images, pseudo = build(args.profile, overrides, args.category, device, args.seed)
    config = detector.config
    if mode == "blocks":
        depth = len(detector.net.vit.blocks)
        compile_blocks(detector.net, skip=tuple(i % depth for i in config.regularized_blocks))
    if mode == "attack":  # the training PGD's step through torch.compile (config train_attack_compile)
        config.train_attack_compile = True
    optimizer = torch.optim.AdamW(detector.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    batch_size = min(config.batch_size, len(images))
    timings = {"pseudo_s": [], "attack_s": [], "step_s": []}
    warmup_start = time.perf_counter()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            warmup_s = time.perf_counter() - warmup_start
        index = torch.randperm(len(images), generator=generator)[:batch_size]
        normal = images[index]
        t0 = time.perf_counter()
        anomalous, masks = pseudo(normal, index, generator)
        t1 = time.perf_counter()
        normal, anomalous, masks = normal.to(device), anomalous.to(device).float(), masks.to(device).float()
        batch, targets = training_batch(normal, anomalous, masks, config)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.train_precision == "bf16"):
            adversarial_examples(detector, batch, targets, config)
        synchronize(device)
        t2 = time.perf_counter()
        training_step(detector, optimizer, normal, anomalous, masks)
        synchronize(device)
        t3 = time.perf_counter()
        if step >= args.warmup:
            timings["pseudo_s"].append(t1 - t0)
            timings["attack_s"].append(t2 - t1)
            timings["step_s"].append(t3 - t2)
    result = {key: statistics.median(values) for key, values in timings.items()}
    result["update_s"] = result["step_s"] - result["attack_s"]
    steps_per_epoch = max(1, len(images) // batch_size)
    result["fit_estimate_s"] = (result["pseudo_s"] + result["step_s"]) * steps_per_epoch * config.epochs
    result["compile_warmup_s"] = warmup_s
    return result


def time_fits(args, overrides: dict, device: torch.device) -> dict:
    """Seconds of whole `--fit-epochs` fits with the batches drawn in place and prefetched by a thread.

    The fit chooses by device (prefetched on an accelerator); both are forced here, after a
    one-epoch warm-up fit, and give the same model (tests/test_patchguard.py).
    """
    from robustad.methods.patchguard import detector as module

    original = module.training_batches
    seconds = {}
    try:
        for mode, prefetch in (("warmup", False), ("in_place", False), ("prefetched", True)):
            module.training_batches = lambda *a, _p=prefetch, **k: original(*a, **{**k, "prefetch": _p})
            epochs = 1 if mode == "warmup" else args.fit_epochs
            detector = create_method("patchguard", profile=args.profile, seed=args.seed,
                                     **{**overrides, "epochs": str(epochs)})
            detector.to(device)
            train = create_dataset("textures", category=args.category, split="train", image_size=detector.image_size)
            synchronize(device)
            start = time.perf_counter()
            detector.fit(train)
            synchronize(device)
            seconds[mode] = time.perf_counter() - start
    finally:
        module.training_batches = original
    return {"fit_epochs": args.fit_epochs, "fit_in_place_s": seconds["in_place"],
            "fit_prefetched_s": seconds["prefetched"], "prefetch_speedup": seconds["in_place"] / seconds["prefetched"]}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=Profile.QUICK.value, choices=[p.value for p in Profile])
    parser.add_argument("--set", nargs="*", default=[], help="PatchGuard config overrides KEY=VALUE")
    parser.add_argument("--category", default="brick", help="textures category (default brick)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per mode (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens there)")
    parser.add_argument("--compile", default="none,blocks", help=f"comma list of {', '.join(COMPILE_MODES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--fit-epochs", type=int, default=0,
                        help="also time whole fits of N epochs, batches drawn in place and prefetched (0: no)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.compile.split(",") if m.strip()]
    for mode in modes:
        if mode not in COMPILE_MODES:
            parser.error(f"--compile {mode!r}: expected a comma list of {', '.join(COMPILE_MODES)}")
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = value
    device = torch.device(args.device)
    results = {mode: time_mode(mode, args, overrides, device) for mode in modes}
    if "none" in results:
        for mode, result in results.items():
            result["speedup_vs_none"] = results["none"]["step_s"] / result["step_s"]
    report = {"profile": args.profile, "overrides": overrides, "category": args.category, "device": str(device),
              "threads": torch.get_num_threads(), "steps": args.steps, "modes": results}
    if args.fit_epochs:
        report["fits"] = time_fits(args, overrides, device)
    if args.json:
        print(json.dumps(report))
        return
    print(f"PatchGuard fit time per optimizer step, {args.profile} profile {overrides or ''} on {device} "
          f"({torch.get_num_threads()} threads), median of {args.steps} steps")
    print(f"{'mode':8} {'pseudo s':>9} {'attack s':>9} {'update s':>9} {'step s':>8} {'fit est. s':>10} "
          f"{'speedup':>8} {'warm-up s':>9}")
    for mode, r in results.items():
        print(f"{mode:8} {r['pseudo_s']:9.4f} {r['attack_s']:9.4f} {r['update_s']:9.4f} {r['step_s']:8.4f} "
              f"{r['fit_estimate_s']:10.0f} {r.get('speedup_vs_none', float('nan')):8.2f} "
              f"{r['compile_warmup_s']:9.1f}")
    if args.fit_epochs:
        fits = report["fits"]
        print(f"{args.fit_epochs}-epoch fit: batches drawn in place {fits['fit_in_place_s']:.1f} s, prefetched "
              f"{fits['fit_prefetched_s']:.1f} s ({fits['prefetch_speedup']:.2f}x)")


if __name__ == "__main__":
    main()
