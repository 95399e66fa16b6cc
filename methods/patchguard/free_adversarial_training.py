"""Free adversarial training for PatchGuard (Shafahi et al., "Adversarial Training for Free!",
NeurIPS 2019, arXiv:1904.12843): `--config train_replays=M`. Not in the PatchGuard paper or its code.

PGD training (`adversarial_training.training_step`) spends `train_steps` forward/backward passes
crafting x_adv for every optimizer step. Free training replays each batch M times; every replay is
one forward pass of [x; x'; x + δ; x' + δ'] in training mode, one optimizer step on the same loss
as PGD training (L(x) + L(x') + L(x_adv) + L(x'_adv), eq. 5 and 7; only the last two with
`train_clean_loss=false`) and one signed-gradient ascent
step on δ from that same forward pass (the flip loss of `train_attack_loss`, as PGD training
maximizes), projected onto the L∞ ε-ball. So each batch gets M optimizer steps and M attack steps
for about the cost of one PGD-M training step; `epochs` counts passes over the data, so divide it
by M for the same compute. δ starts at zero, at a uniform point with `train_random_start`, or at the
image's δ from its previous visit with `train_reuse_perturbation` (the Free paper carries δ from
batch to batch; per image is the version that keeps δ meaningful). Step size: `train_step_size`, or
2.5·ε/M by default.
"""
from __future__ import annotations

import torch

from robustad.attacks.objectives import FlipLoss, flip_loss
from robustad.attacks.threat_model import Norm, project, random_start
from robustad.methods.patchguard.adversarial_training import patchguard_loss, training_batch, training_step_size
from robustad.methods.patchguard.perturbation_memory import PerturbationMemory


def free_training_step(detector, optimizer, normal: torch.Tensor, anomalous: torch.Tensor,
                       anomaly_masks: torch.Tensor, eps: float | None = None,
                       memory: PerturbationMemory | None = None, index: torch.Tensor | None = None) -> float:
    """`train_replays` optimizer and attack steps on one batch; returns the mean loss over the replays.

    Arguments as `adversarial_training.training_step`: normal images (B, 3, H, W), pseudo anomalies
    and their masks (B, 1, H, W), the training ε, and the per-image δ memory with the images' indices.
    """
    config = detector.config
    eps = config.train_eps if eps is None else eps
    replays = config.train_replays
    step_size = training_step_size(config, eps, replays)
    images, targets = training_batch(normal, anomalous, anomaly_masks, config)
    if memory is not None:
        start = images + memory.recall(index).to(images)
    elif config.train_random_start:
        start = random_start(images, Norm.LINF, eps, torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,)))))
    else:
        start = images
    adversarial = project(start, images, Norm.LINF, eps)
    both = torch.cat([targets, targets])
    attack_loss = FlipLoss.parse(config.train_attack_loss)
    count = normal.shape[0]
    detector.train()
    total = 0.0
    for _ in range(replays):
        adversarial = adversarial.detach().requires_grad_(True)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=config.train_precision == "bf16"):
            inputs = torch.cat([images, adversarial]) if config.train_clean_loss else adversarial
            per_image, logits = patchguard_loss(detector.net, inputs, both[-len(inputs):], config,
                                                return_logits=True)
        loss = per_image.view(-1, count).mean(dim=1).sum()
        ascent = flip_loss(logits[-len(images):].flatten(1).float(), targets.flatten(1), attack_loss).sum()
        (grad,) = torch.autograd.grad(ascent, adversarial, retain_graph=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        adversarial = project(adversarial.detach() + step_size * grad.sign(), images, Norm.LINF, eps)
        total += float(loss.detach())
    if memory is not None:
        memory.store(index, adversarial - images)
    return total / replays
