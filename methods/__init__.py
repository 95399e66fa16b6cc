"""Detectors: the interface (`Detector`), the registry and one adapter per method."""
from robustad.methods.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from robustad.methods.detector import Detector, DetectorConfig
from robustad.methods.registry import METHODS, create_method, register_method, resolve_method

# Registered methods (explicit imports fill the registry).
from robustad.methods import patchguard  # noqa: E402,F401  isort: skip
from robustad.methods import baselines  # noqa: E402,F401  isort: skip

__all__ = [
    "CheckpointMismatchError",
    "Detector",
    "DetectorConfig",
    "METHODS",
    "create_method",
    "load_checkpoint",
    "register_method",
    "resolve_method",
    "save_checkpoint",
]
