"""Result records: one JSON file per grid cell, one typed definition (`Record`), written atomically.

Records live in `<results>/records/<cell_id>.json`. `Record` is the schema: the runner fills it,
`Record.from_json` reads and validates it (`bench table`, `bench report`), the tables use its
attributes. Numbers are stored as numbers; metrics are percentages, null where a dataset has no
pixel masks. Fields added after the first records were written (`root`, `precision`, `device`,
`attack_options`, `run`, `examples`, ...) have defaults, so older files of schema 1 still load.
"""
from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robustad.core.files import write_text_atomic

SCHEMA_VERSION = 1
METRIC_KEYS = ("image_auroc", "pixel_auroc", "pixel_aupro")
NORMS = ("linf", "l2")
OBJECTIVES = ("localization", "detection")


class RecordError(ValueError):
    """A JSON object that is not a usable result record; `problems` says why."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


SPREAD_KEYS = tuple(f"{key}_{kind}" for key in METRIC_KEYS for kind in ("std", "worst"))


@dataclasses.dataclass(frozen=True)
class Metrics:
    """AUROC and AUPRO of one phase (clean or adversarial), in percent; None where not measurable.

    A randomized detector is evaluated `evaluations` times: each metric is then the mean over those
    passes, `<metric>_std` its standard deviation and `<metric>_worst` its lowest value."""

    image_auroc: float | None
    pixel_auroc: float | None
    pixel_aupro: float | None
    evaluations: int | None = None  # None: one evaluation
    image_auroc_std: float | None = None
    image_auroc_worst: float | None = None
    pixel_auroc_std: float | None = None
    pixel_auroc_worst: float | None = None
    pixel_aupro_std: float | None = None
    pixel_aupro_worst: float | None = None

    @classmethod
    def from_json(cls, block, phase: str) -> "Metrics":
        if not isinstance(block, dict) or any(k not in block for k in METRIC_KEYS):
            raise RecordError([f"{phase}: expected an object with {', '.join(METRIC_KEYS)}, got {block!r}"])
        problems = [f"{phase}.{key}: expected null or a percentage in [0, 100], got {block[key]!r}"
                    for key in METRIC_KEYS + SPREAD_KEYS
                    if block.get(key) is not None and not (is_number(block[key]) and 0 <= block[key] <= 100)]
        if problems:
            raise RecordError(problems)
        values = {k: None if block.get(k) is None else float(block[k]) for k in METRIC_KEYS + SPREAD_KEYS}
        evaluations = block.get("evaluations")
        return cls(**values, evaluations=int(evaluations) if evaluations is not None else None)

    @property
    def repeated(self) -> bool:
        """Means over several evaluations of a randomized detector."""
        return (self.evaluations or 1) > 1


# The fields a successful record must have (a failed one may leave them out).
RESULT_FIELDS = ("config", "n_test", "n_test_normal", "n_test_anomalous", "clean", "adversarial", "seconds",
                 "attack_config", "checks", "versions", "git_revision", "checkpoint_sha256")


@dataclasses.dataclass
class Record:
    """One evaluated (or failed) cell of the grid. `bench/evaluation/group.py` fills it."""

    # -- what was evaluated ------------------------------------------------------------------
    cell_id: str
    method: str
    dataset: str
    category: str
    attack: str  # as named in the grid, e.g. "pgd-1000" or "worst:pgd-20,square"
    objective: str  # localization | detection
    norm: str  # linf | l2
    eps: float  # in [0, 1] pixel units
    eps_text: str  # as given, e.g. "8/255"
    steps: int | None  # attack iterations (None: the attack's own budget, e.g. FGSM)
    seed: int
    profile: str
    created: str  # ISO time, UTC
    root: str | None = None  # the dataset tree
    config_overrides: dict = dataclasses.field(default_factory=dict)  # --config, typed values
    attack_options: dict = dataclasses.field(default_factory=dict)  # --loss, --restarts, --attack-option ...
    precision: str = "fp32"
    device: str = "cpu"
    # -- what came out -----------------------------------------------------------------------
    config: dict | None = None  # the method's full config
    n_test: int | None = None
    n_test_normal: int | None = None
    n_test_anomalous: int | None = None
    clean: Metrics | None = None
    adversarial: Metrics | None = None
    seconds: dict | None = None  # fit, clean, attack; checkpoint_reused
    attack_config: dict | None = None  # the attack's full settings (members of a composite included)
    attack_calibration: dict | None = None  # the whole-test-set calibration the attack used, if any
    checks: dict | None = None  # the cheap soundness checks
    versions: dict | None = None
    git_revision: str | None = None
    checkpoint_sha256: str | None = None
    weights: dict | None = None  # where given weights came from instead of training (e.g. the authors')
    run: dict | None = None  # who ran it: executor, worker, host, attempt, device
    examples: str | None = None  # a few clean/adversarial images and maps (Figure 1), relative to the results folder
    error: str | None = None  # "Type: message" when the cell failed
    traceback: list | None = None
    schema: int = SCHEMA_VERSION

    # -- reading and writing -----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data) -> "Record":
        """The record in a parsed JSON object; raises `RecordError` naming every problem."""
        if not isinstance(data, dict) or "schema" not in data or "cell_id" not in data:
            raise RecordError(["not a result record (expected a JSON object with 'schema' and 'cell_id')"])
        if data["schema"] != SCHEMA_VERSION:
            raise RecordError([f"schema {data['schema']!r}, expected {SCHEMA_VERSION}"])
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [name for name, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        failed = data.get("error") is not None
        missing = [f for f in (required if failed else required + list(RESULT_FIELDS)) if f not in data]
        if missing:
            raise RecordError([f"partial record, missing {', '.join(sorted(missing))}"])
        values = {k: v for k, v in data.items() if k in fields}
        problems = _identity_problems(values)
        for phase in ("clean", "adversarial"):
            if values.get(phase) is None:
                if not failed and phase in data:
                    problems.append(f"{phase}: expected an object with {', '.join(METRIC_KEYS)}, got None")
                continue
            try:
                values[phase] = Metrics.from_json(values[phase], phase)
            except RecordError as err:
                problems += err.problems
        if problems:
            raise RecordError(problems)
        return cls(**values)

    # -- derived ---------------------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def done(self) -> bool:
        """A complete record without error (a rerun skips its cell)."""
        return not self.failed and self.adversarial is not None

    @property
    def created_time(self) -> datetime | None:
        return parse_time(self.created)

    @property
    def method_label(self) -> str:
        """The method with its config overrides, so that tables keep variants apart:
        `patchguard` with `--config adv_train=false` is "patchguard (adv_train=False)"."""
        if not self.config_overrides:
            return self.method
        return f"{self.method} ({', '.join(f'{k}={v}' for k, v in sorted(self.config_overrides.items()))})"

    def metric(self, phase: str, key: str) -> float | None:
        block = getattr(self, phase)
        return None if block is None or self.failed else getattr(block, key)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_time(text) -> datetime | None:
    try:
        created = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return created if created.tzinfo else created.replace(tzinfo=timezone.utc)


def _identity_problems(values: dict) -> list[str]:
    problems = []
    for field in ("cell_id", "method", "dataset", "category", "attack", "profile", "created"):
        if not isinstance(values[field], str) or not values[field]:
            problems.append(f"{field}: expected a non-empty string, got {values[field]!r}")
    if values["objective"] not in OBJECTIVES:
        problems.append(f"objective: expected localization or detection, got {values['objective']!r}")
    if values["norm"] not in NORMS:
        problems.append(f"norm: expected linf or l2, got {values['norm']!r}")
    if not is_number(values["eps"]) or values["eps"] < 0:
        problems.append(f"eps: expected a number >= 0, got {values['eps']!r}")
    steps = values["steps"]
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)):
        problems.append(f"steps: expected an integer or null, got {steps!r}")
    if not isinstance(values["seed"], int) or isinstance(values["seed"], bool):
        problems.append(f"seed: expected an integer, got {values['seed']!r}")
    error = values.get("error")
    if error is not None and not isinstance(error, str):
        problems.append(f"error: expected null or a string, got {error!r}")
    if isinstance(values["created"], str) and parse_time(values["created"]) is None:
        problems.append(f"created: expected an ISO time, got {values['created']!r}")
    for field in ("config_overrides", "attack_options"):
        if field in values and not isinstance(values[field], dict):
            problems.append(f"{field}: expected an object, got {values[field]!r}")
    return problems


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


# ---------------------------------------------------------------------------------------------
# Files


def records_dir(results: Path) -> Path:
    return Path(results).expanduser().resolve() / "records"


def record_path(results: Path, cell_id: str) -> Path:
    return records_dir(results) / f"{cell_id}.json"


def _jsonable(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN); tuples become lists; enums their value."""
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


def write_record(results: Path, record: Record) -> Path:
    path = record_path(results, record.cell_id)
    write_json_atomic(path, record.to_json())
    return path


def read_record(path: Path) -> Record | None:
    """The record at `path`, or None when it is missing, unreadable or not a valid record."""
    try:
        with open(path) as handle:
            return Record.from_json(json.load(handle))
    except (OSError, ValueError):
        return None
