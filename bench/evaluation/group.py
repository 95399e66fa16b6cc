"""Running a group: prepare its model once, then evaluate each of its cells and write one record each.

This is the one path from cells to records, read top to bottom in `run_group`:

1. the cells whose record is complete are skipped (unless forced), from records read once;
2. `prepare` (seed, build, weights, decode check, lease, fit or load) runs once for the group;
3. each remaining cell: build its attack, run the cheap checks, `evaluate` (clean and adversarial
   passes), fill a `Record`, write it atomically (under the cache's `records-fallback/` when the
   results folder cannot be written);
4. the lease is released.

A cell that fails gets a record with its `error` and the group goes on; when `prepare` itself fails,
every remaining cell of the group gets a record with that error. Executors (`bench/run/`) only decide
where and when `run_group` runs.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from robustad.attacks import create_attack
from robustad.attacks.batching import ChunkedAttack
from robustad.bench.cells import CellSpec, cell_fields, failed_record, group_id_of
from robustad.bench.evaluation.checks import cheap_checks
from robustad.bench.evaluation.evaluate import evaluate
from robustad.bench.evaluation.prepare import GroupBusy, Prepared, prepare
from robustad.bench.results.example_maps import ExampleCollector, save_examples
from robustad.bench.results.provenance import describe_run, git_revision, package_versions
from robustad.bench.results.records import Metrics, Record, read_record, record_path, write_record
from robustad.core.cache import cache_root
from robustad.core.profiles import EVAL_SETTINGS, Profile


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How a group's cells are evaluated (the `bench run` options that are not cells)."""

    device: str = "cpu"
    precision: str = "fp32"
    attack_batch: int | None = None  # images attacked at once (default: the profile's test batch)
    progress: bool | None = None
    evaluations: int | None = None  # scoring passes of a randomized detector (default RANDOMIZED_EVALUATIONS)


# A randomized detector's metrics are means over this many scoring passes by default: enough for a standard
# deviation, few enough to keep the evaluation's cost within a small factor of one pass.
RANDOMIZED_EVALUATIONS = 5


@dataclasses.dataclass
class GroupResult:
    group_id: str
    busy: bool = False  # another live process holds the lease: nothing was run
    holder: object = None  # who holds it, when busy
    records: list[Record] = dataclasses.field(default_factory=list)  # one per cell, in the group's order


def run_group(cells: list[CellSpec], *, results: str | Path = "results", options: EvalOptions = EvalOptions(),
              force: set[str] | bool = False, known: dict[str, Record | None] | None = None,
              run_info: dict | None = None, wait_for_lease: bool = True, log: Callable[[str], None] | None = None,
              on_record: Callable[[Record], None] | None = None, raise_errors: bool = False) -> GroupResult:
    """Evaluates the cells of one group (one checkpoint key) and writes their records.

    `force`: True, or the cell ids to rerun although their record is complete. `known`: the records
    the caller already read for these cells (cell id → record or None); the others are read here,
    once. `wait_for_lease=False` returns at once, `busy`, while another live process holds the
    group's lease; with True it waits, and skips the cells that process completed meanwhile.
    `raise_errors`: a failure is recorded, then raised (the Python API's `run_cell`)."""
    results = Path(results).expanduser().resolve()
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    run_info = run_info or describe_run(device=options.device)
    group_id = group_id_of(cells[0])
    known = dict(known or {})
    for spec in cells:
        if spec.cell_id() not in known:
            known[spec.cell_id()] = read_record(record_path(results, spec.cell_id()))

    def forced(cell_id: str) -> bool:
        return force is True or (force is not False and cell_id in force)

    def todo() -> list[CellSpec]:
        return [spec for spec in cells if forced(spec.cell_id()) or not is_complete(known[spec.cell_id()])]

    pending = todo()
    for spec in cells:
        if spec not in pending:
            log(f"skipping {spec.cell_id()}: record exists (use --force to rerun)")
    written: dict[str, Record] = {}
    if pending:
        try:
            prepared = prepare(cells[0], results=results, device=options.device, log=log,
                               wait_for_lease=wait_for_lease)
        except GroupBusy as busy:
            return GroupResult(group_id, busy=True, holder=busy.holder)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - every cell of the group records the failure
            for spec in pending:
                written[spec.cell_id()] = record_failure(results, spec, err, run_info, log, on_record)
            if raise_errors:
                raise
        else:
            with prepared:
                if prepared.waited_for_lease:  # the holder may have completed some of them meanwhile
                    for spec in pending:
                        known[spec.cell_id()] = read_record(record_path(results, spec.cell_id()))
                    pending = [spec for spec in pending if forced(spec.cell_id()) or not is_complete(known[spec.cell_id()])]
                for spec in pending:
                    try:
                        record = evaluate_cell(prepared, spec, results=results, options=options, run_info=run_info,
                                               log=log)
                    except KeyboardInterrupt:
                        raise
                    except Exception as err:  # noqa: BLE001 - the failure is recorded, not swallowed
                        written[spec.cell_id()] = record_failure(results, spec, err, run_info, log, on_record)
                        if raise_errors:
                            raise
                        continue
                    save_record(results, record, log)
                    written[spec.cell_id()] = record
                    if on_record:
                        on_record(record)
    records = [written.get(spec.cell_id()) or known[spec.cell_id()] for spec in cells]
    return GroupResult(group_id, records=[r for r in records if r is not None])


