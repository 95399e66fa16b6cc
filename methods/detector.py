"""The Detector interface every method implements (docs/design.md, "Contracts").

A detector maps images in [0, 1] of shape (B, 3, H, W) to anomaly logits M(x) on its own grid,
(B, h, w), differentiably in the pixels; S(x) = `score(M)` and the pixel map `anomaly_map(M, size)`
are derived from M. Each detector normalizes inside its own forward, so ε is measured in pixels.

Randomness: a detector draws its random numbers (initial weights, sampling, augmentation) from
torch's global generator (NumPy's and Python's `random` are seeded too), or, where it keeps a
generator of its own, from `robustad.core.seeding.derived_generator()` called inside `fit`. The
runner seeds every generator from the cell's seed right before constructing the detector and again
right before `fit` (`create_method(..., seed=S)` does the first), so the same command and seed give
the same model, bit for bit on the CPU. A detector never seeds itself from a config field.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustad.core.parsing import parse_number
from robustad.core.profiles import Profile
from robustad.methods.config_fields import ConfigValueError, check_config, check_field, in_range, normalize_numbers


@dataclasses.dataclass
class DetectorConfig:
    """Base of every method's config dataclass. Subclasses add their own fields, declaring a field's
    domain with `in_range`/`one_of` (`config_fields.py`); a subclass's `__post_init__` calls this one."""

    image_size: int = in_range(224, low=8)  # square side the runner resizes images to, in pixels
    top_k: int = in_range(3, low=1)  # S(x): mean of the top-k cells of M

    def __post_init__(self):
        normalize_numbers(self)
        check_config(self)
        # The contract's own fields keep their domain when a subclass redeclares them with a new default.
        for field in dataclasses.fields(DetectorConfig):
            check_field(field, getattr(self, field.name))


