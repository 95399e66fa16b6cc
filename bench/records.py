"""The published name of the result record, kept for users' scripts: `Record` and its helpers
(`bench/results/records.py`)."""
from robustad.bench.results.records import Metrics, Record, read_record, record_path, write_record

__all__ = ["Metrics", "Record", "read_record", "record_path", "write_record"]
