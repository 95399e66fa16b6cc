"""The runner: evaluates one grid cell (method, dataset, category, attack, norm, eps, steps, seed,
profile) and writes its result record.

A cell trains the method (or reuses its cached checkpoint, keyed by method, config, dataset,
category and seed), evaluates it on the test images clean and under attack, checks every
adversarial batch against the threat model, and writes one JSON record atomically. A rerun skips
cells whose record is complete unless `force=True`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from robustad.attacks import check_inside, create_attack
from robustad.attacks.registry import takes_default_steps
from robustad.attacks.batching import ChunkedAttack
from robustad.bench.environment import git_revision, package_versions
from robustad.bench.example_maps import ExampleCollector, save_examples
from robustad.core.profiles import EVAL_SETTINGS, Profile
from robustad.bench.records import Metrics, Record, is_done, now_iso, read_record, record_path, write_record
from robustad.core.cache import cache_root
from robustad.bench.run_info import describe_run
from robustad.core.seeding import seed_everything
from robustad.datasets import create_dataset, list_categories
from robustad.datasets.decode_check import check_decodes
from robustad.methods import create_method, typed_config_overrides
from robustad.methods.checkpoint import CheckpointMismatchError, file_sha256


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """One cell of the benchmark grid."""

    method: str
    dataset: str
    category: str
    attack: str = "pgd"
    norm: str = "linf"
    eps: float = 8 / 255
    eps_text: str = "8/255"
    steps: int | None = None  # None: the attack's `-N` suffix, else the profile's default
    seed: int = 0
    profile: str = "quick"
    objective: str = "localization"
    root: str | None = None
    config: tuple[tuple[str, Any], ...] = ()  # method config overrides, sorted (key, value)
    attack_options: tuple[tuple[str, Any], ...] = ()  # loss, restarts, random_start, step_size

    def __post_init__(self):
        # Overrides as the config field's type ("0", 0 and 0.0 for a float field are one cell, one row);
        # an unknown key or a value outside its field's domain is refused here, before any work.
        typed = typed_config_overrides(self.method, self.profile, dict(self.config))
        object.__setattr__(self, "config", tuple(sorted(typed.items())))

    @property
    def config_overrides(self) -> dict[str, Any]:
        return dict(self.config)

    def method_overrides(self) -> dict[str, Any]:
        """The config overrides the detector is built with: `weights=DIR` becomes this cell's file in DIR,
        `<method>_<dataset>_<category>.pth` (the authors' release names them so)."""
        overrides = self.config_overrides
        weights = overrides.get("weights")
        if weights and Path(str(weights)).expanduser().is_dir():
            from robustad.methods.patchguard.released_weights import released_weights_file

            overrides["weights"] = str(released_weights_file(Path(str(weights)).expanduser(), self.method,
                                                             self.dataset, self.category))
        return overrides

    def resolved_steps(self) -> int | None:
        """--steps; else None where the name carries them (`pgd-1000`), FGSM, a query-based attack
        (its own query budget) or a `worst:` whose members all carry theirs; else the profile's
        number of attack iterations (for `worst:`, that of its members without `-N`)."""
        if self.steps is not None:
            return int(self.steps)
        if not takes_default_steps(self.attack):
            return None
        return EVAL_SETTINGS[Profile.parse(self.profile)].attack_steps

    def cell_id(self) -> str:
        """A stable, readable file name for the cell."""
        extra = json.dumps([self.config, self.attack_options, self.root], sort_keys=True, default=str)
        digest = hashlib.sha256(extra.encode()).hexdigest()[:8]
        steps = self.resolved_steps()
        parts = [
            self.method, self.dataset, self.category, self.attack, self.objective, self.norm,
            self.eps_text, f"steps{steps}" if steps is not None else "", f"seed{self.seed}", self.profile, digest,
        ]
        return "__".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", p) for p in parts if p)


class RunError(RuntimeError):
    """A cell could not run (bad input, failed check); the message says why."""


def checkpoint_path(results: Path, detector, spec: CellSpec, dataset_root: str) -> Path:
    key = json.dumps(
        {"method": spec.method, "config": detector.config_dict(), "dataset": spec.dataset,
         "root": dataset_root, "category": spec.category, "seed": spec.seed},
        sort_keys=True, default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = [re.sub(r"[^A-Za-z0-9.+-]+", "-", s) for s in (spec.method, spec.dataset, spec.category)]
    return Path(results) / "checkpoints" / safe[0] / safe[1] / safe[2] / f"{digest}.pt"


def fit_or_load(detector, spec: CellSpec, results: Path, train_set, log) -> tuple[Path, float, bool]:
    """Loads the cached checkpoint for this (method, config, dataset, category, seed) or trains one.

    Under the checkpoint's lease (`bench/lease.py`): while another process trains the same model this
    waits for it, then loads its checkpoint, so no model is ever trained twice at once."""
    from robustad.bench.lease import Lease

    path = checkpoint_path(results, detector, spec, str(train_set.format.root))
    with Lease(path, log=log):
        if path.exists():
            try:
                detector.load_checkpoint(path)
                log(f"reusing checkpoint {path}")
                return path, 0.0, True
            except CheckpointMismatchError as err:
                log(f"ignoring unusable checkpoint: {err}")
        seed_everything(spec.seed)
        start = time.perf_counter()
        detector.fit(train_set)
        seconds = time.perf_counter() - start
        try:
            detector.save_checkpoint(path)
        except OSError as err:  # a disk filled during the fit: keep the trained model, evaluate it anyway
            log(f"warning: could not save the checkpoint {path} ({err.strerror or err}); the cell goes on with "
                f"the model in memory, and a rerun trains it again")
    return path, seconds, False


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"--precision {precision!r}: expected fp32 or bf16")


def evaluate(detector, test_set, attack, *, batch_size: int, device: torch.device, precision: str = "fp32",
             max_images: int | None = None, progress: bool | None = None, calibration=None,
             examples=None) -> dict[str, Any]:
    """Clean and adversarial scores and maps of the test set; checks every adversarial batch.

    Two passes. The clean pass scores every test image and calibrates the attack's two-class
    reading and success thresholds from the clean unit logits of the whole test set
    (`attacks/calibration.py`); the attack pass then attacks batch after batch with that one
    calibration, so no batch is judged by its own images. An attack that needs the whole test set
    (`whole_test_set`, A³) gets every image in one call. `calibration` in the result is what the
    record stores as `attack_calibration`; `calibration` given replaces the clean pass's (a study
    of other readings: `benchmarks/calibration_readings.py`). `examples`, an `ExampleCollector`
    (`bench/example_maps.py`), keeps a few clean and adversarial images and maps for Figure 1.
    """
    from robustad.attacks.calibration import UnitCalibration
    from robustad.attacks.objectives import Objective, unit_targets
    from robustad.bench.metrics import image_auroc, pixel_aupro, pixel_auroc

    indices = list(range(len(test_set)))
    if max_images is not None and len(indices) > max_images:
        # keep both classes: an even spread over the (label-sorted) list
        indices = [indices[int(i)] for i in np.linspace(0, len(indices) - 1, max_images).round()]
    subset = torch.utils.data.Subset(test_set, indices)
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=0)
    out = {k: [] for k in ("labels", "masks", "clean_scores", "adv_scores", "clean_maps", "adv_maps")}
    seconds = {"clean": 0.0, "attack": 0.0}
    size = detector.image_size
    objective = Objective.parse(getattr(attack, "objective", Objective.LOCALIZATION))
    whole = getattr(attack, "whole_test_set", False)
    units, targets, kept = [], [], []
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

    def score_adversarial(adv, start):
        with torch.no_grad(), autocast(device, precision):
            raw = detector(adv)
            out["adv_scores"].append(detector.score(raw).float().cpu())
            out["adv_maps"].append(detector.anomaly_map(raw.float(), size).cpu())
        if examples is not None:
            examples.add_adversarial(start, adv, out["adv_maps"][-1])

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
    has_masks = getattr(test_set, "has_masks", True)

    def metrics(kind: str) -> dict[str, float | None]:
        return {
            "image_auroc": image_auroc(cat["labels"], cat[f"{kind}_scores"]),
            "pixel_auroc": pixel_auroc(cat["masks"], cat[f"{kind}_maps"]) if has_masks else None,
            "pixel_aupro": pixel_aupro(cat["masks"], cat[f"{kind}_maps"]) if has_masks else None,
        }

    labels = cat["labels"]
    return {
        "clean": metrics("clean"),
        "adversarial": metrics("adv"),
        "n_test": int(len(labels)),
        "n_test_normal": int((labels == 0).sum()),
        "n_test_anomalous": int((labels == 1).sum()),
        "seconds": seconds,
        "calibration": calibration.describe(),
    }


