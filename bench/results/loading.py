"""Reading result records back: validation, duplicates, and bad files named rather than fatal.

A record is one JSON file per grid cell under `<results>/records/` (schema: `robustad.bench.results.records.
Record`). `load_records` is what `bench table` reads: it never raises for a bad file, it names it.
Several records of one cell (same `cell_id`) count once: the newest successful one, else the newest
failed one.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from robustad.bench.results.records import Record, RecordError, records_dir

_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def unique_cells(records: list[Record]) -> tuple[list[Record], list[Record]]:
    """(one record per cell_id, the duplicates left out): the newest successful one, else the newest."""
    best: dict[str, Record] = {}
    dropped = []
    for record in records:
        kept = best.get(record.cell_id)
        if kept is None:
            best[record.cell_id] = record
            continue
        rank = (not record.failed, record.created_time or _EPOCH)
        if rank > (not kept.failed, kept.created_time or _EPOCH):
            best[record.cell_id] = record
            dropped.append(kept)
        else:
            dropped.append(record)
    return list(best.values()), dropped


def load_records(results_dir) -> tuple[list[Record], list[str]]:
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
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"{path}: unreadable ({err}); skipped")
            continue
        except ValueError as err:
            problems.append(f"{path}: not valid JSON, corrupt or partly written ({err}); skipped")
            continue
        try:
            record = Record.from_json(data)
        except RecordError as err:
            problems.append(f"{path}: {err}; skipped")
            continue
        origin[id(record)] = path
        records.append(record)
    records, dropped = unique_cells(records)
    for record in dropped:
        problems.append(f"{origin[id(record)]}: another record of cell {record.cell_id} is newer or "
                        f"successful; skipped")
    return records, problems
