"""Acceptance measurement (not a test): PatchGuard (quick) on one `textures` category, adversarial vs clean training.

python benchmarks/patchguard_acceptance.py --category brick --device cpu [--set key=value ...] [--variants adv,clean]
Prints one JSON line per variant: clean / PGD-20 (localization) image+pixel AUROC and
PGD-20 (detection objective) image AUROC.
"""
import argparse
import json
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
from robustad.attacks import create_attack
from robustad.bench.runner import evaluate
from robustad.datasets import create_dataset
from robustad.methods import create_method


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--category", default="brick")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", default="adv,clean", help="adv (the preset), clean (adv_train=false), noreg (alpha=0)")
    ap.add_argument("--steps", type=int, default=20, help="PGD steps of the evaluation attack")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE, as bench's --config")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    device = torch.device(args.device)
    for variant in args.variants.split(","):
        extra = {"clean": {"adv_train": "false"}, "noreg": {"alpha": "0"}}.get(variant, {})
        torch.manual_seed(args.seed)
        det = create_method("patchguard", profile="quick", **{**overrides, **extra})
        train = create_dataset("textures", category=args.category, split="train", image_size=det.image_size)
        test = create_dataset("textures", category=args.category, split="test", image_size=det.image_size)
        det.to(device)
        t0 = time.perf_counter()
        det.fit(train)
        fit_s = time.perf_counter() - t0
        res = {"variant": variant, "overrides": {**overrides, **extra}, "fit_s": round(fit_s, 1), "n_train": len(train)}
        for objective in ("localization", "detection"):
            attack = create_attack(f"pgd-{args.steps}", objective=objective)
            t0 = time.perf_counter()
            ev = evaluate(det, test, attack, batch_size=16, device=device, progress=False)
            res[objective] = {"clean": ev["clean"], "adv": ev["adversarial"], "eval_s": round(time.perf_counter() - t0, 1)}
        res["n_test"] = ev["n_test"]
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
