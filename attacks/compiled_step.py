"""The detector's forward through `torch.compile` (inductor), for the attack step's forward + input gradient.

An attack step is one forward and one backward to the input. Eager PyTorch runs the layer norms,
GELUs, softmaxes, residual adds and reshapes of a ViT as separate kernels that each read and write
the whole activation; inductor fuses them (on the CPU into C++/OpenMP kernels around the oneDNN
matmuls; on CUDA into Triton kernels), which matters where those ops, not the matmuls, bound the
step (the H200's bf16 PGD reaches 5% of its matmul peak: docs/findings/attack-engine-performance.md).
On the project's 2-core CPU it saves nothing measurable for the `paper` PatchGuard (ViT-S/14 at
224 px): the matmuls are ~60% of an eager step there (same findings file).

- `compiled_forward()`: one process-wide `torch.compile(lambda detector, images: detector(images))`
  with `dynamic=False`: one specialized graph per (detector type, batch shape, dtype, grad mode);
  the detector is an argument, so a new batch's objective, or another detector of the same
  architecture, reuses the compiled graph (parameters are graph inputs; no recompilation).
- Cost: the first call of each batch shape compiles (ViT-S/14 at 224 px on the 2-core CPU: 19 s
  with inductor's on-disk cache already filled, over a minute without); only long attacks can
  amortize it, and its gain is unmeasured on a GPU, so `PGD(compile=True)` is an option, off by
  default.
- Results: the same kernels' arithmetic in another order, so losses and gradients agree to float
  rounding; L∞ steps take the sign of the gradient, so only the signs of near-zero gradient
  components can flip (the benchmark reports the fraction of differing adversarial pixels).
"""
from __future__ import annotations

import torch

_COMPILED = None


def _forward(detector, images: torch.Tensor) -> torch.Tensor:
    return detector(images)


def compiled_forward():
    """The process-wide compiled `forward(detector, images) -> detector(images)` (built on first use)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(_forward, dynamic=False)
    return _COMPILED
