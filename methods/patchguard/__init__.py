"""PatchGuard (Nafez et al., CVPR 2025): the model, its training and its pseudo-anomaly generators."""
from robustad.methods.patchguard.config import PatchGuardConfig
from robustad.methods.patchguard.detector import PatchGuard

__all__ = ["PatchGuard", "PatchGuardConfig"]
