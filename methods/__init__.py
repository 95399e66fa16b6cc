"""Detectors: the interface (`Detector`), the registry and one adapter per method."""
from robustad.methods.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from robustad.methods.detector import Detector, DetectorConfig
from robustad.methods.non_differentiable import NonDifferentiable, bpda_active, bpda_enabled
from robustad.methods.registry import (METHODS, create_method, method_config, register_method, resolve_method,
                                       typed_config_overrides)

# Registered methods (explicit imports fill the registry).
from robustad.methods import patchguard  # noqa: E402,F401  isort: skip
from robustad.methods import baselines  # noqa: E402,F401  isort: skip
from robustad.methods import glad  # noqa: E402,F401  isort: skip
from robustad.methods import robust_detection  # noqa: E402,F401  isort: skip
from robustad.methods import localization  # noqa: E402,F401  isort: skip

__all__ = [
    "CheckpointMismatchError",
    "Detector",
    "DetectorConfig",
    "METHODS",
    "NonDifferentiable",
    "create_method",
    "method_config",
    "bpda_active",
    "bpda_enabled",
    "load_checkpoint",
    "register_method",
    "resolve_method",
    "save_checkpoint",
    "typed_config_overrides",
]
