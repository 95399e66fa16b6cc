"""One attack step (forward + input gradient) captured as a CUDA graph and replayed.

At the batch sizes of the PatchGuard code (4 images) a GPU spends most of an attack step waiting
for Python to launch ~1,000 small kernels; a CUDA graph launches them all at once. Replay runs the
same kernels on the same shapes as eager execution, so the loss and gradient are those of
`AttackObjective.loss_and_grad` (checked by `benchmarks/attack_throughput.py`, which reports the
fraction of differing pixels). Requirements: a CUDA batch, a detector whose forward does not sync
with the CPU (no `.item()`, no data-dependent shapes) and frozen parameters (the base `Attack`
freezes them), so autocast caches no weight casts across replays.

Used by `PGD(cuda_graph=True)`; on the CPU the option is ignored.
"""
from __future__ import annotations

import torch

WARMUP_STEPS = 2  # eager steps on a side stream before capture (lazy library initialization)


class GraphedLossAndGrad:
    """Callable like `objective.loss_and_grad(images)`; captures one graph per batch shape."""

    def __init__(self, objective):
        self.objective = objective
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_images: torch.Tensor | None = None
        self.static_loss: torch.Tensor | None = None
        self.static_grad: torch.Tensor | None = None

    def _capture(self, images: torch.Tensor) -> None:
        self.graph = None  # free the previous graph's memory pool before capturing a new one
        self.static_images = images.detach().clone()
        forwards = self.objective.forward_count
        side = torch.cuda.Stream(device=images.device)
        side.wait_stream(torch.cuda.current_stream(images.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self.objective.loss_and_grad(self.static_images)
        torch.cuda.current_stream(images.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_loss, self.static_grad = self.objective.loss_and_grad(self.static_images)
        self.graph = graph
        self.objective.forward_count = forwards  # warm-up and capture are not attack queries

    def close(self) -> None:
        """Frees the graph and its memory pool (activations saved at capture); call when the batch is done.

        Without it each batch's pool stayed allocated until garbage collection: the H200 run of
        `benchmarks/attack_throughput.py` saw +65 MiB per batch of 4 (ViT-S/14, 224 px).
        """
        if self.graph is not None:
            self.graph.reset()
        self.graph = self.static_images = self.static_loss = self.static_grad = None

    def __call__(self, images: torch.Tensor):
        """Per-image loss (B,) and its gradient with respect to the images (B, 3, H, W)."""
        if not images.is_cuda:
            raise ValueError("GraphedLossAndGrad needs CUDA images; use objective.loss_and_grad on the CPU")
        if self.graph is None or self.static_images.shape != images.shape or self.static_images.dtype != images.dtype:
            self._capture(images)
        self.static_images.copy_(images)
        self.graph.replay()
        self.objective.forward_count += images.shape[0]
        return self.static_loss.clone(), self.static_grad.clone()
