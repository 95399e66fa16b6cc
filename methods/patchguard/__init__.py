"""PatchGuard (Nafez et al., CVPR 2025): the model, its training and its pseudo-anomaly generators."""