def is_complete(record: Record | None) -> bool:
    return record is not None and record.done


def record_failure(results: Path, spec: CellSpec, error: BaseException, run_info: dict, log,
                   on_record) -> Record:
    record = failed_record(spec, error, run=run_info)
    save_record(results, record, log)
    log(f"cell {spec.cell_id()} failed: {record.error}")
    if on_record:
        on_record(record)
    return record


def evaluate_cell(prepared: Prepared, spec: CellSpec, *, results: Path, options: EvalOptions, run_info: dict,
                  log: Callable[[str], None]) -> Record:
    """One cell on the prepared model: its attack, the cheap checks, the evaluation, its record (not written)."""
    detector, device = prepared.detector, prepared.device
    if spec.objective == "localization" and not detector.localizes:
        raise ValueError(f"--objective localization: method {spec.method!r} does not localize (it gives one score "
                         f"per image); use --objective detection")
    profile = Profile.parse(spec.profile)
    attack = create_attack(spec.attack, norm=spec.norm, eps=spec.eps, steps=spec.resolved_steps(), seed=spec.seed,
                           objective=spec.objective, **dict(spec.attack_options))
    attack = ChunkedAttack(attack, max_batch=options.attack_batch)  # halves the chunk on a CUDA out-of-memory error
    settings = EVAL_SETTINGS[profile]
    test_set = prepared.test_set
    first = next(iter(DataLoader(test_set, batch_size=min(4, len(test_set)), shuffle=True,
                                 generator=torch.Generator().manual_seed(spec.seed))))
    checks = cheap_checks(detector, first["image"].to(device), first["mask"].to(device))
    examples = ExampleCollector()
    evaluations = (options.evaluations or RANDOMIZED_EVALUATIONS) if detector.randomized else 1
    result = evaluate(detector, test_set, attack, batch_size=options.attack_batch or settings.batch_size,
                      device=device, precision=options.precision, max_images=settings.max_test_images,
                      progress=options.progress, examples=examples, evaluations=evaluations)
    checks["inside_threat_model"] = True  # evaluate() raises otherwise
    described = attack.describe()
    return Record(
        **{**cell_fields(spec),
           "attack": described["attack"] if spec.attack.startswith("worst:") else spec.attack,
           "steps": described["steps"], "profile": profile.value, "root": str(prepared.train_set.format.root)},
        precision=options.precision,
        device=str(device),
        config=detector.config_dict(),
        n_test=result["n_test"],
        n_test_normal=result["n_test_normal"],
        n_test_anomalous=result["n_test_anomalous"],
        clean=Metrics(**result["clean"]),
        adversarial=Metrics(**result["adversarial"]),
        seconds={"fit": prepared.fit_seconds, "checkpoint_reused": prepared.reused, **result["seconds"]},
        attack_config=described,
        attack_calibration=result["calibration"],
        checks=checks,
        versions=package_versions(),
        git_revision=git_revision(),
        checkpoint_sha256=prepared.checkpoint_sha256,
        weights=prepared.weights,
        run=run_info,
        examples=save_examples_or_warn(results, spec.cell_id(), examples, log),
    )


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


# -- the Python API ------------------------------------------------------------------------------
def run_cells(specs: list[CellSpec], *, results: str | Path = "results", device: str = "cpu", force: bool = False,
              precision: str = "fp32", progress: bool | None = None, log=None, on_record=None,
              attack_batch: int | None = None, run_info: dict | None = None, raise_errors: bool = False,
              evaluations: int | None = None) -> list[Record]:
    """Runs cells in this process, group by group (each model prepared once); one record per cell, in
    the order given. A failed cell has a record with its `error`, and the others go on (with
    `raise_errors`, its error is raised once recorded)."""
    options = EvalOptions(device=device, precision=precision, attack_batch=attack_batch, progress=progress,
                          evaluations=evaluations)
    groups: dict[str, list[CellSpec]] = {}
    for spec in specs:
        cells = groups.setdefault(group_id_of(spec), [])
        if spec not in cells:
            cells.append(spec)
    by_id: dict[str, Record] = {}
    for cells in groups.values():
        outcome = run_group(cells, results=results, options=options, force=force, run_info=run_info, log=log,
                            on_record=on_record, raise_errors=raise_errors)
        by_id.update((record.cell_id, record) for record in outcome.records)
    return [by_id[spec.cell_id()] for spec in specs if spec.cell_id() in by_id]


def run_cell(spec: CellSpec, *, results: str | Path = "results", device: str = "cpu", force: bool = False,
             precision: str = "fp32", progress: bool | None = None, log=None, attack_batch: int | None = None,
             run_info: dict | None = None) -> Record:
    """Runs one cell and returns its record (the existing one when the cell is done); a failure is
    recorded, then raised."""
    (record,) = run_cells([spec], results=results, device=device, force=force, precision=precision,
                          progress=progress, log=log, attack_batch=attack_batch, run_info=run_info, raise_errors=True)
    return record
