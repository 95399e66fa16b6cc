"""PatchGuard's training loss and adversarial training step (paper §5.2-5.3, eq. 3-7).

Each step takes a batch of normal images x (targets all 0) and their pseudo anomalies x' (targets
from the pseudo-anomaly masks), crafts x_adv and x'_adv with PGD inside the L∞ ε-ball (ε = 8/255,
10 steps, step 2.5·ε/steps, no random start as in the official code; `train_random_start=true`
starts each step's PGD at a fresh uniform point of the ball, as Madry et al.;
`train_reuse_perturbation=true` at the image's previous perturbation, `perturbation_memory.py`) and minimizes the
sum of the losses of the four batches, L(x) + L(x_adv) + L(x') + L(x'_adv) (the official code's
train_step), with L = Σ_patches BCE + α·R (eq. 5), averaged over the images of each batch.

The training attack. Eq. 6 maximizes L itself; the official code's `pgd_attack` (like our test-time
attack) maximizes the label-flipping margin loss: mean logit of normal patches − mean logit of
anomalous patches. We follow the code and reuse the evaluation engine (`robustad.attacks.pgd.PGD`
on an `AttackObjective` with the pseudo-anomaly patch targets, parameters frozen): the BCE part of L
saturates on a confident model (DESIGN.md, "measured while planning"), so PGD on it finds weaker
points than the attack the model is evaluated against; `train_attack_loss="ce"` maximizes the
(unregularized) BCE instead, the CE part of eq. 6.

`train_detection_share=s` attacks the first round(s·B) images of each half of [x; x'] on the
image score S instead (the detection objective: raise S of a normal image, lower S of a pseudo
anomaly), the rest on the patch labels; the loss is the same patch loss. The evaluation's
detection attack moves S across the normal/anomalous boundary even where the patch ranking
holds, and a localization-only training attack never shows the model that.
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
from robustad.methods.patchguard.perturbation_memory import PerturbationMemory


IGNORED = -1.0  # the target of a patch left out of the loss and of the training attack


def patch_labels(masks: torch.Tensor, grid: int, rule: str = "fraction", ignore_up_to: float = 0.0) -> torch.Tensor:
    """Patch targets (B, g, g) in {0, 1} from pixel masks (B, 1, H, W).

    "fraction" (paper §5.2): a patch is anomalous when more than 5% of its pixels are;
    "any" (official code): when any pixel is. With `ignore_up_to` = t > 0, a patch partly in the
    mask, with more than 0 and at most t of its pixels anomalous, gets the target `IGNORED`.
    """
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    if rule == "fraction":
        targets = patch_targets(masks, (grid, grid))
    elif rule == "any":
        targets = (F.adaptive_max_pool2d(masks.float(), grid)[:, 0] > 0.5).float()
    else:
        raise ValueError(f"patch_label_rule={rule!r}: expected fraction or any")
    if ignore_up_to > 0:
        fraction = F.adaptive_avg_pool2d((masks > 0.5).float(), grid)[:, 0]
        targets[(fraction > 0) & (fraction <= ignore_up_to)] = IGNORED
    return targets


def regularized_layers(config: PatchGuardConfig) -> tuple:
    """The attention layers R looks at: 0-based ViT blocks, then the discriminator if asked."""
    layers = config.regularized_blocks
    if config.reg_discriminator:
        if not config.discriminator:
            raise ValueError("patchguard config reg_discriminator=true needs discriminator=true")
        layers = layers + (DISCRIMINATOR,)
    return layers


def patchguard_loss(net, images: torch.Tensor, targets: torch.Tensor, config: PatchGuardConfig,
                    return_logits: bool = False):
    """L(x, x_m) = Σ_patches BCE(M, x_m) + α·R(x) per image, shape (B,) (eq. 3-5).

    With `anomalous_patch_weight` w ≠ 1 the BCE of anomalous patches counts w times; patches with
    the target `IGNORED` count zero times. With
    `return_logits` also the patch logits M(x) (B, g, g) it was computed from.

    `net` is a `PatchGuardNet`, `targets` (B, g, g) patch labels in {0, 1}.
    """
    if config.alpha == 0:
        logits = net(images)
        regularizer = 0.0
    else:
        logits, attention = net(images, regularized_layers(config))
        ordered = {key: attention[key] for key in regularized_layers(config)}
        regularizer = config.alpha * attention_regularizer(
            ordered, reg_type=config.reg_type, delta=config.delta, kl_weights=config.kl_weights
        )
    known = (targets >= 0).float()  # IGNORED patches (patch_ignore_up_to) are left out
    targets = targets.float().clamp_min(0.0)
    weight = known * (1 + (config.anomalous_patch_weight - 1) * targets)
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets, weight=weight, reduction="none")
    bce = bce.flatten(1).sum(1)
    return (bce + regularizer, logits) if return_logits else bce + regularizer


def training_eps(config: PatchGuardConfig, progress: float) -> float:
    """The training ε at `progress` (fraction of the epochs done, in [0, 1]).

    With `eps_warmup` = w > 0, ε grows linearly from ε/(w·epochs) to ε over the first w of the
    epochs (the ε warm-up of adversarially trained ViTs: Mo et al., NeurIPS 2022; Debenedetti et
    al., "A Light Recipe to Train Robust Vision Transformers", SaTML 2023); afterwards it is ε.
    """
    if config.eps_warmup <= 0 or progress >= config.eps_warmup:
        return config.train_eps
    first_epoch = 1.0 / max(1, config.epochs)
    return config.train_eps * min(1.0, (progress + first_epoch) / config.eps_warmup)


def training_step_size(config: PatchGuardConfig, eps: float, steps: int) -> float:
    """The training attack's step: `train_step_size` scaled with ε (warm-up), or 2.5·ε/steps."""
    return config.train_step_size * eps / config.train_eps if config.train_step_size else 2.5 * eps / steps


