"""Reading result records back: validation, duplicates, and bad files named rather than fatal.

A record is one JSON file per grid cell under `<results>/records/` (schema in
`robustad.bench.records`). `load_records` is what `bench table` reads: it never raises for a bad
file, it names it. Several records of one cell (same `cell_id`) count once: the newest
successful one, else the newest failed one.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from robustad.bench.records import RECORD_FIELDS, SCHEMA_VERSION, records_dir

METRIC_KEYS = ("image_auroc", "pixel_auroc", "pixel_aupro")
NORMS = ("linf", "l2")
OBJECTIVES = ("localization", "detection")
# Fields every record has, failed ones included; a successful record has all of RECORD_FIELDS.
IDENTITY_FIELDS = ("schema", "cell_id", "method", "dataset", "category", "attack", "objective", "norm",
                   "eps", "steps", "seed", "profile", "clean", "adversarial", "created", "error")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_problems(record) -> list[str]:
    """What makes `record` unusable as a schema-1 result record (empty when it is fine)."""
    if not isinstance(record, dict) or "schema" not in record or "cell_id" not in record:
        return ["not a result record (expected a JSON object with 'schema' and 'cell_id')"]
    if record["schema"] != SCHEMA_VERSION:
        return [f"schema {record['schema']!r}, expected {SCHEMA_VERSION}"]
    failed = record.get("error") is not None
    missing = [f for f in (IDENTITY_FIELDS if failed else RECORD_FIELDS) if f not in record]
    if missing:
        return [f"partial record, missing {', '.join(missing)}"]
    problems = []
    for field in ("cell_id", "method", "dataset", "category", "attack", "profile", "created"):
        if not isinstance(record[field], str) or not record[field]:
            problems.append(f"{field}: expected a non-empty string, got {record[field]!r}")
    if record["objective"] not in OBJECTIVES:
        problems.append(f"objective: expected localization or detection, got {record['objective']!r}")
    if record["norm"] not in NORMS:
        problems.append(f"norm: expected linf or l2, got {record['norm']!r}")
    if not is_number(record["eps"]) or record["eps"] < 0:
        problems.append(f"eps: expected a number >= 0, got {record['eps']!r}")
    if record["steps"] is not None and (not isinstance(record["steps"], int) or isinstance(record["steps"], bool)):
        problems.append(f"steps: expected an integer or null, got {record['steps']!r}")
    if not isinstance(record["seed"], int) or isinstance(record["seed"], bool):
        problems.append(f"seed: expected an integer, got {record['seed']!r}")
    if failed and not isinstance(record["error"], str):
        problems.append(f"error: expected null or a string, got {record['error']!r}")
    if isinstance(record["created"], str) and created_time(record) is None:
        problems.append(f"created: expected an ISO time, got {record['created']!r}")
    for phase in ("clean", "adversarial"):
        block = record[phase]
        if block is None and failed:
            continue
        if not isinstance(block, dict) or any(k not in block for k in METRIC_KEYS):
            problems.append(f"{phase}: expected an object with {', '.join(METRIC_KEYS)}, got {block!r}")
            continue
        for key in METRIC_KEYS:
            value = block[key]
            if value is not None and not (is_number(value) and 0 <= value <= 100):
                problems.append(f"{phase}.{key}: expected null or a percentage in [0, 100], got {value!r}")
    return problems


def created_time(record: dict) -> datetime | None:
    try:
        created = datetime.fromisoformat(record["created"])
    except (TypeError, ValueError):
        return None
    return created if created.tzinfo else created.replace(tzinfo=timezone.utc)


def unique_cells(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(one record per cell_id, the duplicates left out): the newest successful one, else the newest."""
    best: dict[str, dict] = {}
    dropped = []
    for record in records:
        kept = best.get(record["cell_id"])
        if kept is None:
            best[record["cell_id"]] = record
            continue
        rank = (record.get("error") is None, created_time(record) or datetime.min.replace(tzinfo=timezone.utc))
        kept_rank = (kept.get("error") is None, created_time(kept) or datetime.min.replace(tzinfo=timezone.utc))
        if rank > kept_rank:
            best[record["cell_id"]] = record
            dropped.append(kept)
        else:
            dropped.append(record)
    return list(best.values()), dropped


def load_records(results_dir) -> tuple[list[dict], list[str]]:
    """The usable records under `<results_dir>/records/*.json`, one per cell, and the problems met.

    Never raises for bad files: a corrupt, partly written, partial (missing fields) or non-record
    JSON file is skipped and named in the problems, as is a duplicate record of a cell. Failed
    cells (records with a non-null "error") are returned; the tables show them as missing.
    """
    folder = records_dir(Path(results_dir))
    if not folder.is_dir():
        return [], [f"{folder}: no records folder (run `bench run` first)"]
    records, problems, origin = [], [], {}
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):  # a temporary file of an atomic write
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"{path}: unreadable ({err}); skipped")
            continue
        except ValueError as err:
            problems.append(f"{path}: not valid JSON, corrupt or partly written ({err}); skipped")
            continue
        found = record_problems(record)
        if found:
            problems.append(f"{path}: {'; '.join(found)}; skipped")
            continue
        origin[id(record)] = path
        records.append(record)
    records, dropped = unique_cells(records)
    for record in dropped:
        problems.append(f"{origin[id(record)]}: another record of cell {record['cell_id']} is newer or "
                        f"successful; skipped")
    return [with_variant_name(r) for r in records], problems


def with_variant_name(record: dict) -> dict:
    """The record with its config overrides in its method name, so that tables keep variants apart.

    `patchguard` with `--config adv_train=false` becomes "patchguard (adv_train=false)"; the plain
    name stays in "method_base" (filters match either).
    """
    overrides = record.get("config_overrides") or {}
    if not overrides or "method_base" in record:
        return record
    label = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return {**record, "method_base": record["method"], "method": f"{record['method']} ({label})"}

