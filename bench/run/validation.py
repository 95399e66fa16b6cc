"""What `bench run` checks before any training, so that a mistake costs seconds, not a fit.

Names of methods, attacks and config keys, and config values against their fields' domains, are
checked by building configs and attacks (`cli.validate_run_arguments`); this module adds the
budget, the dataset and categories, what each method checks itself, and the results folder. Each failure is a `ValueError` whose
message names the option and what was expected.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

LINF_UNUSUAL = 32 / 255  # above this an L∞ budget is no longer "imperceptible" on [0, 1] images
L2_UNUSUAL = 4.0  # the paper's largest L2 budget is 128/255 ≈ 0.5


def check_eps(norm: str, eps_values: list[float], warn=lambda message: print(message, file=sys.stderr)) -> None:
    """Refuses an L∞ ε of 1 or more (every image can be turned into any other) and warns where a
    budget is unusual for images in [0, 1]."""
    for eps in eps_values:
        if norm == "linf" and eps >= 1:
            raise ValueError(f"--eps {eps:g} with --norm linf covers the whole [0, 1] pixel range (any image can "
                             f"become any other); expected a budget below 1, e.g. 8/255")
        if (norm == "linf" and eps > LINF_UNUSUAL) or (norm == "l2" and eps > L2_UNUSUAL):
            warn(f"warning: --eps {eps:g} ({norm}) is unusually large for images in [0, 1] "
                 f"(the paper uses 8/255 for L∞, up to 128/255 for L2)")


def check_categories(dataset: str, root, categories: list[str]) -> None:
    """Every named category exists in the dataset tree (a typo would otherwise become a failed
    record, and a '–' row in every table)."""
    from robustad.datasets import list_categories

    present = list_categories(dataset, root)
    missing = [c for c in categories if c not in present]
    if missing:
        raise ValueError(f"--category {','.join(missing)}: not in dataset {dataset!r} (categories there: "
                         f"{', '.join(present) or 'none'})")


def check_method_inputs(method: str, profile: str, overrides: dict, dataset: str, categories: list[str],
                        objective: str | None = None) -> None:
    """What the method itself checks before any training (its `check_before_run` hook: weights files,
    folders of images it needs), and that it can serve the objective (a detector that does not localize
    refuses the localization objective)."""
    from robustad.methods import method_config, resolve_method

    cls = resolve_method(method)
    if objective == "localization" and not cls.localizes:
        raise ValueError(f"--objective localization: method {method!r} is detection-only (it gives one score per "
                         f"image, no map); use --objective detection")
    cls.check_before_run(method_config(method, profile, **overrides), dataset, categories)


def check_results_writable(results) -> None:
    """The results folder can be written (records, checkpoints), or created where it does not exist yet.

    Nothing is created here: a dry run or a refused command leaves the file system as it was.
    """
    folder = Path(results).expanduser().resolve()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--results {folder}: cannot write there ({existing} is a file, not a folder); choose a "
                         f"writable folder")
    try:
        if existing == folder:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
            os.close(fd)
            os.unlink(probe)
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(13, f"cannot create a folder in {existing}")
    except OSError as err:
        raise ValueError(f"--results {folder}: cannot write there ({err.strerror or err}); choose a writable "
                         f"folder") from None