class Detector(nn.Module):
    """Base class of anomaly detectors.

    Subclasses set `config_class` (a `DetectorConfig` subclass) and `profiles` (a dict from
    `Profile` to a config instance), and implement `fit` and `forward`. The constructor takes no
    required argument: `Detector()` builds the quick-profile configuration.
    """

    name: ClassVar[str] = "detector"
    display_name: ClassVar[str | None] = None  # the label in tables and reports (default: the class name)
    table_order: ClassVar[int] = 50  # table columns sort by it, then by label (PatchGuard, the paper's own, 100)
    config_class: ClassVar[type[DetectorConfig]] = DetectorConfig
    profiles: ClassVar[dict[Profile, DetectorConfig]] = {}

    # -- declared capabilities (the harness reads these; it names no method) ----------------------
    # False: a detection-only method. M(x) is one cell per image, (B, 1, 1), and S(x) its value; pixel
    # metrics are null and the localization objective is refused before any training.
    localizes: ClassVar[bool] = True
    # True: forward draws fresh noise on every call. Attacks average their gradients over several
    # draws (EOT) and evaluations are repeated, their spread recorded.
    randomized: ClassVar[bool] = False
    # True: a transductive detector. Before the clean pass the runner calls
    # `set_test_references(images)` with the whole clean test set, fixed for the attack that follows.
    uses_test_references: ClassVar[bool] = False

    def __init__(self, config: DetectorConfig | None = None, **overrides: Any):
        super().__init__()
        self.config = make_config(type(self), config, **overrides)

    # -- the interface ---------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    def fit(self, train_set) -> None:
        """Train on a dataset of normal images (items: dict with "image", "label", "mask", "path")."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Anomaly logits M(x), shape (B, h, w); differentiable in `images`."""
        raise NotImplementedError

    # -- hooks the harness calls (defaults do nothing special) -----------------------------------
    @classmethod
    def check_before_run(cls, config: DetectorConfig | None, dataset: str, categories: list[str]) -> None:
        """Checks what `config` names outside itself (folders, weights files, exposure images) for these
        cells, before any training: raise a ValueError naming the `--config` option, the file and what
        was expected. Default: nothing to check."""

    @classmethod
    def cell_overrides(cls, overrides: dict[str, Any], dataset: str, category: str) -> dict[str, Any]:
        """The config overrides one cell's detector is built with, from those the user gave (e.g. a
        folder of per-category weights files becomes this category's file). Default: unchanged."""
        return dict(overrides)

    @classmethod
    def cost_prior(cls, config: DetectorConfig | None, profile: Profile) -> tuple[float, float] | None:
        """(fit seconds per training image, attack seconds per image·step) on this profile's device, for
        planning before any record of this method exists; None: the harness's generic prior."""
        return None

    @property
    def given_weights(self) -> dict | None:
        """{"path", "sha256", "source"} when this detector holds weights loaded from a file the user
        gave: it is evaluated as it is, never trained, and the record names the file. Default: None."""
        return None

    # True: `attention_degrees(images, layer)` gives each image's attention degree at a layer (the
    # paper's Figure 2, `bench attention-degree`).
    exposes_attention: ClassVar[bool] = False

    def attention_degrees(self, images: torch.Tensor, layer: int | str = -1) -> torch.Tensor:
        """Attention degree (B,) of `layer`: the mean number of tokens each token attends to (a
        coefficient of at least 1/N counts). Only for detectors that declare `exposes_attention`."""
        raise NotImplementedError(f"{type(self).__name__} exposes no attention maps")

    def set_test_references(self, images: torch.Tensor) -> None:
        """Transductive detectors only (`uses_test_references = True`): the clean test images (N, 3, H, W)
        this detector scores every image against. Called once per evaluation, before any attack; the
        attacker perturbs only the scored image, never these references."""
        raise NotImplementedError(f"{type(self).__name__} declares uses_test_references but does not "
                                  f"implement set_test_references")

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """Image scores S(x), shape (B,): the mean of the top-k cells of M."""
        flat = logits.flatten(1)
        k = min(int(self.config.top_k), flat.shape[1])
        return flat.topk(k, dim=1).values.mean(dim=1)

    def anomaly_map(self, logits: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        """M upsampled to pixels, shape (B, H, W). Default: bilinear upsampling."""
        size = (size, size) if isinstance(size, int) else tuple(size)
        return F.interpolate(logits.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)

    # -- checkpoints -----------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """The config as stored in records and checkpoints (a plug-in's own `image_size` included)."""
        return {**dataclasses.asdict(self.config), "image_size": self.image_size}

    def save_checkpoint(self, path) -> None:
        from robustad.methods.checkpoint import save_checkpoint

        save_checkpoint(self, path)

    def load_checkpoint(self, path) -> None:
        from robustad.methods.checkpoint import load_checkpoint

        load_checkpoint(self, path)


def make_config(cls: type[Detector], config: DetectorConfig | None = None, **overrides: Any) -> DetectorConfig:
    """The config for `cls`: `config` (or the quick preset, or the dataclass defaults) with overrides.

    Unknown override keys raise a ValueError listing the valid fields.
    """
    base = config if config is not None else cls.profiles.get(Profile.QUICK, None) or cls.config_class()
    if not isinstance(base, cls.config_class):
        raise TypeError(f"{cls.__name__} expects a {cls.config_class.__name__}, got {type(base).__name__}")
    fields = {f.name: f for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config field(s) {', '.join(unknown)} for method {cls.name!r}; "
            f"valid fields: {', '.join(fields)}"
        )
    converted = {k: coerce_field(cls.name, fields[k], base, v) for k, v in overrides.items()}
    try:
        return dataclasses.replace(base, **converted)
    except ConfigValueError as err:
        raise ValueError(f"--config {err.field}={err.value!r} for method {cls.name!r}: expected {err.expected}") from None


def coerce_field(method: str, field: dataclasses.Field, base: DetectorConfig, value: Any) -> Any:
    """Converts a `--config KEY=VALUE` string to the type of the field's current value."""
    if not isinstance(value, str):
        return value
    current = getattr(base, field.name)
    kind = type(current)
    try:
        if isinstance(current, bool):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return parse_number(value)
        if isinstance(current, (tuple, list)):
            items = [s for s in value.replace(" ", "").split(",") if s]
            inner = type(current[0]) if current else str
            return kind(inner(parse_number(s)) if inner in (int, float) else s for s in items)
        if current is None:
            return value
        return kind(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"--config {field.name}={value!r} for method {method!r}: expected {kind.__name__} ({err})"
        ) from None



