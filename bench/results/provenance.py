"""What a result record stores about who produced it: the software (`versions`, `git_revision`) and
the run (`run`: executor, worker, host, attempt, device)::

    {"executor": "local", "worker": 1, "attempt": 2, "host": "gpu07", "pid": 4242,
     "device": "cuda", "visible_devices": "1", "device_name": "NVIDIA H200", "threads": 8,
     "group": "<group id>", "slurm_job": "123_4", "slurm_restarts": 0}

`executor` is `inline` (the Python API: `run_cell`, `run_cells`), `local` (`bench run --executor local`:
worker 0 runs in the `bench run` process when `--workers 1`, else worker i is one of N processes) or
`slurm` (worker: the array task). `attempt` counts this group's tries: within one `bench run` for the
local executor (a dead worker's group is retried), or its submissions to SLURM. Keys that do not
apply are left out.
"""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("robustad", "torch", "torchvision", "timm", "numpy", "scikit-learn", "scikit-image")


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The git commit of the robustad source tree, or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def current_slurm_job() -> str | None:
    """This process's SLURM job as `squeue` names it ("123_4" for an array task), or None."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def describe_run(executor: str = "inline", *, worker: Any = None, attempt: int = 1, device: str = "cpu",
                 group: str | None = None, **extra: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"executor": executor, "worker": worker, "attempt": attempt,
                            "host": socket.gethostname(), "pid": os.getpid(), "device": device,
                            "threads": torch.get_num_threads(), "group": group}
    if str(device).startswith("cuda"):
        info["visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        if torch.cuda.is_available():
            info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    if current_slurm_job():
        info["slurm_job"] = current_slurm_job()
        info["slurm_restarts"] = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    info.update(extra)
    return {key: value for key, value in info.items() if value is not None}
