"""Adversarial training against none: image AUROC under PGD (detection objective) of a method trained
with and without it (`--config adv_train=false`), same seed, same data, one process.

For the methods with an `adv_train` switch (PrincipaLS, RODEO), outside the record-keeping runner. For each
seed and each `adv_train` value the method is built and fitted on the training split of
`--dataset`/`--category` (seeded as the runner seeds: before construction and before fit), then
evaluated with `robustad.bench.evaluation.evaluate.evaluate` (clean pass, calibration from the whole clean test
set, PGD L∞ at each `--eps` (default 8/255) on the detection objective, step 2.5·ε/steps, no random
start). Prints one line per run and the mean over seeds; `--json` prints one object.

    OMP_NUM_THREADS=1 python benchmarks/adv_train_gap.py --method rodeo --category brick --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from robustad.attacks import create_attack
from robustad.bench.evaluation.evaluate import evaluate
from robustad.core.parsing import parse_number
from robustad.core.seeding import seed_everything
from robustad.datasets import create_dataset
from robustad.methods import create_method


def run(method: str, dataset: str, category: str, seed: int, adv_train: bool, steps: int, eps: list[float],
        profile: str, overrides: dict) -> dict:
    detector = create_method(method, profile=profile, seed=seed, adv_train=adv_train, **overrides)
    size = detector.image_size
    train = create_dataset(dataset, category=category, split="train", image_size=size)
    test = create_dataset(dataset, category=category, split="test", image_size=size)
    seed_everything(seed)
    start = time.perf_counter()
    detector.fit(train)
    fit_s = time.perf_counter() - start
    out = {"seed": seed, "adv_train": adv_train, "fit_s": round(fit_s, 1)}
    for radius in eps:
        attack = create_attack("pgd", norm="linf", eps=radius, steps=steps, objective="detection")
        result = evaluate(detector, test, attack, batch_size=len(test), device=torch.device("cpu"), progress=False)
        out["clean"] = round(result["clean"]["image_auroc"], 1)
        out[f"adversarial@{radius * 255:g}/255"] = round(result["adversarial"]["image_auroc"], 1)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--dataset", default="textures")
    parser.add_argument("--category", default="brick")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eps", default="8/255", help="comma-separated radii, e.g. 2/255,8/255")
    parser.add_argument("--config", action="append", default=[], help="KEY=VALUE, as bench run takes it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    overrides = dict(item.split("=", 1) for item in args.config)
    radii = [parse_number(value) for value in args.eps.split(",")]
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for adv_train in (True, False):
            runs.append(run(args.method, args.dataset, args.category, seed, adv_train, args.steps, radii,
                            args.profile, overrides))
            if not args.json:
                print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for adv_train in (True, False):
        chosen = [r for r in runs if r["adv_train"] == adv_train]
        keys = [key for key in chosen[0] if key == "clean" or key.startswith("adversarial")]
        summary["adv_train" if adv_train else "no_adv_train"] = {
            key: round(statistics.mean(r[key] for r in chosen), 1) for key in keys}
    out = {"method": args.method, "dataset": args.dataset, "category": args.category, "profile": args.profile,
           "attack": f"pgd-{args.steps} linf eps={args.eps} detection", "config": overrides, "runs": runs,
           "mean": summary}
    print(json.dumps(out if args.json else summary))


if __name__ == "__main__":
    main()
