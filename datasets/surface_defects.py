"""Synthetic surface defects for the built-in `textures` dataset, each with its exact pixel mask.

This is the *test-time* defect process of the offline dataset. It is deliberately unrelated to
any method's training-time pseudo-anomaly generator (PatchGuard's rotated rectangles with hard
transforms, paper §5.1; CutPaste; DRAEM's Perlin-noise patches): defects are thin lines, soft
ellipses and irregular blobs that change the surface's tone, colour or texture.

Five kinds (`DEFECT_KINDS`), each drawn at a random place in the crop:

- `scratch`: a thin curved line (1–2.5 px), 35–50% brighter or darker than the surface;
- `hole`: a dark ellipse (semi-axes 4–12 px) with a soft rim, 45–65% darker at its centre;
- `stain`: an irregular blotch (radius 10–26 px) moved 50–75% of the way toward the local colour
  shifted by 0.12–0.22 in [0, 1] units (plus a hue change of up to 0.08 per channel on colour
  images), so the texture stays visible;
- `foreign`: an irregular region (radius 10–24 px) filled with another texture, matched to the
  local mean and contrast so that only its structure differs;
- `crack`: a branching random-walk line (1–2 px, 35–80 px long, 1–3 branches), 40–55% darker.

Contrast is moderate on purpose: the project measured that gross defects (75% darkening) make an
attack unable to hide them, while realistic ones (~40%) do not. On a dark surface (mean below
0.3, e.g. the Hubble deep field) dark defects move toward white instead, so they stay visible.

`apply_defect(kind, image, rng, donor)` takes a uint8 image (H, W, C), C in {1, 3}, and returns
`(defective uint8 image, mask bool (H, W))` where the mask is exactly the set of pixels whose value
changed in at least one channel: each defect's support is cut at a coverage of 0.2, and a pixel
of the support whose change rounded to nothing is nudged by 2 grey levels.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage
from skimage import draw

DEFECT_KINDS = ("scratch", "hole", "stain", "foreign", "crack")
MIN_COVERAGE = 0.2  # a pixel belongs to a defect when the defect covers at least this fraction of it
MIN_AREA = 48  # pixels (0.3% of a 128 px crop); smaller draws (a line that left the crop) are redrawn
DARK_SURFACE = 0.3  # mean level below which "dark" defects are drawn bright instead
NUDGE = 2  # grey levels added to a support pixel whose change rounded to zero


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W) luminance of a float (H, W, C) image (Rec. 601 weights for C = 3)."""
    if image.shape[2] == 1:
        return image[..., 0]
    return image @ np.array([0.299, 0.587, 0.114])


def line_coverage(shape: tuple[int, int], points: np.ndarray, half_width: float) -> np.ndarray:
    """Anti-aliased coverage (H, W) in [0, 1] of a polyline `points` (N, 2) as (y, x), `half_width` px."""
    centre = np.zeros(shape, bool)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        rr, cc = draw.line(int(round(y0)), int(round(x0)), int(round(y1)), int(round(x1)))
        inside = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        centre[rr[inside], cc[inside]] = True
    if not centre.any():
        return np.zeros(shape)
    distance = ndimage.distance_transform_edt(~centre)
    return np.clip(half_width + 0.5 - distance, 0.0, 1.0)


def blob_coverage(rng: np.random.Generator, shape: tuple[int, int], centre, radius: float,
                  roughness: float, softness: float) -> np.ndarray:
    """Coverage (H, W) of an irregular blob: a rotated ellipse whose edge is bent by smooth noise.

    `roughness` scales the edge noise (0 gives a clean ellipse); `softness` is the width of the
    soft rim as a fraction of the radius.
    """
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.5, 1.0)
    dy, dx = yy - centre[0], xx - centre[1]
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / radius
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / (radius * aspect)
    field = 1.0 - np.sqrt(u**2 + v**2)
    if roughness > 0:
        noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma=max(radius / 3, 1.0))
        field = field + roughness * noise / (noise.std() + 1e-12)
    return np.clip(field / softness, 0.0, 1.0)


def blob_core(coverage: np.ndarray) -> np.ndarray:
    """The pixels a blob covers by more than half, or its most covered ones when the edge noise left none."""
    core = coverage > 0.5
    return core if core.any() else coverage >= coverage.max()


def shift_toward(image: np.ndarray, coverage: np.ndarray, target, strength: float) -> np.ndarray:
    """Moves each pixel a fraction `strength * coverage` of the way toward `target`."""
    return image + (strength * coverage)[..., None] * (np.asarray(target, dtype=float) - image)


def dark_target(image: np.ndarray) -> float:
    """0 (darken) on an ordinary surface, 1 (brighten) on a dark one, so that dark defects stay visible."""
    return 1.0 if luminance(image).mean() < DARK_SURFACE else 0.0


def random_centre(rng: np.random.Generator, shape: tuple[int, int], margin: int) -> tuple[float, float]:
    return rng.uniform(margin, shape[0] - margin), rng.uniform(margin, shape[1] - margin)


def scratch(rng, image, donor):
    """A thin quadratic Bézier curve, bright or dark."""
    shape = image.shape[:2]
    start = np.array(random_centre(rng, shape, 12))
    length = rng.uniform(35, 90)
    angle = rng.uniform(0, 2 * np.pi)
    end = start + length * np.array([np.sin(angle), np.cos(angle)])
    bend = (start + end) / 2 + rng.normal(0, length / 6, 2)
    t = np.linspace(0, 1, 48)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
    coverage = line_coverage(shape, points, rng.uniform(0.5, 1.25))
    bright = rng.random() < 0.5 or dark_target(image) == 1.0
    return shift_toward(image, coverage, 1.0 if bright else 0.0, rng.uniform(0.35, 0.5)), coverage


