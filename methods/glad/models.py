"""GLAD's networks: a Stable Diffusion v1-4 UNet and VAE (diffusers), a DINO ViT-B/8 (timm), the prompt's
text embeddings; or tiny random stand-ins built in code.

Pretrained weights come only from the user's caches or paths, never downloaded:
- Stable Diffusion v1-4 (https://huggingface.co/CompVis/stable-diffusion-v1-4): `--config sd_weights=FOLDER`
  (the repository's layout: unet/, vae/, text_encoder/, tokenizer/) or, by default, the Hugging Face
  cache (`huggingface_hub.snapshot_download(..., local_files_only=True)`). The CLIP text encoder only
  embeds the prompt and the empty prompt once, at construction; the embeddings are kept as buffers.
- the fine-tuned UNet: `--config unet_weights=FILE` (a state dict, e.g. the authors' released
  `checkpoint-N/pytorch_model.bin`), or `fit` trains it from SD v1-4's UNet.
- DINO ViT-B/8 (Caron et al., ICCV 2021): `--config dino_weights=FILE`, else
  `dino_vitbase8_pretrain.pth` in the torch hub cache (where the official code's
  `torch.hub.load_state_dict_from_url` puts it), else timm's `vit_base_patch8_224.dino` in the Hugging
  Face cache. Position embeddings are resampled to the image size by timm's checkpoint filter
  (the official ViT interpolates them bicubically at run time).

`models=tiny` (the quick profile) builds a 2-level UNet2DConditionModel and AutoencoderKL (latent ×2
smaller than the image) and a 4-block ViT with patch 4, all random, so the whole pipeline runs offline
on a CPU: it tests the plumbing, not GLAD's accuracy. diffusers and transformers are imported here only,
when a GLAD detector is built (`pip install robustad[glad]`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from robustad.methods.baselines.backbones import MissingWeightsError, read_state_dict

SD_REPO = "CompVis/stable-diffusion-v1-4"
DINO_FILE = "dino_vitbase8_pretrain.pth"
DINO_TIMM = "vit_base_patch8_224"
TINY_PROMPT_TOKENS = 8


def import_diffusers():
    try:
        import diffusers
    except ImportError:
        raise ImportError("method 'glad' needs diffusers: pip install 'robustad[glad]' (diffusers>=0.25)") from None
    return diffusers


class DinoFeatures(nn.Module):
    """Patch tokens (B, N, D) after the given ViT blocks (1-based), un-normalized, class token dropped
    (the official `vision_transformer.py` `forward(x, extraction=[3, 6, 9, 12])`)."""

    def __init__(self, vit: nn.Module, blocks: tuple[int, ...]):
        super().__init__()
        self.vit = vit
        self.blocks = tuple(int(b) for b in blocks)
        if not self.blocks or min(self.blocks) < 1 or max(self.blocks) > len(vit.blocks):
            raise ValueError(f"method 'glad': --config dino_blocks={self.blocks} outside the ViT's "
                             f"{len(vit.blocks)} blocks")
        self.prefix = int(getattr(vit, "num_prefix_tokens", 1))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.vit.norm_pre(self.vit._pos_embed(self.vit.patch_embed(images)))
        out = []
        for index, block in enumerate(self.vit.blocks, start=1):
            x = block(x)
            if index in self.blocks:
                out.append(x[:, self.prefix:])
            if index >= max(self.blocks):
                break
        return out


def tiny_models(image_size: int, width: int, blocks: tuple[int, ...]):
    """(unet, vae, dino, prompt embeddings (2, T, width): [empty, prompt]) — random, built in code."""
    diffusers = import_diffusers()
    import timm

    if image_size % 8:
        raise ValueError(f"method 'glad': image_size must be a multiple of 8 with tiny models, got {image_size}")
    groups = 8
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(width, width), latent_channels=4,
        layers_per_block=1, norm_num_groups=groups, sample_size=image_size,
    )
    unet = diffusers.UNet2DConditionModel(
        sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(width, 2 * width), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=width, attention_head_dim=8,
        norm_num_groups=groups,
    )
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=image_size,
                            patch_size=4, embed_dim=width, depth=max(4, max(blocks)), num_heads=2)
    embeddings = torch.randn(2, TINY_PROMPT_TOKENS, width)
    return unet, vae, DinoFeatures(vit, blocks), embeddings


def stable_diffusion_folder(sd_weights: str) -> Path:
    """The local folder of Stable Diffusion v1-4 (given, or from the Hugging Face cache; never downloaded)."""
    if sd_weights:
        folder = Path(sd_weights).expanduser()
        if not (folder / "unet").is_dir():
            raise MissingWeightsError(f"--config sd_weights={sd_weights}: expected the {SD_REPO} layout "
                                      f"(unet/, vae/, text_encoder/, tokenizer/), found no {folder / 'unet'}")
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(SD_REPO, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and friends: the cache has no copy
        raise MissingWeightsError(
            f"method 'glad' needs Stable Diffusion v1-4 ({SD_REPO}: unet/diffusion_pytorch_model.safetensors, "
            "vae/diffusion_pytorch_model.safetensors, text_encoder/model.safetensors, tokenizer/) in the Hugging "
            f"Face cache (run `huggingface-cli download {SD_REPO}` once on a machine with network access) or "
            "--config sd_weights=FOLDER; or --config models=tiny for random models (tests only)"
        ) from None


def dino_state_dict(dino_weights: str, vit: nn.Module) -> dict[str, torch.Tensor]:
    """DINO ViT-B/8 weights from the given file, the torch hub cache or timm's Hugging Face cache."""
    if dino_weights:
        return read_state_dict(dino_weights)
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / DINO_FILE
    if hub_file.is_file():
        return read_state_dict(str(hub_file))
    from robustad.methods.baselines.backbones import cached_timm_file

    cached = cached_timm_file(vit)
    if cached is not None:
        return read_state_dict(str(cached))
    raise MissingWeightsError(
        f"method 'glad' needs DINO ViT-B/8 weights: {hub_file} (https://dl.fbaipublicfiles.com/dino/"
        f"dino_vitbase8_pretrain/{DINO_FILE}), timm's {DINO_TIMM}.dino in the Hugging Face cache, or "
        "--config dino_weights=FILE; or --config models=tiny for random models (tests only)"
    )


