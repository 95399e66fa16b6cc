"""Non-differentiable steps of a detector, and BPDA: the gradient of a surrogate passed straight through.

A defense that quantizes, thresholds, sorts into bins or picks a branch has, at that step, a zero or
undefined gradient; a gradient attack then sees no signal and the defense looks robust without
being so ("obfuscated gradients", Athalye, Carlini & Wagner, ICML 2018, https://arxiv.org/abs/1802.00420).
Their answer is BPDA (Backward Pass Differentiable Approximation): compute the step exactly on the
forward pass and, on the backward pass, use the gradient of a differentiable surrogate g ≈ f
(the identity for most input transformations: quantization, JPEG, denoisers, masks).

A detector declares such a step by wrapping it: `self.quantize = NonDifferentiable(fn, surrogate)`.

- Without BPDA (the default) the module is `fn`: its forward and its own autograd gradient, as the
  detector defines them (zero almost everywhere for a rounding step).
- Inside `bpda_enabled()` (what an attack with `bpda=true` enters for the duration of its call) the
  forward value is still exactly `fn(x)`, and the gradient with respect to x is that of
  `surrogate(x)` (default: the identity, which needs `fn` to keep its input's shape).

The switch is a `contextvars.ContextVar`, read on the forward pass: the choice is baked into the
autograd graph when it is built, so the backward pass (which PyTorch may run on other threads)
needs no global state; each thread (and asyncio task) sees its own setting, and the previous one
is restored when the context exits, also on an exception.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import torch
from torch import nn

_BPDA: contextvars.ContextVar[bool] = contextvars.ContextVar("robustad_bpda", default=False)


def bpda_active() -> bool:
    """Whether `NonDifferentiable` steps currently pass their surrogate's gradient."""
    return _BPDA.get()


@contextlib.contextmanager
def bpda_enabled(enabled: bool = True):
    """Within the block, every `NonDifferentiable` step built into a graph passes its surrogate's
    gradient (`enabled=False`: its own gradient); the previous setting is restored on exit."""
    token = _BPDA.set(bool(enabled))
    try:
        yield
    finally:
        _BPDA.reset(token)


class _SurrogateGradient(torch.autograd.Function):
    """Returns `value` unchanged; its gradient goes to `surrogate_out` (and so through the surrogate)."""

    @staticmethod
    def forward(ctx, surrogate_out: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class NonDifferentiable(nn.Module):
    """A step y = fn(x) computed exactly; under `bpda_enabled()` its gradient is that of `surrogate`.

    fn: tensor -> tensor (or an `nn.Module`, registered as a child so `.to()` and state dicts see it).
    surrogate: a differentiable approximation of fn, tensor -> tensor of fn's output shape; None is
    the identity (then fn must keep the input's shape). Shapes are checked on every BPDA pass.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], surrogate: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"NonDifferentiable: fn must be callable, got {type(fn).__name__}")
        if surrogate is not None and not callable(surrogate):
            raise TypeError(f"NonDifferentiable: surrogate must be callable or None, got {type(surrogate).__name__}")
        self.fn = fn
        self.surrogate = surrogate if surrogate is not None else _identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (bpda_active() and torch.is_grad_enabled() and x.requires_grad):
            return self.fn(x)
        with torch.no_grad():
            value = self.fn(x)
        approx = self.surrogate(x)
        if approx.shape != value.shape:
            raise ValueError(f"NonDifferentiable: the surrogate gives shape {tuple(approx.shape)}, the step "
                             f"{tuple(value.shape)}; give a surrogate with the step's output shape")
        return _SurrogateGradient.apply(approx, value if value.is_floating_point() else value.to(approx.dtype))

    def extra_repr(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        surrogate = "identity" if self.surrogate is _identity else getattr(self.surrogate, "__name__", type(self.surrogate).__name__)
        return f"fn={name}, surrogate={surrogate}"
