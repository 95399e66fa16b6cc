"""Frozen ViTs that return patch tokens of chosen blocks and a normalized image embedding (for MuSc).

Two sources, one interface (`forward(images) -> (tokens, embedding)`, tokens a list of (B, P, C) per
chosen block, embedding (B, D) with unit norm):

- `OpenClipTokens`: an `open_clip` CLIP image tower (MuSc's `ViT-L-14-336`, `openai` weights) at any
  image size, its position embeddings resized bicubically (align_corners=False, no antialiasing, as
  MuSc's copy of open_clip does; open_clip's own resize antialiases, which changes the kernel). MuSc
  builds the 518 px tower from the model config without `quick_gelu`, so the OpenAI weights (trained
  with QuickGELU) run with nn.GELU there: `quick_gelu=False` reproduces that. Tokens are the residual stream after each chosen block (0-based `layers`, the
  official `feature_layers` [5, 11, 17, 23]); the embedding is the class token after `ln_post` and the
  projection, as MuSc's `encode_image`. Weights are read from the Hugging Face cache (open_clip
  distributes the OpenAI weights as `timm/vit_large_patch14_clip_336.openai`), the legacy OpenAI cache
  `~/.cache/clip/ViT-L-14-336px.pt`, or `--config backbone_weights=PATH`; never downloaded.
  Needs `pip install robustad[musc]` (open_clip_torch).
- `TinyTimmTokens`: a small random timm ViT built in code (no weights at all): the `quick` profile's
  stand-in that exercises MuSc's plumbing offline. Its scores mean nothing about MuSc's accuracy.

Images in [0, 1] are normalized inside with CLIP's mean and std, so ε stays in pixel space.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LEGACY_OPENAI_FILES = {"ViT-L-14-336": "ViT-L-14-336px.pt", "ViT-L-14": "ViT-L-14.pt", "ViT-B-16": "ViT-B-16.pt",
                       "ViT-B-32": "ViT-B-32.pt"}


class ClipNormalizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def import_open_clip(option: str):
    try:
        import open_clip
    except ImportError as err:
        raise ValueError(f"{option} needs the open_clip package: pip install 'robustad[musc]' "
                         f"(open_clip_torch), or use --profile quick (a tiny random ViT, offline)") from err
    return open_clip


def cached_open_clip_file(model_name: str, pretrained: str) -> Path | None:
    """The local file of open_clip's `pretrained` weights for `model_name`, if cached (no download)."""
    open_clip = import_open_clip("--config backbone")
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
    hub = (cfg.get("hf_hub") or "").strip("/")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                found = try_to_load_from_cache(hub, filename)
                if isinstance(found, str):
                    return Path(found)
    legacy = LEGACY_OPENAI_FILES.get(model_name)
    if pretrained == "openai" and legacy:
        path = Path.home() / ".cache" / "clip" / legacy
        if path.is_file():
            return path
    return None


def missing_clip_message(model_name: str, pretrained: str) -> str:
    return (f"MuSc's backbone {model_name} ({pretrained} weights) is not in this machine's caches; run once on a "
            f"machine with network access `open_clip.create_model('{model_name}', pretrained='{pretrained}')` "
            f"(it fills the Hugging Face cache), or pass the file with --config backbone_weights=PATH; "
            f"--profile quick runs a tiny random ViT offline (plumbing only)")


def check_clip_weights(model_name: str, pretrained: str, weights: str) -> Path:
    """The weights file to load, after checking it exists and fits `model_name`'s image tower."""
    open_clip = import_open_clip("--config backbone")
    if open_clip.get_model_config(model_name) is None:
        raise ValueError(f"--config backbone={model_name!r}: not an open_clip model name "
                         f"(e.g. ViT-L-14-336, ViT-B-16)")
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ValueError(f"--config backbone_weights={weights}: no such file (expected {model_name} weights)")
    else:
        path = cached_open_clip_file(model_name, pretrained)
        if path is None:
            raise ValueError(missing_clip_message(model_name, pretrained))
    vision = open_clip.get_model_config(model_name)["vision_cfg"]
    expected = (int(vision["width"]), 3, int(vision["patch_size"]), int(vision["patch_size"]))
    state = read_clip_state(path)
    found = state.get("visual.conv1.weight")
    if found is None or tuple(found.shape) != expected:
        shape = None if found is None else tuple(found.shape)
        raise ValueError(f"--config backbone_weights={path}: not {model_name} weights (visual.conv1.weight has "
                         f"shape {shape}, expected {expected})")
    return path