def pretrained_models(image_size: int, sd_weights: str, unet_weights: str, dino_weights: str, prompt: str,
                      blocks: tuple[int, ...]):
    """(unet, vae, dino, prompt embeddings (2, 77, 768): [empty, prompt]) from local weights."""
    diffusers = import_diffusers()
    import timm

    folder = stable_diffusion_folder(sd_weights)
    unet = diffusers.UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    vae = diffusers.AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    if unet_weights:
        unet.load_state_dict(read_state_dict(unet_weights))
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise ImportError("method 'glad' needs transformers for the prompt: pip install 'robustad[glad]'") from None
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True).eval()
    with torch.no_grad():  # constants of the method (the prompt), not a function of the pixels
        ids = tokenizer(["", prompt], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        embeddings = encoder(ids)[0]
    vit = timm.create_model(DINO_TIMM, pretrained=False, num_classes=0, img_size=image_size)
    state = dino_state_dict(dino_weights, vit)
    filter_fn = getattr(sys.modules[type(vit).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, vit)
    vit.load_state_dict({k: v for k, v in state.items() if not k.startswith("head")}, strict=True)
    return unet, vae, DinoFeatures(vit, blocks), embeddings


def ddim_alphas_cumprod(train_timesteps: int = 1000) -> torch.Tensor:
    """ᾱ_t of Stable Diffusion's noise schedule (scaled linear β from 0.00085 to 0.012, 1000 steps),
    through diffusers' DDIMScheduler so the numbers are the library's."""
    diffusers = import_diffusers()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=train_timesteps, beta_start=0.00085, beta_end=0.012,
                                        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                                        steps_offset=1)
    return scheduler.alphas_cumprod.clone().float()
