"""The official code's pseudo anomalies (`pseudo_anomaly=official`), from reading its `pseudo_anomaly.py`.

rohban-lab/PatchGuard's `AnomalyGenerator`, per image:

1. its binary foreground mask is dilated by 10 px (a 3×3 kernel, 10 times: a 21×21 square);
2. two foreground points are drawn, a source (x1, y1) and a destination (x2, y2); the patch may be
   as wide (high) as the shorter foreground run to the right of (below) the two points; up to 11
   sizes w, h ~ U{0..max} are tried until both rectangles lie on the foreground; a size under the
   lower bound (14 px at 224 px for most categories, `official_min_side`) or a rectangle leaving
   the foreground or the image starts over, up to 251 times, after which random points and a
   lower-bound square are used;
3. the patch cut at the source is distorted at a level drawn light / medium / heavy with p = .2 / .2
   / .6: 0 to 1 / 2 / 4 transforms of the level's list (without repeats, random order) plus a colour
   jitter inserted at a random place;
4. it is rotated by U(−90°, 90°) with the canvas expanded, resized back to w × h (bicubic), and
   pasted at the destination through its alpha: the pasted pixels are the mask.

Differences, on purpose: every draw comes from the caller's `torch.Generator` (the official code
mixes `random`, NumPy and a fixed-seed elastic field, so its elastic displacement is the same for
every patch of a size); its Perlin-noise transform (the `noise` package) is replaced by fractal value
noise of the same scales and thresholds; pixels outside the mask keep their exact values (the
official code round-trips the whole image through 8-bit PIL); a patch pasted across the image border
is clipped. Without downloaded foreground masks (`foreground_mask/`, used when the dataset has them),
the foreground is G(x) ≥ 0.25·max G(x) of `foreground.py`, as for "ours" (textures: the whole image).
"""
from __future__ import annotations

import io
import math

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw

from robustad.methods.patchguard.foreground import ForegroundEstimator
from robustad.methods.patchguard.pseudo_anomalies import (
    PseudoAnomalyGenerator, check_batch, check_images, register_generator,
)

DILATION = 10  # px, cv2.dilate(3×3, iterations=10)
MAX_ATTEMPTS = 250
SIZE_ATTEMPTS = 10
LEVELS = ("light", "medium", "heavy")
LEVEL_PROBABILITIES = (0.2, 0.2, 0.6)
MAX_TRANSFORMS = {"light": 1, "medium": 2, "heavy": 4}
RANGES = {  # the official `param_ranges`
    "brightness": {"light": (0.1, 0.1), "medium": (0.4, 0.4), "heavy": (0.8, 1.0)},
    "contrast": {"light": (0.1, 0.1), "medium": (0.4, 0.4), "heavy": (0.8, 1.0)},
    "saturation": {"light": (0.1, 0.1), "medium": (0.4, 0.4), "heavy": (0.8, 1.0)},
    "hue": {"light": (0.1, 0.1), "medium": (0.3, 0.3), "heavy": (0.5, 0.5)},
    "elastic_alpha": {"light": (10, 20), "medium": (20, 40), "heavy": (40, 100)},
    "torn_lines": {"light": (1, 3), "medium": (5, 10), "heavy": (10, 20)},
    "noise_scale": {"light": (20, 50), "medium": (10, 20), "heavy": (5, 10)},
    "noise_threshold": {"light": (200, 255), "medium": (150, 200), "heavy": (128, 150)},
    "swirl_strength": {"light": (0.5, 1.0), "medium": (1.0, 1.5), "heavy": (1.5, 2.0)},
    "erase_ratio": {"light": (0.01, 0.05), "medium": (0.05, 0.1), "heavy": (0.1, 0.2)},
    "erase_rects": {"light": (1, 2), "medium": (2, 3), "heavy": (3, 5)},
    "blur_radius": {"light": (0.2, 0.5), "medium": (0.8, 1.5), "heavy": (2.0, 3.0)},
    "jpeg_quality": {"light": (30, 50), "medium": (20, 30), "heavy": (1, 20)},
}
TRANSFORMS = {  # the level's list, as the official `augmentations`
    "light": ("blur", "elastic", "swirl"),
    "medium": ("blur", "swirl", "jpeg", "elastic"),
    "heavy": ("elastic", "torn", "noise", "swirl", "erase", "blur"),
}


# -- random draws from a torch.Generator ---------------------------------------------------------------
def _uniform(generator, low, high) -> float:
    return float(low + (high - low) * torch.rand((), generator=generator))


def _integer(generator, low: int, high: int) -> int:
    """U{low..high}, both included."""
    return int(torch.randint(int(low), int(high) + 1, (), generator=generator))


