"""Is every attack as strong on a·M + c as on M, and on shuffled batches as on sorted ones? (issue #25)

python benchmarks/attack_invariance.py --method tests.tiny_detector:TinyDetector --json
python benchmarks/attack_invariance.py --method patchcore --config backbone=efficientnet_lite0 --json

Trains (or reuses from `--results`) one detector on a category of the built-in `textures` dataset,
then runs each attack through the runner's `evaluate` (batches of `--batch-size`, the order the
loader gives: grouped by defect kind, so some batches hold normal images only; `--generated N` uses
the tests' generated textures instead, anomalous images first) four times:

- `plain`: the detector as it is, label-sorted batches;
- `shift`: the same detector with logits M + 10 (`bench/affine_logits.py`), label-sorted batches;
- `scale`: the same with logits 0.1·M, label-sorted batches;
- `shuffled`: the detector as it is, the same images in a random order (`--seed`).

AUROC cannot tell these four apart, so a sound attack gives the same adversarial AUROC on each.
It prints, per attack and objective, the clean AUROC and the adversarial AUROC of each variant
(pixel AUROC for the localization objective, image AUROC for detection, in %) and `spread`, the
largest difference between variants. Gradient attacks run `--steps` iterations, query attacks
(Square, SimBA) `--queries` queries, AutoAttack's Square member too. `--attack NAME` (repeatable)
takes a name as `bench run --attack` does (`pgd`, `pgd-50`, `worst:pgd-5,pgd-50`); the default is
every registered attack.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robustad.attacks import ATTACKS, create_attack, parse_eps
from robustad.attacks.registry import split_attack_name
from robustad.bench.evaluation.affine_logits import AffineLogits
from robustad.bench.cli import parse_option_value
from robustad.bench.cells import CellSpec
from robustad.bench.evaluation.evaluate import evaluate
from robustad.bench.evaluation.prepare import prepare

VARIANTS = {"plain": (1.0, 0.0, False), "shift": (1.0, 10.0, False), "scale": (0.1, 0.0, False),
            "shuffled": (1.0, 0.0, True)}
METRIC = {"localization": "pixel_auroc", "detection": "image_auroc"}


def attack_name(name: str, steps: int, queries: int) -> str:
    """`pgd` -> `pgd-<steps>`, `square` -> `square-<queries>`; names with a budget, FGSM and `worst:` stay."""
    base, suffix = split_attack_name(name)
    if name.startswith("worst:") or suffix is not None or base == "fgsm" or base not in ATTACKS:
        return name
    return f"{base}-{queries if getattr(ATTACKS.get(base), 'steps_are_queries', False) else steps}"


def attack_options(name: str, queries: int, extra: dict) -> dict:
    return {**({"square_queries": queries} if split_attack_name(name)[0] == "autoattack" else {}), **extra}


def generated_tree(results: str, n: int) -> Path:
    """The tests' generated textures with blob defects (one category, `alpha`), written once."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/
    from tests.synthetic import write_mvtec_tree

    root = Path(results).expanduser().resolve() / f"generated-{n}"
    if not (root / "alpha" / "test").exists():
        write_mvtec_tree(root, categories=("alpha",), n_train=2 * n, n_good=n, n_bad=n)
    return root


def trained_detector(args):
    """The detector as `bench run` prepares it (fitted once, or its checkpoint loaded), and its test set."""
    config = dict(item.split("=", 1) for item in args.config or [])
    spec = CellSpec(method=args.method, dataset=args.dataset, category=args.category, root=args.root,
                    seed=args.seed, profile=args.profile, config=tuple(sorted(config.items())))
    with prepare(spec, results=args.results, log=lambda message: print(message, file=sys.stderr)) as prepared:
        return prepared.detector, prepared.test_set


def test_orders(test_set, max_images: int | None, seed: int):
    """(label-sorted subset, the same images shuffled): an even spread when capped, as the runner does."""
    indices = list(range(len(test_set)))
    if max_images is not None and len(indices) > max_images:
        indices = [indices[int(i)] for i in np.linspace(0, len(indices) - 1, max_images).round()]
    shuffled = [indices[int(i)] for i in torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))]
    return torch.utils.data.Subset(test_set, indices), torch.utils.data.Subset(test_set, shuffled)


def measure(detector, orders, name: str, objective: str, args) -> dict:
    metric = METRIC[objective]
    row, seconds = {}, 0.0
    for variant, (scale, shift, shuffled) in VARIANTS.items():
        if variant not in args.variants:
            continue
        model = detector if (scale, shift) == (1.0, 0.0) else AffineLogits(detector, scale=scale, shift=shift)
        attack = create_attack(name, norm=args.norm, eps=parse_eps(args.eps), seed=args.seed, objective=objective,
                               **attack_options(name, args.queries, args.options))
        start = time.perf_counter()
        out = evaluate(model, orders[shuffled], attack, batch_size=args.batch_size, device=torch.device("cpu"),
                       progress=False)
        seconds += time.perf_counter() - start
        row.setdefault("clean", round(out["clean"][metric], 2))
        row[variant] = round(out["adversarial"][metric], 2)
    values = [row[v] for v in VARIANTS if v in row]
    row["spread"] = round(max(values) - min(values), 2)
    row["seconds"] = round(seconds, 1)
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="tests.tiny_detector:TinyDetector")
    p.add_argument("--config", action="append", metavar="KEY=VALUE")
    p.add_argument("--dataset", default="textures")
    p.add_argument("--category", default="brick")
    p.add_argument("--root", default=None)
    p.add_argument("--generated", type=int, default=None, metavar="N",
                   help="instead of --dataset: a generated MVTec-layout tree (tests/synthetic.py) with N normal "
                        "and N defective test images, 2N train images, in <results>/generated-N")
    p.add_argument("--profile", default="quick")
    p.add_argument("--attack", action="append", help="an attack name, repeatable (default: every registered attack)")
    p.add_argument("--objectives", default="localization,detection")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=20, help="iterations of gradient attacks (default 20)")
    p.add_argument("--queries", type=int, default=500, help="queries of Square and SimBA (default 500)")
    p.add_argument("--norm", default="linf")
    p.add_argument("--eps", default="8/255")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument("--max-images", dest="max_images", type=int, default=None)
    p.add_argument("--results", default="results", help="checkpoint cache (the runner's)")
    p.add_argument("--attack-option", dest="attack_option", action="append", metavar="KEY=VALUE",
                   help="an option of every attack's constructor, as `bench run --attack-option` "
                        "(e.g. losses=masked-ce,balanced-ce,js for sea, rescale_schedule=true for square)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.options = {key: parse_option_value(value) for key, _, value in
                    (item.partition("=") for item in args.attack_option or [])}
    if args.generated:
        args.dataset, args.category, args.root = "mvtec", "alpha", str(generated_tree(args.results, args.generated))
    names = args.attack or ATTACKS.names()
    detector, test = trained_detector(args)
    orders = test_orders(test, args.max_images, args.seed)
    report = {"method": args.method, "config": args.config or [], "dataset": args.dataset, "category": args.category,
              "norm": args.norm, "eps": args.eps, "steps": args.steps, "queries": args.queries, "options": args.options,
              "n_test": len(orders[0]), "batch_size": args.batch_size, "attacks": {}}
    for objective in args.objectives.split(","):
        for name in names:
            full = attack_name(name.strip(), args.steps, args.queries)
            row = measure(detector, orders, full, objective, args)
            report["attacks"].setdefault(full, {})[objective] = row
            if not args.json:
                print(f"{full:24s} {objective:12s} " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