def read_clip_state(path: Path) -> dict:
    """The state dict of a CLIP weights file (safetensors, a state dict, or an OpenAI TorchScript archive)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as err:
            raise ValueError(f"--config backbone_weights={path}: cannot read it as CLIP weights ({err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"--config backbone_weights={path}: expected a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def resized_positions(positions: torch.Tensor, grid: int) -> torch.Tensor:
    """CLIP position embeddings (1 + g², C) resampled to (1 + grid², C): bicubic, no antialiasing."""
    old = int(round((positions.shape[0] - 1) ** 0.5))
    if old == grid:
        return positions
    image = positions[1:].float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    image = torch.nn.functional.interpolate(image, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([positions[:1].float(), image.permute(0, 2, 3, 1).reshape(grid * grid, -1)]).to(positions.dtype)


class OpenClipTokens(nn.Module):
    """An open_clip image tower at `image_size` returning (tokens of `layers`, unit image embedding)."""

    def __init__(self, model_name: str, pretrained: str, weights: str, image_size: int, layers: tuple[int, ...],
                 quick_gelu: bool = False):
        super().__init__()
        open_clip = import_open_clip("--config backbone")
        path = check_clip_weights(model_name, pretrained, weights)
        model = open_clip.create_model(model_name, pretrained=None, force_image_size=image_size,
                                       force_quick_gelu=quick_gelu)
        state = read_clip_state(path)
        key = "visual.positional_embedding"
        state[key] = resized_positions(state[key], int(model.visual.grid_size[0]))
        visual_state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
        model.visual.load_state_dict(visual_state)
        self.visual = model.visual.eval()
        self.normalize = ClipNormalizer()
        self.layers = tuple(int(i) for i in layers)
        depth = len(self.visual.transformer.resblocks)
        if max(self.layers) >= depth or min(self.layers) < 0:
            raise ValueError(f"--config feature_layers={','.join(map(str, self.layers))}: {model_name} has blocks "
                             f"0..{depth - 1}")
        self.patch_size = int(self.visual.patch_size[0])

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        out = self.visual.forward_intermediates(self.normalize(images), indices=list(self.layers), output_fmt="NLC")
        embedding = out["image_features"]
        return list(out["image_intermediates"]), embedding / embedding.norm(dim=-1, keepdim=True)


class TinyTimmTokens(nn.Module):
    """A small random timm ViT (the quick profile's stand-in; see the module docstring)."""

    def __init__(self, image_size: int, layers: tuple[int, ...], patch_size: int, embed_dim: int, depth: int,
                 heads: int):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(img_size=image_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                                     num_heads=heads, num_classes=0, global_pool="token").eval()
        self.normalize = ClipNormalizer()
        self.layers = tuple(int(i) for i in layers)
        if max(self.layers) >= depth or min(self.layers) < 0:
            raise ValueError(f"--config feature_layers={','.join(map(str, self.layers))}: the tiny ViT has blocks "
                             f"0..{depth - 1} (--config vit_depth)")
        self.patch_size = int(patch_size)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        vit = self.vit
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(self.normalize(images))))
        prefix = vit.num_prefix_tokens
        tokens = []
        for index, block in enumerate(vit.blocks):
            x = block(x)
            if index in self.layers:
                tokens.append(x[:, prefix:])
        embedding = vit.norm(x)[:, 0]
        return tokens, embedding / embedding.norm(dim=-1, keepdim=True)
