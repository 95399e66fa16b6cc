"""TRADES training for PatchGuard (Zhang et al., "Theoretically Principled Trade-off between Robustness
and Accuracy", ICML 2019, arXiv:1901.08573): `--config train_objective=trades`. Not in the PatchGuard
paper or its code.

PGD training (`adversarial_training.training_step`, eq. 7) fits the patch labels on the clean and
on the adversarial images. TRADES fits them on the clean images only, L(x) (eq. 5, with R), and adds
β · Σ_patches KL(p(x) ‖ p(x_adv)), p = σ(M) a patch's anomaly probability, where x_adv maximizes that
KL inside the L∞ ε-ball: PGD-`train_steps` from x + 0.001·N(0, 1), as the TRADES code. For Bernoulli
distributions KL(p ‖ q) = BCE(M(x_adv), p) − BCE(M(x), p), so the inner maximization is the "ce"
flip loss against the soft targets p(x), run by the same PGD engine as PGD training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robustad.attacks.attack import frozen
from robustad.attacks.objectives import FlipLoss
from robustad.methods.patchguard.adversarial_training import adversarial_examples, patchguard_loss, training_batch
from robustad.methods.patchguard.perturbation_memory import PerturbationMemory

START_SCALE = 0.001  # σ of the Gaussian start around x (TRADES code)


def bernoulli_kl(logits: torch.Tensor, adversarial_logits: torch.Tensor) -> torch.Tensor:
    """Σ_patches KL(σ(logits) ‖ σ(adversarial_logits)) per image (B,), for patch logits (B, g, g)."""
    p = torch.sigmoid(logits.float())
    cross = F.binary_cross_entropy_with_logits(adversarial_logits.float(), p, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(logits.float(), p, reduction="none")
    return (cross - entropy).flatten(1).sum(1)


def trades_training_step(detector, optimizer, normal: torch.Tensor, anomalous: torch.Tensor,
                         anomaly_masks: torch.Tensor, eps: float | None = None,
                         memory: PerturbationMemory | None = None, index: torch.Tensor | None = None) -> float:
    """One TRADES optimizer step; arguments and return value as `adversarial_training.training_step`
    (`memory` and `index` are not used: TRADES starts next to x)."""
    config = detector.config
    images, targets = training_batch(normal, anomalous, anomaly_masks, config)
    count = normal.shape[0]
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=config.train_precision == "bf16"):
        with frozen(detector), torch.no_grad():
            soft_targets = torch.sigmoid(detector.net(images).float())
        start = images + START_SCALE * torch.randn(images.shape, device="cpu").to(images)
        adversarial = adversarial_examples(detector, images, soft_targets, config, eps, start=start.clamp(0, 1),
                                           loss=FlipLoss.CE)
        detector.train()
        per_image, logits = patchguard_loss(detector.net, torch.cat([images, adversarial]),
                                            torch.cat([targets, targets]), config, return_logits=True)
    clean_logits, adversarial_logits = logits[:len(images)], logits[len(images):]
    per_image = per_image[:len(images)] + config.trades_beta * bernoulli_kl(clean_logits, adversarial_logits)
    loss = per_image.view(-1, count).mean(dim=1).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
