"""Natural synthetic anomalies (NSA) (Schlüter et al., "Natural Synthetic Anomalies for Self-Supervised
Anomaly Detection and Localization", ECCV 2022, https://arxiv.org/abs/2109.15222), for PatchGuard's
Table 6 ablation.

Patches of another training image are resized and blended into the image with Poisson image editing
(Pérez et al. 2003, "seamless cloning": inside the patch the result keeps the source's gradients, on
its border it equals the destination). As in the authors' code (hmsch/natural-synthetic-anomalies,
`patch_ex`, setting "Shift", binary labels): up to 3 patches (the first always, each further one with
probability 1/2); half-widths (0.03 + Gamma(2, 0.05))·side, clipped to [0.03, 0.4]·side; the source
patch is rescaled by clip(N(1, 0.5), 0.7, 1.3) and placed at a random position of the destination;
the label is the set of patch pixels whose mean absolute change exceeds 1/255, median-filtered over
5×5 pixels. Pixels outside that label are reset to the original, so the mask is exact. Left out: the
object masks NSA uses for some MVTec objects (`skip_background`) and mixed-gradient cloning.
Poisson equation solved exactly on each rectangle with a discrete sine transform (scipy.fft).
Images (B, 3, H, W) in [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import fft, ndimage

from robustad.methods.patchguard.pseudo_anomalies import (
    PseudoAnomalyGenerator,
    check_batch,
    check_images,
    draw_other_indices,
    register_generator,
)


def poisson_blend(destination: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Seamless cloning of `source` into `destination`, both (C, h, w) with h, w >= 3.

    Solves Δf = Δsource inside the rectangle with f = destination on its 1-pixel border (5-point
    Laplacian, Dirichlet boundary), exactly, by a type-I discrete sine transform.
    """
    difference = source.astype(np.float64) - destination.astype(np.float64)
    laplacian = (difference[:, :-2, 1:-1] + difference[:, 2:, 1:-1] + difference[:, 1:-1, :-2]
                 + difference[:, 1:-1, 2:] - 4 * difference[:, 1:-1, 1:-1])
    rows, cols = laplacian.shape[-2:]
    eigen_rows = 2 * np.cos(np.pi * np.arange(1, rows + 1) / (rows + 1)) - 2
    eigen_cols = 2 * np.cos(np.pi * np.arange(1, cols + 1) / (cols + 1)) - 2
    spectrum = fft.dstn(laplacian, type=1, axes=(1, 2)) / (eigen_rows[:, None] + eigen_cols[None, :])
    correction = fft.idstn(spectrum, type=1, axes=(1, 2))
    out = destination.astype(np.float64).copy()
    out[:, 1:-1, 1:-1] += correction
    return np.clip(out, 0.0, 1.0)