# -- where: foreground, runs, rectangles -----------------------------------------------------------------
def dilate(mask: torch.Tensor, pixels: int = DILATION) -> torch.Tensor:
    """A bool mask (H, W) grown by `pixels` in every direction (a (2p+1)² square)."""
    grown = F.max_pool2d(mask[None, None].float(), 2 * pixels + 1, stride=1, padding=pixels)
    return grown[0, 0] > 0


def runs(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(right, down) (H, W): consecutive foreground pixels from each pixel rightwards / downwards, itself included."""
    def along_last(m):
        out = torch.zeros(m.shape, dtype=torch.long)
        count = torch.zeros(m.shape[0], dtype=torch.long)
        for x in range(m.shape[1] - 1, -1, -1):
            count = torch.where(m[:, x], count + 1, torch.zeros_like(count))
            out[:, x] = count
        return out

    return along_last(mask), along_last(mask.t()).t()


class Foreground:
    """A dilated foreground (H, W) with O(1) 'is this rectangle all foreground' tests."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask.bool()
        self.height, self.width = mask.shape
        self.coords = torch.nonzero(self.mask)  # (K, 2) as (y, x)
        self.right, self.down = runs(self.mask)
        self.integral = F.pad(self.mask.long().cumsum(0).cumsum(1), (1, 0, 1, 0))

    def covers(self, x: int, y: int, w: int, h: int) -> bool:
        """Whether mask[y:y+h, x:x+w] (clipped at the border, as a NumPy slice) is all foreground."""
        bottom, right = min(y + h, self.height), min(x + w, self.width)
        s = self.integral
        inside = int(s[bottom, right] - s[y, right] - s[bottom, x] + s[y, x])
        return inside == (bottom - y) * (right - x)

    def point(self, generator) -> tuple[int, int]:
        y, x = self.coords[_integer(generator, 0, len(self.coords) - 1)]
        return int(x), int(y)


def sample_placement(foreground: Foreground, min_side: int, generator) -> tuple[int, int, int, int, int, int]:
    """(x1, y1, x2, y2, w, h): source and destination corners and the patch size (step 2 above)."""
    for _ in range(MAX_ATTEMPTS + 1):
        x1, y1 = foreground.point(generator)
        x2, y2 = foreground.point(generator)
        max_w = min(int(foreground.right[y1, x1]), int(foreground.right[y2, x2]))
        max_h = min(int(foreground.down[y1, x1]), int(foreground.down[y2, x2]))
        for _ in range(SIZE_ATTEMPTS + 1):
            w, h = _integer(generator, 0, max_w), _integer(generator, 0, max_h)
            if foreground.covers(x1, y1, w, h) and foreground.covers(x2, y2, w, h):
                break
        if w < min_side or h < min_side:
            continue
        if (foreground.covers(x1, y1, w, h) and foreground.covers(x2, y2, w, h)
                and x2 + w <= foreground.width and y2 + h <= foreground.height):
            return x1, y1, x2, y2, w, h
    x1, y1 = foreground.point(generator)
    x2, y2 = foreground.point(generator)
    return x1, y1, x2, y2, min_side, min_side


# -- what: the patch's distortions --------------------------------------------------------------------
def colour_jitter(patch: torch.Tensor, level: str, generator) -> torch.Tensor:
    """torchvision's ColorJitter with the level's strengths: factors drawn around 1, applied in random order."""
    strength = {k: _uniform(generator, *RANGES[k][level]) for k in ("brightness", "contrast", "saturation", "hue")}
    out = patch
    for which in torch.randperm(4, generator=generator).tolist():
        if which == 0:
            out = TF.adjust_brightness(out, _uniform(generator, max(0.0, 1 - strength["brightness"]),
                                                     1 + strength["brightness"]))
        elif which == 1:
            out = TF.adjust_contrast(out, _uniform(generator, max(0.0, 1 - strength["contrast"]),
                                                   1 + strength["contrast"]))
        elif which == 2:
            out = TF.adjust_saturation(out, _uniform(generator, max(0.0, 1 - strength["saturation"]),
                                                     1 + strength["saturation"]))
        else:
            out = TF.adjust_hue(out, _uniform(generator, -strength["hue"], strength["hue"]))
    return out.clamp(0, 1)


def _remap(patch: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, padding: str) -> torch.Tensor:
    """Bilinear sampling of patch (3, h, w) at pixel coordinates xs, ys (h, w)."""
    h, w = patch.shape[-2:]
    grid = torch.stack((2 * xs / max(w - 1, 1) - 1, 2 * ys / max(h - 1, 1) - 1), dim=-1)[None]
    return F.grid_sample(patch[None], grid.float(), mode="bilinear", padding_mode=padding, align_corners=True)[0]


def _smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(4 * sigma + 0.5))
    size = min(2 * radius + 1, 2 * min(field.shape) - 1)
    size -= 1 - size % 2
    return TF.gaussian_blur(field[None, None], [size, size], [sigma, sigma])[0, 0] if size > 1 else field


