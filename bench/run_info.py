"""Who ran a cell: the `run` field of its record (executor, worker, host, attempt, device).

    {"executor": "local", "worker": 1, "attempt": 2, "host": "gpu07", "pid": 4242,
     "device": "cuda", "visible_devices": "1", "device_name": "NVIDIA H200", "threads": 8,
     "group": "<group id>", "slurm_job": "123_4", "slurm_restarts": 0}

`executor` is `inline` (the Python API: `run_cell`, `run_grid`), `local` (`bench run --executor local`:
worker 0 runs in the `bench run` process when `--workers 1`, else worker i is one of N processes) or
`slurm` (worker: the array task). `attempt` counts this group's tries: within one `bench run` for the
local executor (a dead worker's group is retried), or its submissions to SLURM. Keys that do not
apply are left out.
"""
from __future__ import annotations

import os
import socket
from typing import Any


def describe_run(executor: str = "inline", *, worker: Any = None, attempt: int = 1, device: str = "cpu",
                 group: str | None = None, **extra: Any) -> dict[str, Any]:
    import torch

    from robustad.bench.lease import current_slurm_job

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
