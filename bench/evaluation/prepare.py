"""Preparing a group's model: the one place that builds a detector for a cell.

`prepare(spec)` seeds, builds the detector once (its config from the profile and the cell's
overrides, after the detector's own `cell_overrides` hook, e.g. a folder of per-category weights
becoming this category's file), opens the train and test sets at its image size, checks that every
image decodes, takes the lease of the group's checkpoint and then fits the detector or loads its
checkpoint — or, when the detector holds weights the user gave (`given_weights`), evaluates them as
they are. A transductive detector (`uses_test_references`) then receives the clean test set. `bench run` (every executor), `bench check` and `bench attention-degree` all go through it.

The lease (`bench/run/lease.py`) makes the holder the one process that trains and attacks this model:
while another process holds it, `prepare` waits (or, with `wait_for_lease=False`, raises
`GroupBusy`), then loads the checkpoint the other process saved. Leave the `with` block to release it.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from robustad.bench.cells import CellSpec, checkpoint_path, group_id_of
from robustad.bench.results.lease import Holder, Lease
from robustad.core.seeding import seed_everything
from robustad.datasets import create_dataset
from robustad.datasets.decode_check import check_decodes
from robustad.methods import create_method, resolve_method
from robustad.methods.checkpoint import CheckpointMismatchError, file_sha256


class RunError(RuntimeError):
    """A cell could not run (bad input, failed check); the message says why."""


class GroupBusy(RuntimeError):
    """Another live process holds the group's lease (it trains or attacks this model now)."""

    def __init__(self, holder: Holder | None):
        self.holder = holder
        super().__init__(f"held by {holder.describe() if holder else 'another process'}")


@dataclasses.dataclass
class Prepared:
    """A fitted (or loaded) detector with its data, ready to be attacked, and its group's lease."""

    spec: CellSpec  # the group's first cell
    detector: Any
    train_set: Any
    test_set: Any
    device: torch.device
    checkpoint: Path | None  # None when the detector holds given weights
    fit_seconds: float
    reused: bool  # the checkpoint was loaded, not trained
    lease: Lease | None = None
    waited_for_lease: bool = False  # another process held the lease first (its records may be new)

    @property
    def weights(self) -> dict | None:
        return self.detector.given_weights

    @property
    def checkpoint_sha256(self) -> str | None:
        return file_sha256(self.checkpoint) if self.checkpoint is not None and self.checkpoint.exists() else None

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def __enter__(self) -> "Prepared":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def build_detector(spec: CellSpec):
    """The cell's detector, seeded from the cell's seed, with the method's own `cell_overrides` applied."""
    overrides = resolve_method(spec.method).cell_overrides(spec.config_overrides, spec.dataset, spec.category)
    return create_method(spec.method, profile=spec.profile, seed=spec.seed, **overrides)


def prepare(spec: CellSpec, *, results: str | Path = "results", device: str = "cpu", log: Callable[[str], None] = print,
            wait_for_lease: bool = True) -> Prepared:
    """The group's detector, fitted or loaded, in eval mode on `device` (see the module docstring).

    Raises `GroupBusy` when `wait_for_lease` is False and another live process holds the lease."""
    results = Path(results).expanduser().resolve()
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda: no CUDA device is available here")
    detector = build_detector(spec)
    datasets = {split: create_dataset(spec.dataset, root=spec.root, category=spec.category, split=split,
                                      image_size=detector.image_size) for split in ("train", "test")}
    for split in ("train", "test"):  # a truncated test image is found now, not after the fit
        check_decodes(datasets[split], detector.image_size)
    path = checkpoint_path(results, detector.config_dict(), spec, str(datasets["train"].format.root))
    lease = Lease(path, group=group_id_of(spec), log=log)
    if not lease.acquire(wait=False):
        if not wait_for_lease:
            raise GroupBusy(lease.holder)
        lease.acquire(wait=True)
        waited = True
    else:
        waited = False
    try:
        detector.to(torch_device)
        if detector.given_weights is not None:
            weights = detector.given_weights
            log(f"evaluating {weights['source']} {weights['path']} (sha256 {weights['sha256'][:12]}), no training")
            checkpoint, fit_seconds, reused = None, 0.0, False
        else:
            check_room_for_checkpoint(results, detector)
            fit_seconds, reused = fit_or_load(detector, path, spec.seed, datasets["train"], log)
            checkpoint = path
        detector.to(torch_device).eval()
        if getattr(detector, "uses_test_references", False):  # transductive: the clean test set, fixed from here on
            test = datasets["test"]
            detector.set_test_references(torch.stack([test[i]["image"] for i in range(len(test))]).to(torch_device))
        seed_everything(spec.seed)  # what follows draws the same numbers whether the model was fitted or loaded
    except BaseException:
        lease.release()
        raise
    return Prepared(spec=spec, detector=detector, train_set=datasets["train"], test_set=datasets["test"],
                    device=torch_device, checkpoint=checkpoint, fit_seconds=fit_seconds, reused=reused, lease=lease,
                    waited_for_lease=waited)


def fit_or_load(detector, path: Path, seed: int, train_set, log: Callable[[str], None]) -> tuple[float, bool]:
    """Loads the checkpoint at `path` or trains the detector (seeded right before `fit`) and saves it;
    returns (fit seconds, reused). The caller holds the checkpoint's lease."""
    if path.exists():
        try:
            detector.load_checkpoint(path)
            log(f"reusing checkpoint {path}")
            return 0.0, True
        except CheckpointMismatchError as err:
            log(f"ignoring unusable checkpoint: {err}")
    seed_everything(seed)
    start = time.perf_counter()
    detector.fit(train_set)
    seconds = time.perf_counter() - start
    try:
        detector.save_checkpoint(path)
    except OSError as err:  # a disk filled during the fit: keep the trained model, evaluate it anyway
        log(f"warning: could not save the checkpoint {path} ({err.strerror or err}); the cell goes on with "
            f"the model in memory, and a rerun trains it again")
    return seconds, False


def check_room_for_checkpoint(results: Path, detector) -> None:
    """Refuses to train when the results folder's disk cannot hold the checkpoint (twice its weights, for
    the temporary file of the atomic write), before any training."""
    weights = sum(t.numel() * t.element_size() for t in detector.state_dict().values())
    results.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(results).free
    if free < 2 * weights + (16 << 20):
        raise RunError(f"--results {results}: {free / 2**20:.0f} MiB free, too little for a checkpoint of "
                       f"{weights / 2**20:.0f} MiB; free some space or choose another folder")
