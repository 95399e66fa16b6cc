"""How long a group will take: to run the longest groups first, to cut balanced shards, and for
`bench run --dry-run`'s device-hours.

A group costs its fit plus its attacks:

    fit    = fit seconds per training image x training images   (0 when its checkpoint was trained)
    attack = sum over cells of seconds per image-step x test images x attack steps

The rates come from the records already in the results folder when there are some -- per method and
profile for fits, per method, profile and attack for attacks (a query-based attack or FGSM, which
have no steps, count one step per image, so its rate absorbs its budget). Before a method has any
record, its detector class's `cost_prior(config, profile)` hook gives them (a detector holding given
weights declares a fit of 0); a method that declares none gets the generic prior below, sized on
the costliest method of the suite so that an estimate errs long (`docs/findings/patchguard-cpu-scale.md`,
`docs/findings/attack-engine-performance.md`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import statistics
from collections import defaultdict
from pathlib import Path

from robustad.bench.results.records import Record
from robustad.bench.run.jobs import Group
from robustad.core.profiles import EVAL_SETTINGS, Profile


@dataclasses.dataclass(frozen=True)
class Rates:
    fit_per_train_image: float  # seconds
    attack_per_image_step: float  # seconds


GENERIC_PRIORS = {  # seconds per training image / per attacked image·step, for a method without its own
    Profile.QUICK: Rates(fit_per_train_image=11.0, attack_per_image_step=0.003),
    Profile.LONG: Rates(fit_per_train_image=67.0, attack_per_image_step=0.005),
    Profile.PAPER: Rates(fit_per_train_image=16.0, attack_per_image_step=0.001),
    Profile.OFFICIAL: Rates(fit_per_train_image=16.0, attack_per_image_step=0.001),
}


def method_prior(cell, profile: Profile) -> Rates:
    """The method's own `cost_prior` for this cell's config and profile, else the generic prior."""
    from robustad.methods import method_config, resolve_method

    try:
        declared = resolve_method(cell.method).cost_prior(
            method_config(cell.method, profile, **cell.config_overrides), profile)
    except (ValueError, KeyError):  # an estimate never stops a run; the run reports the method's problem
        declared = None
    return Rates(*declared) if declared is not None else GENERIC_PRIORS[profile]
UNKNOWN_SIZE = 200  # images per split assumed when a dataset cannot be listed


@dataclasses.dataclass(frozen=True)
class Estimate:
    fit_s: float
    attack_s: float
    measured: bool  # from this results folder's records (else the profile's prior)

    @property
    def total_s(self) -> float:
        return self.fit_s + self.attack_s


@functools.lru_cache(maxsize=None)
def split_sizes(dataset: str, root: str | None, category: str) -> tuple[int, int]:
    """(training images, test images) of a category, by listing its files; UNKNOWN_SIZE where it cannot."""
    from robustad.datasets.registry import open_format

    try:
        fmt = open_format(dataset, root)
        return len(fmt.samples(category, "train")), len(fmt.samples(category, "test"))
    except Exception:  # noqa: BLE001 - an estimate never stops a run; the run reports the dataset's problem
        return UNKNOWN_SIZE, UNKNOWN_SIZE


def overrides_key(overrides: dict) -> str:
    """Config overrides as one comparable string (a tuple value is a list once read back from JSON)."""
    return json.dumps(overrides, sort_keys=True, default=list)


def attack_steps(steps: int | None) -> int:
    return max(1, int(steps or 1))


def cell_steps(cell) -> int:
    """The attack iterations of a cell: --steps, the name's `-N` suffix, the profile's; else 1."""
    from robustad.attacks.registry import split_attack_name

    steps = cell.resolved_steps()
    if steps is None and not cell.attack.startswith("worst:"):
        steps = split_attack_name(cell.attack)[1]
    return attack_steps(steps)


class CostModel:
    """Rates measured from the records of a results folder, with the profile priors as fallback."""

    def __init__(self, records: list[Record] = ()):
        """`records`: the results folder's records, read once by the caller (`load_records`)."""
        self.fit_rates: dict[tuple, list[float]] = defaultdict(list)
        self.attack_rates: dict[tuple, list[float]] = defaultdict(list)
        self.trained: set[tuple] = set()  # (method, profile, config, dataset, category, seed) with a checkpoint
        for record in records:
            if not record.failed:
                self._learn(record)

    def _learn(self, record) -> None:
        seconds = record.seconds or {}
        self.trained.add((record.method, record.profile, overrides_key(record.config_overrides),
                          record.dataset, record.category, record.seed))
        n_train, _ = split_sizes(record.dataset, record.root, record.category)
        if seconds.get("fit") and not seconds.get("checkpoint_reused") and n_train:
            self.fit_rates[(record.method, record.profile)].append(seconds["fit"] / n_train)
        if seconds.get("attack") is not None and record.n_test:
            rate = seconds["attack"] / (record.n_test * attack_steps(record.steps))
            self.attack_rates[(record.method, record.profile, record.attack)].append(rate)
            self.attack_rates[(record.method, record.profile)].append(rate)

    def estimate(self, group: Group, prior_only: bool = False) -> Estimate:
        first = group.first
        profile = Profile.parse(first.profile)
        prior = method_prior(first, profile)
        n_train, n_test = split_sizes(first.dataset, first.root, first.category)
        cap = EVAL_SETTINGS[profile].max_test_images
        n_test = min(n_test, cap) if cap else n_test
        measured = False
        fit_rates = [] if prior_only else self.fit_rates.get((first.method, first.profile), [])
        trained = not prior_only and (first.method, first.profile, overrides_key(first.config_overrides),
                                      first.dataset, first.category, first.seed) in self.trained
        if trained:
            fit_s, measured = 0.0, True
        elif fit_rates:
            fit_s, measured = statistics.median(fit_rates) * n_train, True
        else:
            fit_s = prior.fit_per_train_image * n_train
        attack_s = 0.0
        for cell in group.cells:
            rates = [] if prior_only else (self.attack_rates.get((first.method, first.profile, cell.attack))
                                           or self.attack_rates.get((first.method, first.profile)) or [])
            rate = statistics.median(rates) if rates else prior.attack_per_image_step
            measured = measured or bool(rates)
            attack_s += rate * n_test * cell_steps(cell)
        return Estimate(fit_s=fit_s, attack_s=attack_s, measured=measured)


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
