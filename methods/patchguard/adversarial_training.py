"""PatchGuard's training loss and adversarial training step (paper §5.2-5.3, eq. 3-7).

Each step takes a batch of normal images x (targets all 0) and their pseudo anomalies x' (targets
from the pseudo-anomaly masks), crafts x_adv and x'_adv with PGD inside the L∞ ε-ball (ε = 8/255,
10 steps, step 2.5·ε/steps, no random start, the last iterate, as in the official code) and
minimizes the sum of the losses of the four batches, L(x) + L(x_adv) + L(x') + L(x'_adv) (the
official code's train_step), with L = Σ_patches BCE + α·R (eq. 5), averaged over the images of
each batch. With `backbone=unet` the units are pixels: Σ_pixels BCE is scaled by N / (H·W) so the
loss per image has the patch sum's scale (the learning rate stays the paper's).

The training attack. Eq. 6 maximizes L itself; the official code's `pgd_attack` (like our test-time
attack) maximizes the label-flipping margin loss: mean logit of normal patches − mean logit of
anomalous patches. We follow the code and reuse the evaluation engine (`robustad.attacks.pgd.PGD`
on an `AttackObjective` with the pseudo-anomaly patch targets, parameters frozen, eval mode): the
BCE part of L saturates on a confident model (docs/design.md, "Evaluation must be sound"), so PGD on it
finds weaker points than the attack the model is evaluated against; `train_attack_loss="ce"`
maximizes the (unregularized) BCE instead, the CE part of eq. 6.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robustad.attacks.attack import frozen
from robustad.attacks.objectives import AttackObjective, FlipLoss, Objective, patch_targets
from robustad.attacks.pgd import PGD
from robustad.attacks.threat_model import Norm, ThreatModel
from robustad.methods.patchguard.attention_regularizer import attention_regularizer
from robustad.methods.patchguard.config import PatchGuardConfig
from robustad.methods.patchguard.model import DISCRIMINATOR


def patch_labels(masks: torch.Tensor, grid: int, rule: str = "fraction") -> torch.Tensor:
    """Patch targets (B, g, g) in {0, 1} from pixel masks (B, 1, H, W).

    "fraction" (paper §5.2): a patch is anomalous when more than 5% of its pixels are;
    "any" (official code): when any pixel is.
    """
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    if rule == "fraction":
        return patch_targets(masks, (grid, grid))
    if rule == "any":
        return (F.adaptive_max_pool2d(masks.float(), grid)[:, 0] > 0.5).float()
    raise ValueError(f"patch_label_rule={rule!r}: expected fraction or any")


def regularized_layers(config: PatchGuardConfig) -> tuple:
    """The attention layers R looks at: 0-based ViT blocks, then the discriminator if asked."""
    layers = config.regularized_blocks
    return layers + (DISCRIMINATOR,) if config.reg_discriminator else layers


def patchguard_loss(net, images: torch.Tensor, targets: torch.Tensor, config: PatchGuardConfig,
                    return_logits: bool = False):
    """L(x, x_m) = Σ_patches BCE(M, x_m) + α·R(x) per image, shape (B,) (eq. 3-5).

    `net` is a `PatchGuardNet` (or a CNN of `cnn_backbones.py`), `targets` its units' labels in
    {0, 1}: (B, g, g) patches, or (B, H, W) pixels for the U-Net, whose BCE sum is scaled by
    N / (H·W). With `return_logits` also the logits M(x) it was computed from.
    """
    if config.alpha == 0:
        logits = net(images)
        regularizer = 0.0
    else:
        logits, attention = net(images, regularized_layers(config))
        ordered = {key: attention[key] for key in regularized_layers(config)}
        pattern_of = getattr(net, "attention_pattern", None)
        patterns = {key: pattern_of(key) for key in ordered} if pattern_of else None
        regularizer = config.alpha * attention_regularizer(
            ordered, reg_type=config.reg_type, delta=config.delta, kl_weights=config.kl_weights, patterns=patterns
        )
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").flatten(1).sum(1)
    if bce.numel() and targets[0].numel() != config.num_patches:
        bce = bce * (config.num_patches / targets[0].numel())
    return (bce + regularizer, logits) if return_logits else bce + regularizer


def adversarial_examples(detector, images: torch.Tensor, targets: torch.Tensor, config: PatchGuardConfig,
                         loss: FlipLoss | None = None) -> torch.Tensor:
    """PGD-`train_steps` L∞ examples flipping `targets` (B, g, g), model frozen.

    ε is `config.train_eps`, the step `train_step_size` or 2.5·ε/steps, no random start, the last
    iterate. `loss`: the flip loss to maximize (default `config.train_attack_loss`). Eval mode, or train
    mode (dropout on, parameters still frozen) with `train_attack_mode="train"` as the official code.
    """
    eps = config.train_eps
    step_size = config.train_step_size or 2.5 * eps / config.train_steps
    threat = ThreatModel(norm=Norm.LINF, eps=eps, steps=config.train_steps, step_size=step_size)
    attack = PGD(threat, keep_best=False, compile=config.train_attack_compile)  # the last iterate, as the official code
    with frozen(detector):
        if config.train_attack_mode == "train":  # the official code attacks the model in train mode (dropout on)
            detector.train()
        attacked = AttackObjective(detector, targets.flatten(1).float(), Objective.LOCALIZATION,
                                   FlipLoss.parse(config.train_attack_loss if loss is None else loss))
        return attack.perturb(attacked, images.detach()).detach()


def training_batch(normal: torch.Tensor, anomalous: torch.Tensor, anomaly_masks: torch.Tensor,
                   config: PatchGuardConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """[x; x'] (2B, 3, H, W) and their unit targets (2B, g, g): zeros, then the masks' patch labels
    ((2B, H, W) pixel labels with `backbone=unet`)."""
    grid = config.logit_grid
    normal_targets = torch.zeros(normal.shape[0], grid, grid, device=normal.device)
    anomaly_targets = patch_labels(anomaly_masks, grid, config.patch_label_rule).to(normal.device)
    return torch.cat([normal, anomalous]), torch.cat([normal_targets, anomaly_targets])


def training_step(detector, optimizer, normal: torch.Tensor, anomalous: torch.Tensor,
                  anomaly_masks: torch.Tensor) -> float:
    """One optimizer step on normal images (B, 3, H, W) and pseudo anomalies with masks (B, 1, H, W).

    Returns the loss value. Uses autocast to bfloat16 when `train_precision="bf16"`.
    """
    config = detector.config
    images, targets = training_batch(normal, anomalous, anomaly_masks, config)
    with torch.autocast(normal.device.type, dtype=torch.bfloat16, enabled=config.train_precision == "bf16"):
        if config.adv_train:
            # One attack on x and x' together: per-image losses, so the same examples as two
            # attacks (the official code's), with half the passes over twice the batch.
            adversarial = adversarial_examples(detector, images, targets, config)
            images, targets = torch.cat([images, adversarial]), torch.cat([targets, targets])
        detector.train()
        per_image = patchguard_loss(detector.net, images, targets, config)
    loss = per_image.view(-1, normal.shape[0]).mean(dim=1).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
