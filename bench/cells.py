"""A cell of the benchmark grid, as a value: what it is, its ids, its checkpoint's key and its failure.

A **cell** is one (method, dataset, category, attack, objective, norm, ε, steps, seed, profile, config,
attack options, root): one result record. Cells that share a checkpoint key (method, profile, config,
dataset, root, category, seed) form a **group**: one model, trained or loaded once, then attacked once
per cell.

This module imports no torch at import time, so planning, job files, status and the command line's
help stay light. Building a `CellSpec` checks its config overrides against the method's config
(which imports the method's module, and so torch): an unknown key or an out-of-range value is refused
when the cell is made, before any work.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import traceback
from pathlib import Path
from typing import Any

from robustad.bench.results.records import Record, now_iso


def safe_name(text: Any) -> str:
    """`text` with every run of characters outside [A-Za-z0-9.+-] replaced by one '-' (file names)."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text))


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
    attack_options: tuple[tuple[str, Any], ...] = ()  # loss, restarts, random_start, step_size, eot, bpda

    def __post_init__(self):
        from robustad.methods import typed_config_overrides

        # Overrides as the config field's type ("0", 0 and 0.0 for a float field are one cell, one row);
        # an unknown key or a value outside its field's domain is refused here, before any work.
        typed = typed_config_overrides(self.method, self.profile, dict(self.config))
        object.__setattr__(self, "config", tuple(sorted(typed.items())))

    @property
    def config_overrides(self) -> dict[str, Any]:
        return dict(self.config)

    def resolved_steps(self) -> int | None:
        """--steps; else None where the name carries them (`pgd-1000`), FGSM, a query-based attack
        (its own query budget) or a `worst:` whose members all carry theirs; else the profile's
        number of attack iterations (for `worst:`, that of its members without `-N`)."""
        from robustad.attacks.registry import takes_default_steps
        from robustad.core.profiles import EVAL_SETTINGS, Profile

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
        return "__".join(safe_name(p) for p in parts if p)

    # -- as JSON (job files) -------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["config"] = [list(pair) for pair in self.config]
        data["attack_options"] = [list(pair) for pair in self.attack_options]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CellSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"cell {data.get('method')}/{data.get('category')}: unknown fields {', '.join(unknown)}")
        values = dict(data)
        values["config"] = tuple(tuple(pair) for pair in data.get("config", ()))
        values["attack_options"] = tuple(tuple(pair) for pair in data.get("attack_options", ()))
        return cls(**values)


# -- groups ------------------------------------------------------------------------------------
def group_key(spec: CellSpec) -> tuple:
    """What decides the checkpoint: two cells with one key share one trained model."""
    return (spec.method, spec.profile, spec.config, spec.dataset, spec.root, spec.category, spec.seed)


def group_id_of(spec: CellSpec) -> str:
    """`method__dataset__category__seed0__profile__<8 hex digits>`: readable and stable."""
    digest = hashlib.sha256(json.dumps(group_key(spec), default=str).encode()).hexdigest()[:8]
    parts = [spec.method, spec.dataset, spec.category, f"seed{spec.seed}", spec.profile, digest]
    return "__".join(safe_name(p) for p in parts)


def checkpoint_path(results: str | Path, config: dict[str, Any], spec: CellSpec, dataset_root: str) -> Path:
    """Where the group's model is kept: keyed by method, the detector's full config (`config_dict()`),
    dataset, its root, category and seed, so a changed default or another tree never reuses a model."""
    key = json.dumps(
        {"method": spec.method, "config": config, "dataset": spec.dataset, "root": dataset_root,
         "category": spec.category, "seed": spec.seed},
        sort_keys=True, default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = Path(results) / "checkpoints" / safe_name(spec.method) / safe_name(spec.dataset) / safe_name(spec.category)
    return folder / f"{digest}.pt"


def expand_categories(dataset: str, root, category: str) -> list[str]:
    """`all` as the dataset tree's categories; otherwise the comma-separated names."""
    if category == "all":
        from robustad.datasets import list_categories

        return list_categories(dataset, root)
    return [c for c in category.split(",") if c]


# -- records that name a cell ---------------------------------------------------------------------
def cell_fields(spec: CellSpec) -> dict[str, Any]:
    """The record fields that name the cell (a failed cell's record has these and its error)."""
    return dict(cell_id=spec.cell_id(), method=spec.method, dataset=spec.dataset, category=spec.category,
                attack=spec.attack, objective=spec.objective, norm=spec.norm, eps=float(spec.eps),
                eps_text=spec.eps_text, steps=spec.resolved_steps(), seed=spec.seed, profile=spec.profile,
                root=spec.root, config_overrides=spec.config_overrides, attack_options=dict(spec.attack_options),
                created=now_iso())


def failed_record(spec: CellSpec, error: BaseException, run: dict | None = None) -> Record:
    """The record of a cell that failed: the grid goes on, the failure is kept."""
    return Record(**cell_fields(spec), error=f"{type(error).__name__}: {error}",
                  traceback=traceback.format_exception(type(error), error, error.__traceback__)[-6:], run=run)