def run_cell(spec: CellSpec, *, results: str | Path = "results", device: str = "cpu", force: bool = False,
             precision: str = "fp32", progress: bool | None = None, log=None, attack_batch: int | None = None,
             run_info: dict | None = None) -> Record:
    """Runs one cell and returns its record (the existing one when the cell is done).

    `run_info`: the record's `run` field, who ran it (`bench/run_info.py`; default: this process, inline)."""
    results = Path(results).expanduser().resolve()
    log = log or (lambda message: print(message, file=sys.stderr))
    cell_id = spec.cell_id()
    if not force and is_done(results, cell_id):
        log(f"skipping {cell_id}: record exists (use --force to rerun)")
        return read_record(record_path(results, cell_id))
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda: no CUDA device is available here")
    profile = Profile.parse(spec.profile)
    detector = create_method(spec.method, profile=profile, seed=spec.seed, **spec.method_overrides())
    steps = spec.resolved_steps()
    attack = create_attack(spec.attack, norm=spec.norm, eps=spec.eps, steps=steps, seed=spec.seed,
                           objective=spec.objective, **dict(spec.attack_options))
    attack = ChunkedAttack(attack, max_batch=attack_batch)  # halves the chunk on a CUDA out-of-memory error
    train_set = create_dataset(spec.dataset, root=spec.root, category=spec.category, split="train",
                               image_size=detector.image_size)
    test_set = create_dataset(spec.dataset, root=spec.root, category=spec.category, split="test",
                              image_size=detector.image_size)
    check_decodes(train_set, detector.image_size)  # a truncated test image is found now, not after the fit
    check_decodes(test_set, detector.image_size)
    released = getattr(detector, "released_weights", None)  # given weights (the authors'): evaluated as they are
    detector.to(torch_device)
    if released is None:
        check_room_for_checkpoint(results, detector)
        ckpt, fit_seconds, reused = fit_or_load(detector, spec, results, train_set, log)
    else:
        log(f"evaluating {released['source']} {released['path']} (sha256 {released['sha256'][:12]}), no training")
        ckpt, fit_seconds, reused = None, 0.0, False
    detector.to(torch_device).eval()
    settings = EVAL_SETTINGS[profile]
    batch_size = attack_batch or settings.batch_size
    from robustad.bench.checks import cheap_checks

    first = next(iter(DataLoader(test_set, batch_size=min(4, len(test_set)), shuffle=True,
                                 generator=torch.Generator().manual_seed(spec.seed))))
    checks = cheap_checks(detector, first["image"].to(torch_device), first["mask"].to(torch_device))
    examples = ExampleCollector()
    result = evaluate(detector, test_set, attack, batch_size=batch_size, device=torch_device,
                      precision=precision, max_images=settings.max_test_images, progress=progress,
                      examples=examples)
    checks["inside_threat_model"] = True  # evaluate() raises otherwise
    record = Record(
        **{**cell_fields(spec),
           "attack": attack.describe()["attack"] if spec.attack.startswith("worst:") else spec.attack,
           "steps": attack.describe()["steps"], "profile": profile.value, "root": str(train_set.format.root)},
        precision=precision,
        device=str(torch_device),
        config=detector.config_dict(),
        n_test=result["n_test"],
        n_test_normal=result["n_test_normal"],
        n_test_anomalous=result["n_test_anomalous"],
        clean=Metrics(**result["clean"]),
        adversarial=Metrics(**result["adversarial"]),
        seconds={"fit": fit_seconds, "checkpoint_reused": reused, **result["seconds"]},
        attack_config=attack.describe(),
        attack_calibration=result["calibration"],
        checks=checks,
        versions=package_versions(),
        git_revision=git_revision(),
        checkpoint_sha256=file_sha256(ckpt) if ckpt is not None and ckpt.exists() else None,
        weights=released,
        run=run_info or describe_run(device=device),
        examples=save_examples_or_warn(results, cell_id, examples, log),
    )
    save_record(results, record, log)
    return record


