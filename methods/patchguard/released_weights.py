"""The authors' released PatchGuard weights: finding, checking and loading them.

The official repository (rohban-lab/PatchGuard, `download_weight.py`) releases one file per MVTec AD
and VisA category, `patchguard_<dataset>_<class>.pth`: the `state_dict` of its `PatchGuard` module,
which `official_model.OfficialPatchGuardNet` reproduces key for key. `--config weights=PATH` (with
`--profile official`) loads such a file; `weights=DIR` lets each cell pick its category's file.

Loading never runs code from the file: `torch.load(..., weights_only=True)` refuses a pickle that
holds anything but tensors and plain containers. Every refusal is a `ReleasedWeightsError` naming the
file, what was expected and the option to use.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from robustad.core.files import file_sha256

SOURCE = "the authors' released checkpoint (rohban-lab/PatchGuard, download_weight.py)"
SHOWN_KEYS = 5  # keys named per kind of difference
SIZE_OPTIONS = ("image_size, patch_size, vit_embed_dim, vit_depth, vit_heads, feature_layers, disc_mlp_dim, "
                "disc_heads, disc_layers")


class ReleasedWeightsError(ValueError):
    """A `weights=` file or folder that cannot be loaded into the official network; the message says why."""


def released_weights_file(directory, method: str, dataset: str, category: str) -> Path:
    """The file of one category in a folder of released weights: `<method>_<dataset>_<category>.pth`."""
    return Path(directory).expanduser() / f"{method}_{dataset}_{category}.pth"


def missing_released_weights(directory, method: str, dataset: str, categories) -> list[Path]:
    """The category files absent from `directory`, in the order of `categories`."""
    return [path for path in (released_weights_file(directory, method, dataset, c) for c in categories)
            if not path.is_file()]


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The state_dict in `path`, read with `weights_only=True`; refuses anything else, naming the file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ReleasedWeightsError(
            f"--config weights={path}: a folder; a bench run picks <method>_<dataset>_<category>.pth from it per "
            f"cell, in Python give the file itself (e.g. {path / 'patchguard_mvtec_bottle.pth'})")
    if not path.is_file():
        raise ReleasedWeightsError(f"--config weights={path}: no such file (expected a released "
                                   f"patchguard_<dataset>_<class>.pth, see docs/methods/patchguard-official.md)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every reason is reported with the file's name
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err):
            raise ReleasedWeightsError(
                f"--config weights={path}: refused, not executed: the file holds more than tensors "
                f"(torch.load weights_only=True: {text}); expected a plain state_dict of the official network"
            ) from None
        raise ReleasedWeightsError(f"--config weights={path}: cannot be read as a torch file ({type(err).__name__}: "
                                   f"{text}); truncated or not a .pth file?") from None
    if isinstance(payload, dict) and "state_dict" in payload and "method" in payload:
        raise ReleasedWeightsError(
            f"--config weights={path}: a robustad checkpoint (method {payload.get('method')!r}), not a released "
            f"state_dict; robustad reuses its own checkpoints by itself, weights= is for the authors' files")
    if not isinstance(payload, dict) or not payload or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        kind = type(payload).__name__ if not isinstance(payload, dict) else "a dict of other values"
        raise ReleasedWeightsError(f"--config weights={path}: holds {kind}, expected a state_dict "
                                   f"(parameter name → tensor) of the official PatchGuard module")
    return payload


def _first(keys) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def state_dict_differences(expected: dict, given: dict) -> list[str]:
    """'missing: ...', 'unexpected: ...', 'mis-shaped: key file (a) vs network (b)' lines; [] when they match."""
    missing = set(expected) - set(given)
    unexpected = set(given) - set(expected)
    shaped = sorted(k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape))
    lines = []
    if missing:
        lines.append(f"missing keys: {_first(missing)}")
    if unexpected:
        lines.append(f"unexpected keys: {_first(unexpected)}")
    if shaped:
        shown = ", ".join(f"{k} file {tuple(given[k].shape)} vs network {tuple(expected[k].shape)}"
                          for k in shaped[:SHOWN_KEYS])
        lines.append(f"mis-shaped keys: {shown}" + (f" (+{len(shaped) - SHOWN_KEYS} more)" if len(shaped) > SHOWN_KEYS
                                                      else ""))
    return lines


def load_released_weights(net: torch.nn.Module, path) -> dict:
    """Loads the released state_dict in `path` into `net` (an `OfficialPatchGuardNet`), all keys strictly.

    Returns what a record stores: {"path", "sha256", "source"}.
    """
    path = Path(path).expanduser()
    given = read_state_dict(path)
    differences = state_dict_differences(net.state_dict(), given)
    if differences:
        hint = ("a DataParallel prefix: strip 'module.' from the keys" if all(k.startswith("module.") for k in given)
                else f"--profile official (the official network at 224 px), or --config arch=official with the "
                     f"sizes the file was trained with ({SIZE_OPTIONS})")
        raise ReleasedWeightsError(f"--config weights={path}: not a state_dict of this network: "
                                   + "; ".join(differences) + f". Use {hint}")
    net.load_state_dict({k: v.to(dtype=net.state_dict()[k].dtype) for k, v in given.items()}, strict=True)
    return {"path": str(path.resolve()), "sha256": file_sha256(path), "source": SOURCE}
