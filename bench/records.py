"""Result records: one JSON file per grid cell, written atomically.

Records live in `<results>/records/<cell_id>.json`. Field names are stable (see `RECORD_FIELDS`);
numbers are stored as numbers and pixel metrics as null where a dataset has no masks.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from robustad.core.files import write_text_atomic

SCHEMA_VERSION = 1
RECORD_FIELDS = (
    "schema", "cell_id", "method", "dataset", "category", "attack", "objective", "norm", "eps",
    "eps_text", "steps", "seed", "profile", "config_overrides", "config", "n_test", "n_test_normal",
    "n_test_anomalous", "clean", "adversarial", "seconds", "attack_config", "checks", "versions",
    "git_revision", "checkpoint_sha256", "created", "error",
)


def records_dir(results: Path) -> Path:
    return Path(results).expanduser().resolve() / "records"


def record_path(results: Path, cell_id: str) -> Path:
    return records_dir(results) / f"{cell_id}.json"


def _jsonable(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN); tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return _jsonable(value.item())
    if hasattr(value, "value") and isinstance(getattr(value, "value"), str):  # enums
        return value.value
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    """Writes JSON atomically (`robustad.core.files.write_text_atomic`); NaN becomes null."""
    write_text_atomic(path, json.dumps(_jsonable(payload), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_record(results: Path, record: dict) -> Path:
    path = record_path(results, record["cell_id"])
    write_json_atomic(path, record)
    return path


def read_record(path: Path) -> dict | None:
    """The record at `path`, or None when it is missing, unreadable or not a record."""
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or "cell_id" not in record or "schema" not in record:
        return None
    return record


def is_done(results: Path, cell_id: str) -> bool:
    """True when a complete record without error exists for the cell."""
    record = read_record(record_path(results, cell_id))
    return record is not None and not record.get("error") and record.get("adversarial") is not None
