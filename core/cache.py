"""The cache folder for generated data (built-in dataset, foreground maps, slice lists)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$ROBUSTAD_CACHE`, or `~/.cache/robustad`."""
    return Path(os.environ.get("ROBUSTAD_CACHE") or Path.home() / ".cache" / "robustad").expanduser()
