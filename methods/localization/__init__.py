"""The localization methods of PatchGuard's Table 2 beside the baselines: MuSc, ReConPatch and RealNet.

Each reuses the baselines' parts (`methods/baselines/`: backbones, PatchCore's local patch features,
coreset and distances, the texture anomalies) and is differentiable from pixels to M(x).
"""
from robustad.methods.localization import (
    musc,  # noqa: F401
    realnet,  # noqa: F401
    reconpatch,  # noqa: F401
)
