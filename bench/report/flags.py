"""Warnings the report raises about a results folder: signs that an evaluation is not sound or not
comparable (docs/design.md, "Evaluation must be sound").

- `black-box`: a black-box attack (query-based: Square, SimBA) beat every white-box attack run on
  the same model, setting and budget by more than `margin` AUROC points — a sign of gradient masking.
- `composite`: a composite attack (`worst:...`, AutoAttack) is weaker than one of its members run
  on its own by more than `margin` — the per-image worst case can only be at least as strong.
- `inverted`: a clean AUROC below 50 — the map (or score) ranks normal above anomalous.
- `missing`: a mean over fewer categories than the dataset has in the results (a failed or
  missing cell), so it is not comparable with the other means of its table.
- `profile`: records of a profile other than `paper`: not the paper's setting.

Each flag names the records it comes from (`cell_ids`), which the report links.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict

from robustad.bench.results.records import Record
from robustad.bench.report.tables import _attack_and_steps

TASK_METRICS = {"ad": "image_auroc", "al": "pixel_auroc"}
FLAG_KINDS = {
    "black-box": "black-box attack stronger than the white-box ones",
    "composite": "composite attack weaker than one of its members",
    "inverted": "AUROC below 50 (an inverted map)",
    "missing": "categories missing from a mean",
    "profile": "profile not paper",
}


@dataclasses.dataclass(frozen=True)
class Flag:
    kind: str  # a key of FLAG_KINDS
    message: str
    dataset: str
    category: str | None  # None: about a mean over categories
    method: str | None  # the method's label
    cell_ids: tuple[str, ...] = ()
    task: str | None = None  # ad | al; None: both
    profile: str | None = None  # the records' profile

    @property
    def title(self) -> str:
        return FLAG_KINDS[self.kind]


def is_black_box(attack: str) -> bool:
    """Square and SimBA (attacks whose steps count queries); a composite is neither kind."""
    from robustad.attacks import ATTACKS

    if is_composite(attack):
        return False
    base, _ = _attack_and_steps(attack, None)
    return base in ATTACKS and bool(getattr(ATTACKS.get(base), "steps_are_queries", False))


def is_composite(attack: str) -> bool:
    return attack.startswith("worst:") or _attack_and_steps(attack, None)[0] == "autoattack"


def composite_members(record: Record) -> list[tuple[str, int | None]]:
    """(attack, steps) of each member of a composite record: `worst:` names them, AutoAttack's
    `attack_config` lists them."""
    if record.attack.startswith("worst:"):
        return [_attack_and_steps(m.strip(), None) for m in record.attack[len("worst:"):].split(",") if m.strip()]
    members = (record.attack_config or {}).get("members") or []
    return [(str(m.get("attack")), m.get("steps")) for m in members if isinstance(m, dict)]


def _model_key(record: Record) -> tuple:
    """Records with one key attack one model with one threat model: their AUROCs are comparable."""
    return (record.method_label, record.dataset, record.category, record.seed, record.profile, record.objective,
            record.norm, round(record.eps, 6))


def _pct(value: float) -> str:
    return f"{value:.1f}"


def attack_flags(records: list[Record], margin: float = 1.0) -> list[Flag]:
    """The `black-box`, `composite` and `inverted` flags, per cell."""
    flags = []
    by_model: dict[tuple, list[Record]] = defaultdict(list)
    for record in records:
        if record.done:
            by_model[_model_key(record)].append(record)
    for key, group in by_model.items():
        method, dataset, category, _, profile = key[:5]
        for task, metric in TASK_METRICS.items():
            measured = [(r, r.metric("adversarial", metric)) for r in group]
            measured = [(r, v) for r, v in measured if v is not None]
            white = [(r, v) for r, v in measured if not is_black_box(r.attack) and not is_composite(r.attack)]
            for record, value in measured:
                if is_black_box(record.attack) and white:
                    strongest, best = min(white, key=lambda rv: rv[1])
                    if value < best - margin:
                        flags.append(Flag("black-box", (
                            f"{task.upper()}: {record.attack} reaches {_pct(value)} where the strongest white-box attack "
                            f"run ({strongest.attack}) reaches {_pct(best)}: gradient masking?"),
                            dataset, category, method, (record.cell_id, strongest.cell_id), task, profile))
                if is_composite(record.attack):
                    for member, steps in composite_members(record):
                        for other, other_value in measured:
                            if other is record or is_composite(other.attack):
                                continue
                            if _attack_and_steps(other.attack, other.steps) != (member, steps):
                                continue
                            if value > other_value + margin:
                                flags.append(Flag("composite", (
                                    f"{task.upper()}: {record.attack} reaches {_pct(value)}, weaker than its member "
                                    f"{other.attack} alone ({_pct(other_value)})"),
                                    dataset, category, method, (record.cell_id, other.cell_id), task, profile))
        seen = set()
        for record in group:
            for task, metric in TASK_METRICS.items():
                clean = record.metric("clean", metric)
                if clean is not None and clean < 50 and (task, record.checkpoint_sha256 or record.cell_id) not in seen:
                    seen.add((task, record.checkpoint_sha256 or record.cell_id))
                    ranks = "the image scores rank" if task == "ad" else "the map ranks"
                    flags.append(Flag("inverted", f"{task.upper()}: clean AUROC {_pct(clean)} < 50, {ranks} "
                                      f"normal above anomalous", dataset, category, method, (record.cell_id,), task,
                                      profile))
    return flags


def profile_flags(records: list[Record]) -> list[Flag]:
    """One `profile` flag per method, dataset and profile other than `paper`."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for record in records:
        if record.profile != "paper":
            groups[(record.method_label, record.dataset, record.profile)].append(record.cell_id)
    return [Flag("profile", f"profile {profile}, not the paper's setting: not comparable with the paper's figures",
                 dataset, None, method, tuple(sorted(ids)), None, profile)
            for (method, dataset, profile), ids in sorted(groups.items())]


def missing_flag(dataset: str, method: str, what: str, missing: list[str], n_categories: int, cell_ids,
                 task: str | None = None, profile: str | None = None) -> Flag:
    """`what` (e.g. "AD, PGD-5") is a mean over fewer than the dataset's `n_categories` categories."""
    return Flag("missing", f"{what}: mean over {n_categories - len(missing)} of {n_categories} categories, without "
                f"{', '.join(missing)} (failed or not run)", dataset, None, method, tuple(cell_ids), task, profile)
