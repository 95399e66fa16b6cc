"""The threat model: norm, budget ε, iterations, step size, restarts, seed.

ε is measured in pixel space on images in [0, 1] (RobustBench's convention).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robustad.attacks.image_random import ImageRandom
from robustad.core.choices import Choice
from robustad.core.parsing import parse_eps  # noqa: F401  (re-exported: robustad.attacks.parse_eps)


class Norm(Choice):
    LINF = "linf"
    L2 = "l2"


@dataclass(frozen=True)
class ThreatModel:
    norm: Norm = Norm.LINF
    eps: float = 8 / 255
    steps: int = 10
    step_size: float | None = None  # None: 2.5 * eps / steps (the PatchGuard code's choice)
    restarts: int = 1
    random_start: bool = False
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "norm", Norm.parse(self.norm))
        object.__setattr__(self, "eps", parse_eps(self.eps))
        if int(self.steps) < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if int(self.restarts) < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")

    @property
    def alpha(self) -> float:
        """The step size actually used."""
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


def lp_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-image norm of a perturbation (B,)."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == Norm.LINF else flat.norm(p=2, dim=1)


def project(adv: torch.Tensor, clean: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """Projects `adv` onto the ε-ball around `clean` and onto [0, 1]."""
    delta = adv - clean
    if norm == Norm.LINF:
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
        factor = (eps / norms).clamp(max=1.0).view(-1, *[1] * (delta.dim() - 1))
        delta = delta * factor
    return (clean + delta).clamp(0.0, 1.0)


def ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The steepest-ascent unit direction: sign(g) under L∞, g/||g||₂ under L2."""
    if norm == Norm.LINF:
        return grad.sign()
    norms = grad.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    return grad / norms.view(-1, *[1] * (grad.dim() - 1))


def random_start(clean: torch.Tensor, norm: Norm, eps: float, generator) -> torch.Tensor:
    """A uniform point of the ε-ball around `clean` (clipped to [0, 1]).

    `generator`: an `ImageRandom` (each image its own stream: the same start in any batch, what
    attacks use) or a `torch.Generator` / None (one stream for the batch).
    """
    shape = (-1, *[1] * (clean.dim() - 1))
    if norm == Norm.LINF:
        delta = (uniform_like(clean, generator) * 2 - 1) * eps
    else:
        gauss = normal_like(clean, generator)
        gauss = gauss / gauss.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
        radius = uniform_like(clean.flatten(1)[:, 0], generator)  # one per image
        radius = radius ** (1.0 / clean[0].numel())
        delta = gauss * radius.view(shape) * eps
    return (clean + delta).clamp(0.0, 1.0)


def uniform_like(like: torch.Tensor, generator) -> torch.Tensor:
    """U[0, 1) shaped like `like`, from an `ImageRandom` (per image) or a `torch.Generator`."""
    if isinstance(generator, ImageRandom):
        return generator.uniform(*like.shape[1:]).to(like)
    return torch.rand(like.shape, generator=generator, device="cpu").to(like)


def normal_like(like: torch.Tensor, generator) -> torch.Tensor:
    """N(0, 1) shaped like `like`, from an `ImageRandom` (per image) or a `torch.Generator`."""
    if isinstance(generator, ImageRandom):
        return generator.normal(*like.shape[1:]).to(like)
    return torch.randn(like.shape, generator=generator, device="cpu").to(like)


class ThreatModelViolation(RuntimeError):
    """An attack returned images outside the ε-ball or outside [0, 1]."""


def check_inside(adv: torch.Tensor, clean: torch.Tensor, norm: Norm, eps: float, tol: float = 1e-5) -> None:
    """Raises ThreatModelViolation unless every image is inside the ε-ball and [0, 1]."""
    if adv.shape != clean.shape:
        raise ThreatModelViolation(f"adversarial batch has shape {tuple(adv.shape)}, expected {tuple(clean.shape)}")
    if not torch.isfinite(adv).all():
        raise ThreatModelViolation("adversarial batch contains NaN or infinite values")
    low, high = float(adv.min()), float(adv.max())
    if low < -tol or high > 1 + tol:
        raise ThreatModelViolation(f"adversarial pixels leave [0, 1]: min {low:.6f}, max {high:.6f}")
    sizes = lp_norm((adv - clean).float(), norm)
    worst = float(sizes.max()) if sizes.numel() else 0.0
    if worst > eps * (1 + 1e-4) + tol:
        raise ThreatModelViolation(
            f"adversarial perturbation of {norm.value} norm {worst:.6f} exceeds eps {eps:.6f}"
        )