def _uniform_int(generator: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high) (low when the range is empty)."""
    return low if high <= low else int(torch.randint(low, high, (), generator=generator))


@register_generator("nsa")
class NaturalSyntheticAnomalies(PseudoAnomalyGenerator):
    """NSA (Schlüter et al., ECCV 2022): resized patches of another image, Poisson-blended in."""

    name = "nsa"
    MAX_PATCHES = 3
    HALF_WIDTH = (0.03, 0.4)  # bounds, of the side
    GAMMA = (2.0, 0.05, 0.03)  # shape, scale, offset of the half-width distribution
    RESCALE = (0.7, 1.3)
    CHANGE_TOLERANCE = 1 / 255
    LABEL_MEDIAN = 5
    MAX_ATTEMPTS = 20
    MIN_SIDE = 3  # the smallest patch the Poisson solve can use (1-pixel border + interior)

    def __init__(self):
        self.train_images = torch.empty(0)

    def prepare(self, images: torch.Tensor) -> None:
        """Keeps the training images (N, 3, H, W) as the source of the blended patches."""
        check_images(images, "prepare(images)")
        self.train_images = images.detach().float().cpu()

    def _half_width(self, side: int, generator: torch.Generator) -> int:
        shape, scale, offset = self.GAMMA
        # Gamma(2, scale) as the sum of two exponentials, so it comes from `generator`
        gamma = -scale * torch.log(torch.rand(int(shape), generator=generator).clamp_min(1e-12)).sum()
        low, high = (round(f * side) for f in self.HALF_WIDTH)
        return int(np.clip((offset + float(gamma)) * side, max(low, 2), max(high, 2)))

    def blend_patch(self, destination: np.ndarray, source: np.ndarray, generator: torch.Generator) -> tuple[int, int, int, int]:
        """Blends one patch of `source` into `destination` (3, H, W) in place; returns its box (top, bottom, left, right)."""
        height, width = destination.shape[-2:]
        half_h, half_w = self._half_width(height, generator), self._half_width(width, generator)
        min_h, min_w = round(self.HALF_WIDTH[0] * height), round(self.HALF_WIDTH[0] * width)
        centre_y = _uniform_int(generator, min_h, height - min_h)
        centre_x = _uniform_int(generator, min_w, width - min_w)
        top, bottom = max(0, centre_y - half_h), min(height, centre_y + half_h)
        left, right = max(0, centre_x - half_w), min(width, centre_x + half_w)
        patch = torch.from_numpy(source[:, top:bottom, left:right].copy())
        scale = float(torch.clamp(1 + 0.5 * torch.randn((), generator=generator), *self.RESCALE))
        new_h = int(np.clip(round(scale * patch.shape[1]), self.MIN_SIDE, height - 2))
        new_w = int(np.clip(round(scale * patch.shape[2]), self.MIN_SIDE, width - 2))
        patch = F.interpolate(patch[None], size=(new_h, new_w), mode="bilinear", align_corners=False,
                              antialias=True)[0].clamp(0, 1).numpy()
        top = _uniform_int(generator, 1, height - new_h)  # one pixel of margin, as NSA's centre bounds
        left = _uniform_int(generator, 1, width - new_w)
        box = (top, top + new_h, left, left + new_w)
        destination[:, box[0]:box[1], box[2]:box[3]] = poisson_blend(destination[:, box[0]:box[1], box[2]:box[3]], patch)
        return box

    def synthesize(self, image: torch.Tensor, source_indices: list[int],
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One NSA anomaly of an image (3, H, W) from patches of the given training images.

        NSA keeps an example whose label came out empty (tiny or invisible patches) as a normal one;
        here the draw is repeated (up to `MAX_ATTEMPTS` times) so every pseudo anomaly has a mask."""
        for _ in range(self.MAX_ATTEMPTS):
            out, label = self._synthesize_once(image, source_indices, generator)
            if bool(label.any()):
                break
        return out, label

    def _synthesize_once(self, image: torch.Tensor, source_indices: list[int],
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        original = image.numpy().astype(np.float64)
        blended = original.copy()
        patches = np.zeros(original.shape[-2:], dtype=bool)
        for number, source_index in enumerate(source_indices):
            if number > 0 and float(torch.rand((), generator=generator)) < 0.5:
                continue
            source = self.train_images[source_index].numpy().astype(np.float64)
            top, bottom, left, right = self.blend_patch(blended, source, generator)
            patches[top:bottom, left:right] = True
        changed = np.abs(blended - original).mean(0) > self.CHANGE_TOLERANCE
        label = ndimage.median_filter((changed & patches).astype(np.uint8), size=self.LABEL_MEDIAN, mode="constant") > 0
        label &= patches
        out = np.where(label[None], blended, original)
        return torch.from_numpy(out).float(), torch.from_numpy(label).float()[None]

    def __call__(self, images: torch.Tensor, indices: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch(images, indices, self.train_images.shape[0], tuple(self.train_images.shape[-2:]))
        device = images.device
        images = images.detach().float().cpu()
        indices = indices.cpu()
        sources = torch.stack([draw_other_indices(indices, self.train_images.shape[0], generator)
                               for _ in range(self.MAX_PATCHES)], dim=1)
        results = [self.synthesize(image, row.tolist(), generator) for image, row in zip(images, sources)]
        out = torch.stack([r[0] for r in results])
        masks = torch.stack([r[1] for r in results])
        return out.to(device), masks.to(device)