def hole(rng, image, donor):
    """A dark ellipse, deepest at its centre, with a soft rim."""
    shape = image.shape[:2]
    radius = rng.uniform(5, 12)
    coverage = blob_coverage(rng, shape, random_centre(rng, shape, 16), radius, 0.0, 1.0) ** 0.5
    return shift_toward(image, coverage, dark_target(image), rng.uniform(0.45, 0.65)), coverage


def stain(rng, image, donor):
    """A low-contrast irregular blotch tinted toward a nearby colour."""
    shape = image.shape[:2]
    coverage = blob_coverage(rng, shape, random_centre(rng, shape, 16), rng.uniform(10, 26), 0.35, 0.5)
    local = image[blob_core(coverage)].mean(axis=0)  # (C,) the surface colour under the stain
    lighter = luminance(local[None, None])[0, 0] < 0.5 and rng.random() < 0.7
    colour = local + rng.uniform(0.12, 0.22) * (1.0 if lighter else -1.0)
    if image.shape[2] == 3:  # a hue change on colour surfaces: tea, rust, ink
        colour = colour + rng.uniform(-0.08, 0.08, 3)
    return shift_toward(image, coverage, np.clip(colour, 0, 1), rng.uniform(0.5, 0.75)), coverage


def foreign(rng, image, donor):
    """An irregular region filled with another texture of the same mean and contrast."""
    if donor is None:
        raise ValueError("defect 'foreign' needs a donor texture image (H, W, C) uint8")
    shape = image.shape[:2]
    coverage = blob_coverage(rng, shape, random_centre(rng, shape, 16), rng.uniform(10, 24), 0.3, 0.12)
    donor = donor.astype(float) / 255.0
    if donor.shape[2] != image.shape[2]:
        donor = luminance(donor)[..., None] if image.shape[2] == 1 else np.repeat(donor, 3, axis=2)
    y = rng.integers(0, donor.shape[0] - shape[0] + 1)
    x = rng.integers(0, donor.shape[1] - shape[1] + 1)
    patch = donor[y : y + shape[0], x : x + shape[1]]
    region = blob_core(coverage)
    matched = (patch - patch[region].mean(0)) / (patch[region].std(0) + 1e-6)
    matched = matched * (image[region].std(0) + 0.02) + image[region].mean(0)
    return shift_toward(image, coverage, np.clip(matched, 0, 1), 1.0), coverage


def random_walk(rng, start, angle: float, length: float, step: float = 1.5, wiggle: float = 0.25) -> np.ndarray:
    """Points (N, 2) of a path that turns by N(0, wiggle) radians every `step` px."""
    turns = np.cumsum(rng.normal(0, wiggle, int(length / step)))
    angles = angle + turns
    moves = step * np.stack([np.sin(angles), np.cos(angles)], axis=1)
    return np.concatenate([np.asarray(start, float)[None], start + np.cumsum(moves, axis=0)])


def crack(rng, image, donor):
    """A dark branching line: a random walk with 1–3 thinner side branches."""
    shape = image.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    trunk = random_walk(rng, random_centre(rng, shape, 20), angle, rng.uniform(35, 80))
    coverage = line_coverage(shape, trunk, rng.uniform(0.5, 1.0))
    for _ in range(rng.integers(1, 4)):
        fork = trunk[rng.integers(len(trunk) // 4, len(trunk))]
        side = angle + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
        branch = random_walk(rng, fork, side, rng.uniform(10, 30))
        coverage = np.maximum(coverage, line_coverage(shape, branch, 0.5))
    return shift_toward(image, coverage, dark_target(image), rng.uniform(0.4, 0.55)), coverage


DEFECTS: dict[str, Callable] = {"scratch": scratch, "hole": hole, "stain": stain, "foreign": foreign, "crack": crack}


def apply_defect(kind: str, image: np.ndarray, rng: np.random.Generator,
                 donor: np.ndarray | None = None, max_tries: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Draws one defect of `kind` on `image` (H, W, C) uint8, C in {1, 3}.

    `donor` (H', W', C') uint8, at least as large as `image`, is the texture that `foreign`
    pastes in. Returns `(defective (H, W, C) uint8, mask (H, W) bool)`; the mask is exactly the
    set of pixels that differ from `image` in at least one channel and holds at least
    `MIN_AREA` pixels.
    """
    if kind not in DEFECTS:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {', '.join(DEFECT_KINDS)}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image must be uint8 (H, W, 1 or 3), got {image.dtype} {image.shape}")
    source = image.astype(float) / 255.0
    for _ in range(max_tries):
        changed, coverage = DEFECTS[kind](rng, source, donor)
        support = coverage >= MIN_COVERAGE
        if support.sum() >= MIN_AREA:
            break
    else:
        raise RuntimeError(f"defect {kind!r} found no place on a {image.shape} image in {max_tries} tries")
    out = np.where(support[..., None], np.round(np.clip(changed, 0, 1) * 255), image).astype(np.int16)
    unchanged = support & (out == image).all(axis=2)
    if unchanged.any():  # the change rounded away (e.g. darkening a black pixel): nudge it
        direction = np.sign((changed - source).sum(axis=2))
        direction[direction == 0] = 1
        nudged = image.astype(np.int16) + NUDGE * direction[..., None].astype(np.int16)
        clipped = ((nudged < 0) | (nudged > 255)).any(axis=2)
        nudged[clipped] = image.astype(np.int16)[clipped] - NUDGE * direction[clipped][..., None].astype(np.int16)
        out[unchanged] = nudged[unchanged]
    out = out.clip(0, 255).astype(np.uint8)
    return out, support
