"""GLAD's anomaly-oriented training paradigm (paper §3.2; official `main.py`, `train_one_epoch`).

Stable Diffusion's UNet is fine-tuned so that, from a noised *anomalous* latent, it predicts the noise
that leads back to the *normal* latent. Per batch of normal images x (in [−1, 1]):
- a synthetic anomaly x_a of each image: DRAEM-style, an augmented texture pasted into a thresholded
  Perlin mask (threshold 0.3, opacity 1 − β, β ~ U(0, 0.8)) on half of the images (official
  `dataset.py`; textures from DTD there, `texture_source` here: `methods/baselines/synthesis.py`);
- VAE posterior samples z_n, z_a (scaled by 0.18215); t ~ U{0, ..., 999}, α = t/1000, and the
  "synthesis feature" z_s = α·z_a + (1 − α)·z_n: the further the noise, the more anomalous the start;
- x_t = √ᾱ_t·z_s + √(1 − ᾱ_t)·ε and the target ε* = (√ᾱ_t·z_n + √(1 − ᾱ_t)·ε − √ᾱ_t·z_s)/√(1 − ᾱ_t),
  the noise that, removed from x_t, leaves z_n; loss MSE(ε_θ(x_t, t, prompt), ε*).
AdamW (lr 5e-6, β = (0.9, 0.999), weight decay 1e-2, ε 1e-8), constant schedule, gradient norm clipped
to 1.0, `train_steps` steps of `batch_size` images (official: 8-bit AdamW in fp16, batch 32, the
checkpoint step chosen per class; here fp32 AdamW). Only the UNet trains; the VAE and DINO are frozen.
Differences: the official code restricts the Perlin mask to the object's Otsu foreground for some
classes and samples the posterior with a fixed generator; neither is done here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robustad.core.seeding import derived_generator
from robustad.methods.baselines.common import module_device, stack_images
from robustad.methods.baselines.perlin import blend_anomaly, perlin_mask
from robustad.methods.baselines.synthesis import TextureSource

PERLIN_THRESHOLD = 0.3  # dataset.py generate_anomaly
MAX_BETA = 0.8
ANOMALY_PROBABILITY = 0.5
TRAIN_TIMESTEPS = 1000


def synthetic_anomalies(images: torch.Tensor, textures: TextureSource, gen: torch.Generator) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] with a Perlin-masked texture pasted into about half of them."""
    out = images.clone()
    for i in range(images.shape[0]):
        if float(torch.rand(1, generator=gen)) >= ANOMALY_PROBABILITY:
            continue
        mask = perlin_mask(images.shape[-1], gen, threshold=PERLIN_THRESHOLD).to(images)
        beta = float(torch.rand(1, generator=gen)) * MAX_BETA
        out[i] = blend_anomaly(images[i], textures.sample(gen).to(images), mask, beta)
    return out


def train_unet(detector, train_set) -> list[float]:
    """Fine-tunes `detector.unet` with the anomaly-oriented loss; returns the loss of every step."""
    cfg = detector.config
    device = module_device(detector)
    gen = derived_generator()  # follows the cell's seed (robustad.core.seeding)
    images = stack_images(train_set)
    textures = TextureSource(cfg.texture_source, cfg.image_size, images, cfg.dtd_root, detector.name)
    alphas = detector.ddim.alphas_cumprod
    condition = detector.prompt_embeddings[1:2]
    optimizer = torch.optim.AdamW(detector.unet.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                  weight_decay=cfg.weight_decay, eps=1e-8)
    detector.unet.train()
    losses = []
    for _ in range(cfg.train_steps):
        index = torch.randint(0, len(images), (min(cfg.batch_size, len(images)),), generator=gen)
        normal = images[index]
        anomalous = synthetic_anomalies(normal, textures, gen)
        normal, anomalous = normal.to(device), anomalous.to(device)
        with torch.no_grad():
            z_normal = detector.encode(normal, fixed=False)
            z_anomalous = detector.encode(anomalous, fixed=False)
        t = torch.randint(0, TRAIN_TIMESTEPS, (normal.shape[0],), generator=gen).to(device)
        mix = (t.float() / TRAIN_TIMESTEPS).view(-1, 1, 1, 1)
        synthesis = mix * z_anomalous + (1 - mix) * z_normal
        noise = torch.randn(synthesis.shape, generator=gen).to(synthesis)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * synthesis + (1 - a).sqrt() * noise
        target = (a.sqrt() * z_normal + (1 - a).sqrt() * noise - a.sqrt() * synthesis) / (1 - a).sqrt()
        predicted = detector.unet(noisy, t, encoder_hidden_states=condition.expand(normal.shape[0], -1, -1)).sample
        loss = F.mse_loss(predicted.float(), target.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(detector.unet.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    detector.unet.eval()
    return losses
