"""How strong are the two-class attacks under other readings of the unit logits? (issue #25)

python benchmarks/calibration_readings.py --generated 24 --steps 50 --attack segpgd --json
python benchmarks/calibration_readings.py --method patchcore --config backbone=efficientnet_lite0 \\
    --max-images 24 --batch-size 8 --steps 10 --attack segpgd --attack apgd --attack-option loss=ce --json

Attacks that read a unit's logit as a two-class prediction (CE, SegPGD, SEA, CAA's CW/CE members)
need a boundary τ and a scale s: m' = (m − τ)/s (`attacks/calibration.py`). This script runs each
`--attack` through the runner's `evaluate` (label-sorted batches) with several readings, all
computed from the clean unit logits of the whole test set:

- `identity`: τ = 0, s = 1 (the BCE reading of log-odds; what every attack used before #25);
- `median-midpoint`: τ halfway between the class medians, s the pooled within-class spread (the
  library's default, `UnitCalibration.from_units`);
- `platt`: τ, s of the logistic fit P(anomalous | m) = σ((m − τ)/s) to the test labels, with
  Platt's target smoothing (maximum likelihood; Newton's method);
- `midpoint-s/4`, `midpoint-4s`: the default τ with a 4× smaller or larger s.

It prints the adversarial AUROC (%) of each reading (pixel for the localization objective, image
for detection) and PGD-margin's for reference. Detector, dataset and options as in
`benchmarks/attack_invariance.py` (same checkpoint cache).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_invariance import METRIC, attack_name, generated_tree, test_orders, trained_detector  # noqa: E402

from robustad.attacks import create_attack, parse_eps  # noqa: E402
from robustad.attacks.calibration import UnitCalibration  # noqa: E402
from robustad.attacks.objectives import Objective, unit_targets  # noqa: E402
from robustad.bench.cli import parse_option_value  # noqa: E402
from robustad.bench.evaluation.evaluate import evaluate  # noqa: E402

READINGS = ("identity", "median-midpoint", "platt", "midpoint-s/4", "midpoint-4s")


def clean_units(detector, test_set, objective: Objective, batch_size: int):
    """(unit logits, unit targets) of the whole test set, as the runner's clean pass computes them."""
    loader = torch.utils.data.DataLoader(test_set, batch_size=batch_size, shuffle=False)
    units, targets = [], []
    with torch.no_grad():
        for batch in loader:
            raw = detector(batch["image"])
            logits = raw.float()
            units.append(detector.score(raw).view(-1, 1) if objective == Objective.DETECTION else logits.flatten(1))
            targets.append(unit_targets(batch["mask"], batch["label"], tuple(logits.shape[-2:]), objective))
    return torch.cat(units), torch.cat(targets)


def platt(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(τ, s) of the maximum-likelihood logistic fit σ((m − τ)/s), Platt's smoothed targets."""
    m, y = logits.flatten().double(), targets.flatten() > 0.5
    positives, negatives = float(y.sum()), float((~y).sum())
    goal = torch.where(y, (positives + 1) / (positives + 2), 1 / (negatives + 2)).double()
    mean, std = float(m.mean()), float(m.std())
    z = (m - mean) / std
    a, b = 1.0, 0.0
    for _ in range(100):
        p = torch.sigmoid(a * z + b)
        gradient = torch.stack([((p - goal) * z).mean(), (p - goal).mean()])
        w = p * (1 - p)
        hessian = torch.tensor([[(w * z * z).mean(), (w * z).mean()], [(w * z).mean(), w.mean()]], dtype=torch.double)
        step = torch.linalg.solve(hessian + 1e-12 * torch.eye(2, dtype=torch.double), gradient)
        a, b = a - float(step[0]), b - float(step[1])
        if float(step.abs().max()) < 1e-10:
            break
    if a <= 0:
        raise ValueError("platt: the fit decreases with the logit (a detector below 50% AUROC)")
    return mean - b * std / a, std / a


def readings(logits, targets, objective) -> dict[str, UnitCalibration]:
    default = UnitCalibration.from_units(logits, targets, objective)
    location, scale = platt(logits, targets)
    return {
        "identity": replace(default, location=0.0, scale=1.0),
        "median-midpoint": default,
        "platt": replace(default, location=location, scale=scale),
        "midpoint-s/4": replace(default, scale=default.scale / 4),
        "midpoint-4s": replace(default, scale=default.scale * 4),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="tests.tiny_detector:TinyDetector")
    p.add_argument("--config", action="append", metavar="KEY=VALUE")
    p.add_argument("--dataset", default="textures")
    p.add_argument("--category", default="brick")
    p.add_argument("--root", default=None)
    p.add_argument("--generated", type=int, default=None, metavar="N")
    p.add_argument("--profile", default="quick")
    p.add_argument("--attack", action="append", help="an attack name, repeatable (default: segpgd)")
    p.add_argument("--attack-option", dest="attack_option", action="append", metavar="KEY=VALUE",
                   help="an option of the attacks (not of the PGD reference), e.g. loss=ce")
    p.add_argument("--objectives", default="localization,detection")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eps", default="8/255")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument("--max-images", dest="max_images", type=int, default=None)
    p.add_argument("--results", default="results")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.generated:
        args.dataset, args.category, args.root = "mvtec", "alpha", str(generated_tree(args.results, args.generated))
    options = {key: parse_option_value(value) for key, _, value in (o.partition("=") for o in args.attack_option or [])}
    detector, test = trained_detector(args)
    ordered = test_orders(test, args.max_images, args.seed)[0]
    report = {"method": args.method, "config": args.config or [], "dataset": args.dataset, "steps": args.steps,
              "options": options, "results": {}}
    for objective in [Objective.parse(o) for o in args.objectives.split(",")]:
        logits, targets = clean_units(detector, ordered, objective, args.batch_size)
        metric = METRIC[objective.value]
        for name in [*(args.attack or ["segpgd"]), "pgd"]:
            full = attack_name(name, args.steps, args.steps)
            extra = options if name != "pgd" else {}
            row = {}
            for label, calibration in (readings(logits, targets, objective) if name != "pgd" else
                                       {"median-midpoint": None}).items():
                attack = create_attack(full, eps=parse_eps(args.eps), seed=args.seed, objective=objective, **extra)
                out = evaluate(detector, ordered, attack, batch_size=args.batch_size, device=torch.device("cpu"),
                               progress=False, calibration=calibration)
                row[label] = round(out["adversarial"][metric], 2)
            report["results"].setdefault(full, {})[objective.value] = row
            if not args.json:
                print(f"{full:14s} {objective.value:12s} " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
