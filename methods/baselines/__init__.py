"""The paper's baselines (PatchGuard Tables 1–3, appendix E), each clean (`<method>`) and adapted (`<method>-adv`).

Backbone weights are never downloaded here; `backbones.py` says where they are looked for and which
`--config backbone_*` options choose them.
"""
from robustad.methods.baselines import (
    draem,  # noqa: F401
    generalad,  # noqa: F401
    glass,  # noqa: F401
    patchcore,  # noqa: F401
    recontrast,  # noqa: F401
    simplenet,  # noqa: F401
)
