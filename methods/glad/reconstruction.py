"""GLAD's reconstruction: DDIM from the per-class denoising step with the adaptive denoising step.

Official code: hyao1/GLAD `utilize/utilize.py` (`reconstruction`), `pipeline.py` (`__call__`) and
`ddim_scheduling.py` (`step`). The input's latent z (a VAE posterior sample, scaled by 0.18215) is
noised to the class's denoising step T: x_T = √ᾱ_T·z + √(1 − ᾱ_T)·ε. DDIM then runs
`inference_steps` deterministic steps (η = 0) over [0, T) ("leading" spacing, offset 1: with T = 750
and 25 steps, t = 721, 691, ..., 1), each with classifier-free guidance (scale 9; prompt "a photo of
sks" against the empty prompt). The adaptive denoising step (paper §3.3): until it has fired for an
image, each step also predicts x̂₀ from the *input's* latent noised to t with the same ε,
x̂₀^true = (√ᾱ_t·z + √(1 − ᾱ_t)·ε − √(1 − ᾱ_t)·ε_θ)/√ᾱ_t, decodes both predictions and compares
their last-block DINO patch tokens (1 − max cosine similarity per patch; score: mean of the top 10).
It fires once per image, when the score passes the class's threshold (the reconstruction has
departed from the input: keep the generated content where the map says anomalous, σ(map), and the
input's elsewhere) or when t falls below `min_step` (take x̂₀^true). Then x_{t−1} = √ᾱ_{t−1}·x̂₀ +
√(1 − ᾱ_{t−1})·ε_θ. The image is the VAE decoding of x₀.

Differentiable end to end (the official pipeline runs under `no_grad`): the VAE sample is
reparameterized (mean + std·ε), the DINO comparison and the mixing are plain tensor operations.
The one non-differentiable step is the branch "score > threshold", wrapped in `NonDifferentiable`
with the identity surrogate (a straight-through estimator under `bpda=true`). The branch reads the
BPDA setting once per forward and hands it to each step, so a step recomputed in the backward pass
(`grad_checkpoint`) builds the same graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from robustad.methods.non_differentiable import NonDifferentiable, bpda_active, bpda_enabled

ADAPTIVE_TOP_K = 10  # the adaptive step's score: mean of the 10 largest patch distances (ddim_scheduling.py)


def exceeds(margin: torch.Tensor) -> torch.Tensor:
    """1 where the margin is positive, else 0 (the adaptive step's branch)."""
    return (margin > 0).to(margin.dtype)


def ddim_timesteps(denoise_step: int, steps: int) -> tuple[list[int], int]:
    """The official timesteps ("leading" spacing over [0, denoise_step), offset 1) and their stride."""
    stride = denoise_step // steps
    if stride < 1:
        raise ValueError(f"method 'glad': inference_steps={steps} exceeds denoise_step={denoise_step}")
    return [i * stride + 1 for i in reversed(range(steps))], stride


def patch_distance_map(tokens_a: torch.Tensor, tokens_b: torch.Tensor) -> torch.Tensor:
    """(B, N): per patch of a, 1 − the largest cosine similarity to any patch of b."""
    a = F.normalize(tokens_a, dim=-1)
    b = F.normalize(tokens_b, dim=-1)
    return (1 - torch.bmm(a, b.transpose(1, 2))).amin(dim=-1)


class AdaptiveDDIM(torch.nn.Module):
    """x_T -> x₀ by DDIM with GLAD's adaptive step; holds no weights of its own (the detector's modules
    are passed in), only ᾱ and the branch."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        self.branch = NonDifferentiable(exceeds)  # identity surrogate: straight through under BPDA

    def noise_to(self, latents: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        a = self.alphas_cumprod[t]
        return a.sqrt() * latents + (1 - a).sqrt() * noise

    def forward(self, unet, decode, dino_last, embeddings, latents, noise, cfg) -> torch.Tensor:
        """Denoised latents x₀ (B, 4, h, w) from the clean latents z and the noise ε (both (B, 4, h, w)).

        unet(x, t, embeddings) -> ε_θ (guidance applied); decode(latents) -> images; dino_last(images)
        -> last-block patch tokens. `cfg`: the resolved GLADConfig."""
        timesteps, stride = ddim_timesteps(cfg.denoise_step, cfg.inference_steps)
        x = self.noise_to(latents, noise, cfg.denoise_step)
        pending = torch.ones(latents.shape[0], device=latents.device, dtype=latents.dtype)  # not yet fired
        bpda = bpda_active()
        for t in timesteps:
            def step(x, pending, t=t):
                with bpda_enabled(bpda):
                    return self.step(unet, decode, dino_last, embeddings, latents, noise, x, pending, t, stride, cfg)

            if cfg.grad_checkpoint and torch.is_grad_enabled():
                x, pending = checkpoint(step, x, pending, use_reentrant=False)
            else:
                x, pending = step(x, pending)
        return x

    def step(self, unet, decode, dino_last, embeddings, latents, noise, x, pending, t, stride, cfg):
        a_t = self.alphas_cumprod[t]
        prev = t - stride
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else self.alphas_cumprod[0]  # set_alpha_to_one=False
        eps = unet(x, t, embeddings)
        predicted = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if cfg.input_threshold > 0 and bool(pending.any()):
            from_input = (self.noise_to(latents, noise, t) - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            tokens_in, tokens_rec = dino_last(decode(from_input)), dino_last(decode(predicted))
            distances = patch_distance_map(tokens_in, tokens_rec)  # (B, N)
            score = distances.topk(min(ADAPTIVE_TOP_K, distances.shape[1]), dim=1).values.mean(1)
            side = int(round(distances.shape[1] ** 0.5))
            mask = torch.sigmoid(distances.view(-1, 1, side, side))
            mask = F.interpolate(mask, size=latents.shape[-2:], mode="bilinear", align_corners=False) \
                if mask.shape[-2:] != latents.shape[-2:] else mask
            above = self.branch(score - cfg.input_threshold)  # 1: the reconstruction departed from the input
            early = float(t < cfg.min_step)
            fire = pending * (1 - (1 - above) * (1 - early))
            view = (-1, 1, 1, 1)
            mixed = mask * predicted + (1 - mask) * from_input
            fired = above.view(view) * mixed + (1 - above.view(view)) * from_input
            predicted = fire.view(view) * fired + (1 - fire.view(view)) * predicted
            pending = pending * (1 - fire)
        return a_prev.sqrt() * predicted + (1 - a_prev).sqrt() * eps, pending