def elastic(patch, level, generator):
    alpha = _uniform(generator, *RANGES["elastic_alpha"][level])
    h, w = patch.shape[-2:]
    dx = _smooth(torch.rand(h, w, generator=generator) * 2 - 1, 3.0) * alpha
    dy = _smooth(torch.rand(h, w, generator=generator) * 2 - 1, 3.0) * alpha
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return _remap(patch, xs + dx, ys + dy, "reflection")


def swirl(patch, level, generator):
    strength = _uniform(generator, *RANGES["swirl_strength"][level])
    h, w = patch.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    x, y = xs - w // 2, ys - h // 2
    spread = max(1, min(h, w) // 3)
    angle = strength * torch.exp(-(x**2 + y**2) / (2 * spread**2))
    new_x = (w // 2 + x * torch.cos(angle) - y * torch.sin(angle)).clamp(0, w - 1)
    new_y = (h // 2 + x * torch.sin(angle) + y * torch.cos(angle)).clamp(0, h - 1)
    return _remap(patch, new_x, new_y, "border")


def blur(patch, level, generator):
    sigma = _uniform(generator, *RANGES["blur_radius"][level])
    return _smooth_image(patch, sigma)


def _smooth_image(patch, sigma):
    radius = max(1, int(3 * sigma + 0.5))
    size = min(2 * radius + 1, 2 * min(patch.shape[-2:]) - 1)
    size -= 1 - size % 2
    return TF.gaussian_blur(patch, [size, size], [sigma, sigma]) if size > 1 else patch


def _to_pil(patch):
    return Image.fromarray((patch.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def _from_pil(image):
    return TF.pil_to_tensor(image.convert("RGB")).float() / 255


def jpeg(patch, level, generator):
    quality = _integer(generator, *RANGES["jpeg_quality"][level])
    buffer = io.BytesIO()
    _to_pil(patch).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return _from_pil(Image.open(buffer))


def torn(patch, level, generator):
    h, w = patch.shape[-2:]
    image = _to_pil(patch)
    draw = ImageDraw.Draw(image)
    for _ in range(_integer(generator, *RANGES["torn_lines"][level])):
        start = (_integer(generator, 0, w - 1), _integer(generator, 0, h - 1))
        end = (_integer(generator, 0, w - 1), _integer(generator, 0, h - 1))
        colour = tuple(255 * _integer(generator, 0, 1) for _ in range(3))
        draw.line([start, end], fill=colour, width=1)
    return _from_pil(image)


def value_noise(h: int, w: int, scale: float, generator, octaves: int = 6) -> torch.Tensor:
    """Fractal value noise (h, w) of base period `scale` px, amplitudes halving per octave (Perlin's stand-in)."""
    total = torch.zeros(h, w)
    for octave in range(octaves):
        period = scale / 2**octave
        cells = (max(2, math.ceil(h / period) + 2), max(2, math.ceil(w / period) + 2))
        lattice = torch.rand(1, 1, *cells, generator=generator)
        total += 0.5**octave * F.interpolate(lattice, size=(int(cells[0] * period), int(cells[1] * period)),
                                             mode="bicubic", align_corners=True)[0, 0, :h, :w]
    return total


def noise(patch, level, generator):
    scale = _uniform(generator, *RANGES["noise_scale"][level])
    threshold = _integer(generator, *RANGES["noise_threshold"][level])
    h, w = patch.shape[-2:]
    field = value_noise(h, w, scale, generator)
    field = (field - field.min()) / (field.max() - field.min()).clamp_min(1e-12) * 255
    colour = torch.randint(0, 255, (3, 1, 1), generator=generator).float() / 255
    return torch.where(field > threshold, colour, patch)


def erase(patch, level, generator):
    h, w = patch.shape[-2:]
    out = patch.clone()
    ratio = _uniform(generator, *RANGES["erase_ratio"][level])
    for _ in range(_integer(generator, *RANGES["erase_rects"][level])):
        area = int(ratio * h * w)
        aspect = _uniform(generator, 0.3, 3.3)
        eh = int(math.sqrt(area / aspect))
        ew = int(aspect * eh)
        x = _integer(generator, 0, max(0, w - ew))
        y = _integer(generator, 0, max(0, h - eh))
        out[:, y:y + eh, x:x + ew] = torch.randint(0, 255, (3, 1, 1), generator=generator).float() / 255
    return out


DISTORTIONS = {"blur": blur, "elastic": elastic, "swirl": swirl, "jpeg": jpeg, "torn": torn, "noise": noise,
               "erase": erase}


def distort(patch: torch.Tensor, generator) -> tuple[torch.Tensor, list[str]]:
    """Step 3: the level, the transforms (names returned) and a colour jitter at a random place."""
    level = LEVELS[int(torch.multinomial(torch.tensor(LEVEL_PROBABILITIES), 1, generator=generator))]
    count = _integer(generator, 0, MAX_TRANSFORMS[level])
    chosen = [TRANSFORMS[level][i] for i in torch.randperm(len(TRANSFORMS[level]), generator=generator)[:count]]
    chosen.insert(_integer(generator, 0, len(chosen)), "colour")
    for name in chosen:
        patch = colour_jitter(patch, level, generator) if name == "colour" else DISTORTIONS[name](patch, level, generator)
        patch = patch.clamp(0, 1)
    return patch, [level, *chosen]


def rotate(patch: torch.Tensor, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 4: patch (3, h, w) rotated by `angle` degrees on an expanded canvas, resized back to (h, w)
    bicubically; returns it and its mask (h, w), where the rotated canvas's alpha is not 0."""
    h, w = patch.shape[-2:]
    image = _to_pil(patch).convert("RGBA").rotate(angle, expand=True).resize((w, h), resample=Image.BICUBIC)
    mask = TF.pil_to_tensor(image.split()[-1])[0] > 0
    return _from_pil(image), mask


@register_generator("official")
class OfficialCutPasteGenerator(PseudoAnomalyGenerator):
    """The official code's cut-paste pseudo anomalies (see the module docstring).

    Args: `foreground`, `gradcam_weights`, `cache_dir`, `k_soft` as for "ours" (the foreground when the
    dataset has no `foreground_mask/`), `min_side` (smallest patch side at 224 px, scaled to the image
    size; the official per-category lower bound, 14 for most).
    """

    name = "official"
    FOREGROUND_THRESHOLD = 0.25

    def __init__(self, foreground: str = "auto", gradcam_weights: str | None = None, cache_dir: str | None = None,
                 k_soft: int = 3, min_side: int = 14):
        if not isinstance(min_side, int) or min_side < 1:
            raise ValueError(f"--config official_min_side={min_side!r}: expected a side in pixels >= 1")
        self.estimator = ForegroundEstimator(foreground, gradcam_weights, cache_dir, k_soft)
        self.min_side_224 = min_side
        self.foregrounds: list[Foreground] = []

    def prepare(self, images: torch.Tensor) -> None:
        check_images(images, "prepare(images)")
        self.set_foreground_maps(self.estimator(images))

    def set_foreground_maps(self, maps: torch.Tensor) -> None:
        """Foreground maps (N, H, W) in [0, 1] (binary masks or G(x)): ≥ 0.25·max, dilated by 10 px."""
        maps = maps.detach().float().cpu()
        peak = maps.flatten(1).amax(1).view(-1, 1, 1).clamp_max(1.0)
        regions = maps >= self.FOREGROUND_THRESHOLD * peak
        regions |= ~regions.flatten(1).any(1).view(-1, 1, 1)  # an empty map: anywhere
        self.foregrounds = [Foreground(dilate(region)) for region in regions]

    def min_side(self, size: int) -> int:
        return max(1, round(self.min_side_224 * size / 224))

    def __call__(self, images: torch.Tensor, indices: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.foregrounds[0].height, self.foregrounds[0].width) if self.foregrounds else None
        check_batch(images, indices, len(self.foregrounds), shape)
        device = images.device
        images = images.detach().float().cpu()
        out, masks = images.clone(), torch.zeros(images.shape[0], 1, *images.shape[-2:])
        height, width = images.shape[-2:]
        for b, index in enumerate(indices.tolist()):
            x1, y1, x2, y2, w, h = sample_placement(self.foregrounds[index], self.min_side(height), generator)
            source = images[b, :, y1:y1 + h, x1:x1 + w]
            if source.shape[-2:] != (h, w):  # a fallback square over the border: pad as PIL's crop does (black)
                source = F.pad(source, (0, w - source.shape[-1], 0, h - source.shape[-2]))
            patch, _ = distort(source, generator)
            patch, inside = rotate(patch, _uniform(generator, -90.0, 90.0))
            bottom, right = min(y2 + h, height), min(x2 + w, width)
            inside = inside[:bottom - y2, :right - x2]
            region = out[b, :, y2:bottom, x2:right]
            out[b, :, y2:bottom, x2:right] = torch.where(inside, patch[:, :bottom - y2, :right - x2], region)
            masks[b, 0, y2:bottom, x2:right] = inside.float()
        return out.to(device), masks.to(device)