def save_record(results: Path, record: Record, log) -> Path:
    """Writes the record under `results`; if that fails (a full disk, a read-only folder), under the
    cache's `records-fallback/` instead, saying where: a finished computation is never thrown away."""
    try:
        return write_record(results, record)
    except OSError as err:
        fallback = cache_root() / "records-fallback"
        try:
            path = write_record(fallback, record)
        except OSError:
            log(f"error: could not write the record of {record.cell_id} ({err.strerror or err}) nor a copy under "
                f"{fallback}; here it is:\n{json.dumps(record.to_json())}")
            raise err from None
        log(f"error: could not write the record under {results} ({err.strerror or err}); kept it at {path}")
        return path


def save_examples_or_warn(results: Path, cell_id: str, examples: ExampleCollector, log) -> str | None:
    """Writes the cell's example maps (Figure 1); a failure to write them costs the figure, not the record."""
    arrays = examples.arrays()
    if arrays is None:
        return None
    try:
        return save_examples(results, cell_id, arrays)
    except OSError as err:
        log(f"warning: could not save the example maps of {cell_id} ({err.strerror or err}); "
            f"`bench figure maps` will not have them")
        return None


def check_room_for_checkpoint(results: Path, detector) -> None:
    """Refuses to train when the results folder's disk cannot hold the checkpoint (twice its weights, for
    the temporary file of the atomic write), before any training."""
    weights = sum(t.numel() * t.element_size() for t in detector.state_dict().values())
    results.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(results).free
    if free < 2 * weights + (16 << 20):
        raise RunError(f"--results {results}: {free / 2**20:.0f} MiB free, too little for a checkpoint of "
                       f"{weights / 2**20:.0f} MiB; free some space or choose another folder")


