"""The adversarially robust detection-only methods of PatchGuard's Table 1 (starred there as
"incorporated adversarial training"): PrincipaLS, ZARND and RODEO.

Each scores whole images and gives no map: it declares `localizes = False` (the Detector
contract), so M(x) is one cell per image, (B, 1, 1), and S(x) its value.
"""
from robustad.methods.robust_detection import (
    principals,  # noqa: F401
    rodeo,  # noqa: F401
    zarnd,  # noqa: F401
)
