"""One evaluation of a prepared detector: the test set scored clean and under one attack.

Two passes over the test set. The clean pass scores every image and calibrates the attack's
two-class reading and success thresholds from the clean unit logits of the whole test set
(`attacks/calibration.py`); the attack pass then attacks batch after batch with that one
calibration, so no batch is judged by its own images. Every adversarial batch is checked against
the threat model (inside the ε-ball and [0, 1]); a violation raises. A transductive detector
(`uses_test_references`) is handed the whole clean test set before the clean pass; a detector that
does not localize (`localizes = False`) gets null pixel metrics, as a dataset without masks does.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from robustad.attacks import check_inside
from robustad.bench.evaluation.metrics import image_auroc, pixel_aupro, pixel_auroc


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"--precision {precision!r}: expected fp32 or bf16")


def evaluate(detector, test_set, attack, *, batch_size: int, device: torch.device, precision: str = "fp32",
             max_images: int | None = None, progress: bool | None = None, calibration=None,
             examples=None, evaluations: int = 1) -> dict[str, Any]:
    """Clean and adversarial scores and maps of the test set (see the module docstring); metrics in %.

    An attack that needs the whole test set (`whole_test_set`, A³) gets every image in one call.
    `evaluations` R > 1 (a randomized detector): the clean and the final adversarial images are scored
    R times, each pass with fresh randomness; each metric is the mean over the R passes, with its
    standard deviation (`<metric>_std`) and its lowest value (`<metric>_worst`) beside it; the R clean
    passes are made before the attack, and the attack's calibration reads their mean scores (logits),
    not one noisy pass. `calibration` in the result is what the
    record stores as `attack_calibration`; `calibration` given replaces the clean pass's (a study
    of other readings: `benchmarks/calibration_readings.py`). `examples`, an `ExampleCollector`
    (`bench/results/example_maps.py`), keeps a few clean and adversarial images and maps for Figure 1.
    """
    from robustad.attacks.calibration import UnitCalibration
    from robustad.attacks.objectives import Objective, unit_targets
    indices = list(range(len(test_set)))
    if max_images is not None and len(indices) > max_images:
        # keep both classes: an even spread over the (label-sorted) list
        indices = [indices[int(i)] for i in np.linspace(0, len(indices) - 1, max_images).round()]
    subset = torch.utils.data.Subset(test_set, indices)
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=0)
    if getattr(detector, "uses_test_references", False):
        references = torch.cat([batch["image"] for batch in loader]).to(device)
        detector.set_test_references(references)  # fixed before the attack: it perturbs only the scored image
    out = {k: [] for k in ("labels", "masks", "clean_scores", "adv_scores", "clean_maps", "adv_maps")}
    seconds = {"clean": 0.0, "attack": 0.0}
    size = detector.image_size
    objective = Objective.parse(getattr(attack, "objective", Objective.LOCALIZATION))
    whole = getattr(attack, "whole_test_set", False)
    units, targets, kept = [], [], []
    clean_draws = [([], []) for _ in range(evaluations - 1)]  # (scores, maps) of the clean passes after the first
    disable = None if progress is None else not progress
    detector.eval()
    position = 0
    for batch in tqdm(loader, desc="clean", unit="batch", disable=disable, leave=False):
        images, masks, labels = batch["image"].to(device), batch["mask"].to(device), batch["label"].to(device)
        start = time.perf_counter()
        with torch.no_grad(), autocast(device, precision):
            raw = detector(images)
            scores = detector.score(raw).float()
            logits = raw.float()
            out["clean_scores"].append(scores.cpu())
            out["clean_maps"].append(detector.anomaly_map(logits, size).cpu())
            score_sum, logit_sum = scores.clone(), logits.clone()
            for draw_scores, draw_maps in clean_draws:  # a randomized detector: the other clean passes
                again = detector(images).float()
                draw_scores.append(detector.score(again).float().cpu())
                draw_maps.append(detector.anomaly_map(again, size).cpu())
                score_sum += draw_scores[-1].to(score_sum.device)
                logit_sum += again
            scores, logits = score_sum / evaluations, logit_sum / evaluations  # the calibration's units
        seconds["clean"] += time.perf_counter() - start
        if examples is not None:
            examples.add_clean(position, batch["image"], batch["mask"], batch["label"], out["clean_maps"][-1])
        position += len(labels)
        units.append((scores.view(-1, 1) if objective == Objective.DETECTION else logits.flatten(1)).cpu())
        targets.append(unit_targets(masks, labels, tuple(logits.shape[-2:]), objective).cpu())
        out["labels"].append(labels.cpu())
        out["masks"].append(masks[:, 0].cpu())
        if whole:
            kept.append((batch["image"], batch["mask"], batch["label"]))
    if calibration is None:
        calibration = UnitCalibration.from_units(torch.cat(units), torch.cat(targets), objective)

    def attacked(images, masks, labels):
        start = time.perf_counter()
        with autocast(device, precision):
            adv = attack(detector, images, masks, labels.float(), calibration=calibration)
        seconds["attack"] += time.perf_counter() - start
        check_inside(adv.float(), images, attack.threat.norm, attack.threat.eps)
        return adv

    adversarial_images = []  # kept on the CPU for the repeated evaluations of a randomized detector

    def score_adversarial(adv, start):
        with torch.no_grad(), autocast(device, precision):
            raw = detector(adv)
            out["adv_scores"].append(detector.score(raw).float().cpu())
            out["adv_maps"].append(detector.anomaly_map(raw.float(), size).cpu())
        if examples is not None:
            examples.add_adversarial(start, adv, out["adv_maps"][-1])
        if evaluations > 1:
            adversarial_images.append(adv.detach().float().cpu())

    if whole:
        images, masks, labels = (torch.cat(parts).to(device) for parts in zip(*kept))
        adv = attacked(images, masks, labels)
        for start in range(0, len(adv), batch_size):
            score_adversarial(adv[start:start + batch_size], start)
    else:
        start = 0
        for batch in tqdm(loader, desc="attack", unit="batch", disable=disable, leave=False):
            score_adversarial(attacked(batch["image"].to(device), batch["mask"].to(device), batch["label"].to(device)),
                              start)
            start += len(batch["label"])
    cat = {k: torch.cat(v).float().numpy() for k, v in out.items()}
    # pixel metrics need masks and a detector that localizes (a detection-only M(x) is one cell per image)
    has_masks = getattr(test_set, "has_masks", True) and getattr(detector, "localizes", True)

    def metrics(scores, maps) -> dict[str, float | None]:
        return {
            "image_auroc": image_auroc(cat["labels"], scores),
            "pixel_auroc": pixel_auroc(cat["masks"], maps) if has_masks else None,
            "pixel_aupro": pixel_aupro(cat["masks"], maps) if has_masks else None,
        }

    passes = {"clean": [metrics(cat["clean_scores"], cat["clean_maps"])],
              "adversarial": [metrics(cat["adv_scores"], cat["adv_maps"])]}
    for draw_scores, draw_maps in clean_draws:
        passes["clean"].append(metrics(torch.cat(draw_scores).numpy(), torch.cat(draw_maps).numpy()))
        scores, maps = score_again(detector, adversarial_images, device, precision, size)
        passes["adversarial"].append(metrics(scores, maps))
    labels = cat["labels"]
    return {
        "clean": summarize(passes["clean"]),
        "adversarial": summarize(passes["adversarial"]),
        "n_test": int(len(labels)),
        "n_test_normal": int((labels == 0).sum()),
        "n_test_anomalous": int((labels == 1).sum()),
        "seconds": seconds,
        "calibration": calibration.describe(),
    }


def score_again(detector, batches, device, precision: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image scores and maps of image batches, one more forward pass each (fresh randomness)."""
    scores, maps = [], []
    for images in batches:
        with torch.no_grad(), autocast(device, precision):
            raw = detector(images.to(device))
            scores.append(detector.score(raw).float().cpu())
            maps.append(detector.anomaly_map(raw.float(), size).cpu())
    return torch.cat(scores).numpy(), torch.cat(maps).numpy()


def summarize(passes: list[dict[str, float | None]]) -> dict[str, Any]:
    """One pass's metrics as they are; several passes' as their mean, with `_std` and `_worst` (lowest)."""
    if len(passes) == 1:
        return dict(passes[0])
    summary: dict[str, Any] = {"evaluations": len(passes)}
    for key in passes[0]:
        values = [p[key] for p in passes if p[key] is not None and np.isfinite(p[key])]
        summary[key] = float(np.mean(values)) if values else None
        summary[f"{key}_std"] = float(np.std(values)) if values else None
        summary[f"{key}_worst"] = float(np.min(values)) if values else None
    return summary
