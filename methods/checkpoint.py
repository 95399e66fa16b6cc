"""Saving and loading a detector together with the config that made it.

A checkpoint is refused when it was made by another method or another config; the message names
the differing fields. A field the checkpoint does not have (added to the config after it was
written) counts as its default: accepted when the detector's value is the default. Loading uses
`torch.load(weights_only=True)`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from robustad.core.files import file_sha256, torch_save_atomic  # noqa: F401  file_sha256: re-exported

FORMAT_VERSION = 1


class CheckpointMismatchError(ValueError):
    """The checkpoint was made by another method or config than the detector it is loaded into."""


def save_checkpoint(detector, path) -> None:
    """Writes {method, config, state_dict} atomically to `path` (the same model gives the same bytes)."""
    payload = {
        "format": FORMAT_VERSION,
        "method": detector.name,
        "config": detector.config_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in detector.state_dict().items()},
    }
    torch_save_atomic(payload, path)


def load_checkpoint(detector, path) -> None:
    """Loads `path` into `detector` after checking its method and config."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise CheckpointMismatchError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointMismatchError(f"{path} is not a robustad checkpoint")
    if payload.get("method") != detector.name:
        raise CheckpointMismatchError(
            f"checkpoint {path} was made by method {payload.get('method')!r}, not {detector.name!r}"
        )
    differing = config_differences(payload.get("config", {}), detector.config_dict(), default_config(detector))
    if differing:
        raise CheckpointMismatchError(
            f"checkpoint {path} was made with another config of {detector.name!r}: "
            + "; ".join(differing)
        )
    detector.load_state_dict(payload["state_dict"])


def default_config(detector) -> dict[str, Any]:
    """The field defaults of the detector's config dataclass ({} when it has none)."""
    config = getattr(detector, "config", None)
    if not dataclasses.is_dataclass(config):
        return {}
    return {field.name: field.default for field in dataclasses.fields(config)
            if field.default is not dataclasses.MISSING}


def config_differences(saved: dict[str, Any], current: dict[str, Any],
                       defaults: dict[str, Any] | None = None) -> list[str]:
    """'key: checkpoint has A, expected B' for each field that differs; a field missing from
    `saved` takes its value from `defaults` (a checkpoint older than the field)."""
    saved = {**{key: value for key, value in (defaults or {}).items() if key in current}, **saved}
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)
        if a != b:
            out.append(f"{key}: checkpoint has {a!r}, expected {b!r}")
    return out