def adversarial_examples(detector, images: torch.Tensor, targets: torch.Tensor, config: PatchGuardConfig,
                         eps: float | None = None, start: torch.Tensor | None = None,
                         loss: FlipLoss | None = None, objective: Objective = Objective.LOCALIZATION) -> torch.Tensor:
    """PGD-`train_steps` L∞ examples flipping `targets` (B, g, g), model frozen (eval mode).

    `eps` defaults to `config.train_eps`; the step size stays 2.5·eps/steps (or `train_step_size`).
    `start`: adversarial images to begin at (projected onto the ball), e.g. images + a stored δ.
    `loss`: the flip loss to maximize (default `config.train_attack_loss`). `objective`
    DETECTION flips the image score S against the image labels `image_labels(targets)` instead.
    """
    eps = config.train_eps if eps is None else eps
    step_size = training_step_size(config, eps, config.train_steps)
    threat = ThreatModel(
        norm=Norm.LINF,
        eps=eps,
        steps=config.train_steps,
        step_size=step_size,
        random_start=config.train_random_start,
        # a new start each step, drawn from the global RNG: deterministic under torch.manual_seed
        seed=int(torch.randint(0, 2**31 - 1, (1,))) if config.train_random_start else 0,
    )
    attack = PGD(threat, keep_best=False)  # the last iterate, as the official code
    with frozen(detector):
        units = image_labels(targets).view(-1, 1) if objective == Objective.DETECTION else targets.flatten(1).float()
        attacked = AttackObjective(detector, units, objective,
                                   FlipLoss.parse(config.train_attack_loss if loss is None else loss))
        return attack.perturb(attacked, images.detach(), start=start).detach()


def image_labels(targets: torch.Tensor) -> torch.Tensor:
    """(B,) 1.0 for an image with an anomalous patch target, else 0.0 (`IGNORED` patches count as neither)."""
    return (targets.flatten(1) > 0.5).any(1).float()


def detection_rows(batch: int, share: float, device=None) -> torch.Tensor:
    """(batch,) bool: the images of [x; x'] whose training attack flips S (`train_detection_share`).

    The first round(share · half) images of each half, so normal images and pseudo anomalies in
    equal numbers, with no random draw (a share of 0 leaves the training's RNG stream unchanged).
    """
    half = batch // 2
    count = round(share * half)
    rows = torch.zeros(batch, dtype=torch.bool, device=device)
    rows[:count] = True
    rows[half:half + count] = True
    return rows


def training_attack(detector, images: torch.Tensor, targets: torch.Tensor, config: PatchGuardConfig,
                    eps: float | None = None, start: torch.Tensor | None = None) -> torch.Tensor:
    """The training attack on [x; x'] (2B images): patch labels, and S for `detection_rows`."""
    on_score = detection_rows(images.shape[0], config.train_detection_share, images.device)
    if not on_score.any():
        return adversarial_examples(detector, images, targets, config, eps, start)
    adversarial = torch.empty_like(images)
    for rows, objective in ((~on_score, Objective.LOCALIZATION), (on_score, Objective.DETECTION)):
        if rows.any():
            adversarial[rows] = adversarial_examples(detector, images[rows], targets[rows], config, eps,
                                                     None if start is None else start[rows], objective=objective)
    return adversarial


def training_batch(normal: torch.Tensor, anomalous: torch.Tensor, anomaly_masks: torch.Tensor,
                   config: PatchGuardConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """[x; x'] (2B, 3, H, W) and their patch targets (2B, g, g): zeros, then the masks' patch labels
    (`IGNORED` for patches partly in a mask, up to `patch_ignore_up_to` of their pixels)."""
    grid = config.grid_size
    normal_targets = torch.zeros(normal.shape[0], grid, grid, device=normal.device)
    anomaly_targets = patch_labels(anomaly_masks, grid, config.patch_label_rule,
                                   config.patch_ignore_up_to).to(normal.device)
    return torch.cat([normal, anomalous]), torch.cat([normal_targets, anomaly_targets])


def training_step(detector, optimizer, normal: torch.Tensor, anomalous: torch.Tensor, anomaly_masks: torch.Tensor,
                  eps: float | None = None, memory: PerturbationMemory | None = None,
                  index: torch.Tensor | None = None) -> float:
    """One optimizer step on normal images (B, 3, H, W) and pseudo anomalies with masks (B, 1, H, W).

    `eps`: the training attack's ε (default `config.train_eps`; see `training_eps`). `memory` and
    `index` (the images' training-set indices): the attack starts at each image's stored δ and
    stores where it ends (`train_reuse_perturbation`). Returns the loss value. Uses autocast to
    bfloat16 when `train_precision="bf16"`.
    """
    config = detector.config
    images, targets = training_batch(normal, anomalous, anomaly_masks, config)
    device_type = normal.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.train_precision == "bf16"):
        if config.adv_train:
            # One attack on x and x' together: per-image losses, so the same examples as two
            # attacks (the official code's), with half the passes over twice the batch.
            start = None if memory is None else images + memory.recall(index).to(images)
            adversarial = training_attack(detector, images, targets, config, eps, start)
            if memory is not None:
                memory.store(index, adversarial - images)
            if config.train_clean_loss:
                images, targets = torch.cat([images, adversarial]), torch.cat([targets, targets])
            else:
                images = adversarial
        detector.train()
        per_image = patchguard_loss(detector.net, images, targets, config)
    loss = per_image.view(-1, normal.shape[0]).mean(dim=1).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
