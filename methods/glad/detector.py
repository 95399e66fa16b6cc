"""GLAD (Yao et al., ECCV 2024): diffusion reconstruction with global and local adaptive denoising.

"GLAD: Towards Better Reconstruction with Global and Local Adaptive Diffusion Models for Unsupervised
Anomaly Detection", https://arxiv.org/abs/2406.07487; official code https://github.com/hyao1/GLAD (MIT).

M(x) (B, H, W), on the pixel grid: the input's VAE latent is noised to the class's denoising step and
reconstructed by DDIM with the fine-tuned Stable Diffusion v1-4 UNet and the adaptive denoising step
(`reconstruction.py`); the map is the DINO-feature distance between input and reconstruction, blurred
and masked by the object (`scoring.py`). S(x): the mean of the top-250 pixels (`top_k`).

Declared capabilities (the harness and the attacks read them):
- `randomized = True`: each forward draws the VAE posterior sample and the diffusion noise afresh
  (attacks use EOT, evaluations are repeated). `--config deterministic=true` fixes both draws (seeded
  by `noise_seed`, the same for every image and call); the detector then declares itself deterministic.
- Non-differentiable steps, each a `NonDifferentiable` with the identity surrogate (`bpda=true`):
  the adaptive step's branch (score > threshold) and the Otsu object mask.
Everything else is differentiable from the pixels to M(x).

Threat model: ε is measured on the image in [0, 1] at `image_size` (512 px in the paper profile), as for
every method; the images the runner gives are already at that size.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from robustad.methods.baselines.backbones import MissingWeightsError
from robustad.methods.detector import Detector
from robustad.methods.glad.config import (BIDIRECTIONAL_CLASSES, FOREGROUND_MODES, GLADConfig, PROFILES, class_key,
                                          resolve)
from robustad.methods.glad.models import ddim_alphas_cumprod, pretrained_models, tiny_models
from robustad.methods.glad.reconstruction import AdaptiveDDIM
from robustad.methods.glad.scoring import feature_distance_map, grey, object_mask
from robustad.methods.non_differentiable import NonDifferentiable
from robustad.methods.registry import register_method


@register_method("glad")
class GLAD(Detector):
    """GLAD: DDIM reconstruction from a per-class step with adaptive denoising; DINO distances as M(x)."""

    name = "glad"
    display_name = "GLAD"
    config_class = GLADConfig
    profiles = PROFILES
    randomized = True  # the VAE sample and the noise; an instance with deterministic=true says False

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.config = cfg = resolve(self.config)
        self.randomized = not cfg.deterministic
        blocks = tuple(int(b) for b in cfg.dino_blocks)
        if cfg.models == "tiny":
            unet, vae, dino, embeddings = tiny_models(cfg.image_size, cfg.tiny_width, blocks)
        else:
            unet, vae, dino, embeddings = pretrained_models(cfg.image_size, cfg.sd_weights, cfg.unet_weights,
                                                            cfg.dino_weights, cfg.prompt, blocks)
        self.unet, self.vae, self.dino = unet, vae, dino
        for frozen in (self.vae, self.dino):
            frozen.eval().requires_grad_(False)
        self.scaling = float(getattr(vae.config, "scaling_factor", 0.18215))
        self.register_buffer("prompt_embeddings", embeddings.float())  # [empty prompt, prompt]
        self.ddim = AdaptiveDDIM(ddim_alphas_cumprod())
        key = class_key(cfg.cell)
        mode = FOREGROUND_MODES.get(key, "whole") if cfg.foreground == "auto" else cfg.foreground
        self.foreground = None if mode == "whole" else NonDifferentiable(functools.partial(object_mask, mode=mode))
        self.bidirectional = key in BIDIRECTIONAL_CLASSES if cfg.bidirectional == "auto" else cfg.bidirectional == "yes"

    # -- harness hooks -----------------------------------------------------------------------------
    @classmethod
    def cell_overrides(cls, overrides, dataset, category):
        """The official per-class values apply to the cell's class (`cell`, unless given)."""
        return {"cell": f"{dataset}/{category}", **overrides}

    @classmethod
    def check_before_run(cls, config, dataset, categories):
        """Pretrained models: the Stable Diffusion and DINO weights must be on this machine."""
        if config is None or config.models != "pretrained":
            return
        from robustad.methods.glad.models import DINO_FILE, stable_diffusion_folder

        try:
            stable_diffusion_folder(config.sd_weights)
        except MissingWeightsError as err:
            raise ValueError(str(err)) from None
        for option in ("unet_weights", "dino_weights"):
            value = getattr(config, option)
            if value and not Path(value).expanduser().is_file():
                raise ValueError(f"--config {option}={value}: no such file")
        if not config.dino_weights and not (Path(torch.hub.get_dir()) / "checkpoints" / DINO_FILE).is_file():
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache("timm/vit_base_patch8_224.dino", "model.safetensors"), str):
                raise ValueError(f"method 'glad' needs DINO ViT-B/8 weights: {DINO_FILE} in "
                                 f"{Path(torch.hub.get_dir()) / 'checkpoints'} or --config dino_weights=FILE")

    # -- the differentiable path -----------------------------------------------------------------
    def draw(self, like: torch.Tensor, stream: int, fixed: bool | None = None) -> torch.Tensor:
        """N(0, 1) shaped like `like`: fresh, or (deterministic mode) one seeded draw for every image."""
        if not (self.config.deterministic if fixed is None else fixed):
            return torch.randn_like(like)
        gen = torch.Generator().manual_seed(int(self.config.noise_seed) * 2 + stream)
        return torch.randn(like.shape[1:], generator=gen).to(like).expand_as(like)

    def encode(self, images: torch.Tensor, fixed: bool | None = None) -> torch.Tensor:
        """Scaled VAE latents (B, 4, h, w) of images in [0, 1]: a reparameterized posterior sample."""
        posterior = self.vae.encode(images * 2 - 1).latent_dist
        return (posterior.mean + posterior.std * self.draw(posterior.mean, 0, fixed)) * self.scaling

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in about [−1, 1] of scaled latents."""
        return self.vae.decode(latents / self.scaling).sample

    def guided_noise(self, x: torch.Tensor, t: int, embeddings: torch.Tensor) -> torch.Tensor:
        """ε_θ with classifier-free guidance (scale `guidance_scale`; ≤ 1: the prompt alone)."""
        batch, scale = x.shape[0], float(self.config.guidance_scale)
        if scale <= 1.0:
            return self.unet(x, t, encoder_hidden_states=embeddings[1:2].expand(batch, -1, -1)).sample
        context = embeddings.repeat_interleave(batch, dim=0)  # [empty × B, prompt × B]
        unconditional, conditional = self.unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample.chunk(2)
        return unconditional + scale * (conditional - unconditional)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """GLAD's reconstruction (B, 3, H, W) in about [−1, 1] of images in [0, 1]."""
        latents = self.encode(images)
        noise = self.draw(latents, 1)
        x0 = self.ddim(self.guided_noise, self.decode, lambda im: self.dino(im)[-1], self.prompt_embeddings,
                       latents, noise, self.config)
        return self.decode(x0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        maps = feature_distance_map(self.dino, images, self.reconstruct(images), self.bidirectional,
                                    float(cfg.pixel_weight), float(cfg.blur_sigma))
        if self.foreground is not None:
            maps = maps * self.foreground(grey(images))
        return maps[:, 0]

    # -- training ---------------------------------------------------------------------------------
    def fit(self, train_set) -> None:
        from robustad.methods.glad.training import train_unet

        if self.config.unet_weights:
            return  # the given fine-tuned UNet is evaluated as it is
        self.train_losses = train_unet(self, train_set)
        self.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()
        self.dino.eval()
        return self
