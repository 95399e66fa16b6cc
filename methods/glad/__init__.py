"""GLAD (Yao et al., ECCV 2024): config, networks, reconstruction, scoring, training and the detector."""
from robustad.methods.glad.detector import GLAD  # noqa: F401  (registers "glad")