def cell_fields(spec: CellSpec) -> dict[str, Any]:
    """The record fields that name the cell (a failed cell's record has these and its error)."""
    return dict(cell_id=spec.cell_id(), method=spec.method, dataset=spec.dataset, category=spec.category,
                attack=spec.attack, objective=spec.objective, norm=spec.norm, eps=float(spec.eps),
                eps_text=spec.eps_text, steps=spec.resolved_steps(), seed=spec.seed, profile=spec.profile,
                root=spec.root, config_overrides=spec.config_overrides, attack_options=dict(spec.attack_options),
                created=now_iso())


def failed_record(spec: CellSpec, error: BaseException) -> Record:
    """The record of a cell that failed: the grid goes on, the failure is kept."""
    return Record(**cell_fields(spec), error=f"{type(error).__name__}: {error}",
                  traceback=traceback.format_exception(type(error), error, error.__traceback__)[-6:])


def expand_categories(dataset: str, root, category: str) -> list[str]:
    if category == "all":
        return list_categories(dataset, root)
    return [c for c in category.split(",") if c]


def run_grid(specs: list[CellSpec], *, results="results", device="cpu", force=False, precision="fp32",
             progress=None, log=None, on_record=None, attack_batch: int | None = None,
             run_info: dict | None = None) -> list[dict]:
    """Runs every cell in this process, one after another; a failed cell writes a record with an `error`
    field and the grid goes on. (`bench run` runs grids by groups, on an executor: `bench/executors/`.)"""
    log = log or (lambda message: print(message, file=sys.stderr))
    records = []
    for spec in specs:
        try:
            record = run_cell(spec, results=results, device=device, force=force, precision=precision,
                              progress=progress, log=log, attack_batch=attack_batch, run_info=run_info)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - the failure is recorded, not swallowed
            record = failed_record(spec, err)
            record.run = run_info or describe_run(device=device)
            save_record(Path(results).expanduser().resolve(), record, log)
            log(f"cell {spec.cell_id()} failed: {record.error}")
        records.append(record)
        if on_record:
            on_record(record)
    return records
