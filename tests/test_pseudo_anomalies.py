"""Pseudo-anomaly generators (PatchGuard §5.1, Table 6): exact masks, ranges, anchors, determinism."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustad.methods.patchguard.hard_transforms import HARD_TRANSFORMS, apply_hard_transforms
from robustad.methods.patchguard.nsa import poisson_blend
from robustad.methods.patchguard.pseudo_anomalies import (
    GENERATORS,
    PSEUDO_ANOMALY_GENERATORS,
    ForegroundAwareGenerator,
    create_pseudo_anomaly_generator,
    rotated_rectangle_masks,
)

SIZE = 64


def textured_images(count: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Smooth colour blobs plus fine grain: every region has structure for a transform to change."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(count, 3, 6, 6, generator=g), size=(size, size), mode="bicubic", align_corners=False)
    return (0.15 + 0.7 * coarse.clamp(0, 1) + 0.15 * torch.rand(count, 3, size, size, generator=g)).clamp(0, 1)


def make_generator(name: str, images: torch.Tensor):
    textures = {"texture_source": "procedural"} if name == "glass" else {}  # GLASS's DTD is not here
    generator = create_pseudo_anomaly_generator(name, foreground="full", **textures)
    generator.prepare(images)
    return generator


def test_registry_holds_exactly_the_table6_generators_and_the_official_one():
    assert set(PSEUDO_ANOMALY_GENERATORS.names()) == set(GENERATORS) == {"ours", "cutpaste", "fpi", "nsa", "glass",
                                                                                "official"}
    with pytest.raises(KeyError, match="cutpaste"):
        create_pseudo_anomaly_generator("draem")


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_contract(name):
    train = textured_images(6)
    generator = make_generator(name, train)
    indices = torch.tensor([0, 2, 3, 5])
    batch = train[indices]
    out, masks = generator(batch, indices, torch.Generator().manual_seed(1))
    assert out.shape == batch.shape and masks.shape == (4, 1, SIZE, SIZE)
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks.flatten(1).sum(1) > 0).all(), "every pseudo anomaly has a non-empty mask"
    changed = (out - batch).abs().amax(1, keepdim=True) > 0
    assert not (changed & (masks == 0)).any(), "a pixel outside the mask changed"
    assert changed.flatten(1).any(1).all(), "every image changed somewhere"
    again = generator(batch, indices, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], out) and torch.equal(again[1], masks)
    other = generator(batch, indices, torch.Generator().manual_seed(2))
    assert not torch.equal(other[1], masks)


def test_ours_changes_most_pixels_inside_the_mask():
    train = textured_images(8, seed=3)
    generator = make_generator("ours", train)
    out, masks = generator(train, torch.arange(8), torch.Generator().manual_seed(0))
    inside = masks[:, 0].bool()
    changed = (out - train).abs().amax(1) > 2 / 255
    for b in range(8):
        assert changed[b][inside[b]].float().mean() > 0.5


def test_ours_rectangles_follow_the_paper():
    generator = ForegroundAwareGenerator(foreground="full")
    generator.prepare(textured_images(2))
    rect = generator.sample_rectangles(torch.zeros(500, dtype=torch.long), torch.Generator().manual_seed(0))
    assert (rect.sizes >= 0.05 * SIZE).all() and (rect.sizes <= 0.3 * SIZE).all()
    assert (rect.angles.abs() <= 45).all()
    assert rect.angles.min() < -35 and rect.angles.max() > 35  # spans the range
    assert rect.sizes.min() < 0.07 * SIZE and rect.sizes.max() > 0.28 * SIZE
    # the mask is the rotated rectangle: its area where it is not clipped by the border
    masks = rect.masks(SIZE, SIZE)
    half_diagonal = rect.sizes.norm(dim=1) / 2
    unclipped = ((rect.centres - half_diagonal[:, None] > 0) & (rect.centres + half_diagonal[:, None] < SIZE - 1)).all(1)
    areas = masks.flatten(1).sum(1)
    expected = rect.sizes.prod(1)
    assert ((areas - expected).abs()[unclipped] <= rect.sizes.sum(1)[unclipped] + 2).all()


def test_rectangle_mask_is_rotated_counter_clockwise_on_screen():
    mask = rotated_rectangle_masks(torch.tensor([[50.0, 50.0]]), torch.tensor([[60.0, 6.0]]),
                                   torch.tensor([math.radians(30)]), 101, 101)[0, 0]
    ys, xs = torch.nonzero(mask, as_tuple=True)
    x, y = xs.float() - 50, 50 - ys.float()  # y up, as on screen
    covariance = torch.stack([torch.stack([(x * x).mean(), (x * y).mean()]), torch.stack([(x * y).mean(), (y * y).mean()])])
    major = torch.linalg.eigh(covariance).eigenvectors[:, -1]
    angle = math.degrees(math.atan2(float(major[1]), float(major[0]))) % 180
    assert abs(angle - 30) < 2
    assert abs(float(mask.sum()) - 360) < 30


def test_anchor_falls_inside_the_foreground():
    generator = ForegroundAwareGenerator(foreground="full")
    foreground = torch.zeros(2, SIZE, SIZE)
    foreground[0, 40:56, 8:24] = 1.0
    foreground[1, 4:10, 50:60] = 0.2  # a weak map: the threshold is relative to its maximum
    foreground[1, 30, 30] = 0.04
    generator.set_foreground_maps(foreground)
    indices = torch.tensor([0, 1] * 100)
    centres = generator.sample_rectangles(indices, torch.Generator().manual_seed(0)).centres.long()
    xs, ys = centres[:, 0], centres[:, 1]
    assert ((ys[0::2] >= 40) & (ys[0::2] < 56) & (xs[0::2] >= 8) & (xs[0::2] < 24)).all()
    assert ((ys[1::2] >= 4) & (ys[1::2] < 10) & (xs[1::2] >= 50) & (xs[1::2] < 60)).all()
    # and the generated mask contains its anchor
    images = textured_images(2)
    out, masks = generator(images, torch.tensor([0, 0]), torch.Generator().manual_seed(4))
    assert masks[:, 0, 40:56, 8:24].flatten(1).sum(1).gt(0).all()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="k_hard"):
        create_pseudo_anomaly_generator("ours", foreground="full", k_hard=0)
    with pytest.raises(ValueError, match="foreground='grabcut'"):
        create_pseudo_anomaly_generator("ours", foreground="grabcut")
    generator = create_pseudo_anomaly_generator("ours", foreground="full")
    images = textured_images(2)
    with pytest.raises(RuntimeError, match="prepare"):
        generator(images, torch.tensor([0, 1]), torch.Generator())
    generator.prepare(images)
    with pytest.raises(IndexError, match=r"\[0, 2\)"):
        generator(images, torch.tensor([0, 2]), torch.Generator())
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        generator.prepare(images[:, :1])
    with pytest.raises(ValueError, match="prepared ones"):
        generator(textured_images(2, size=32), torch.tensor([0, 1]), torch.Generator())


@pytest.mark.parametrize("name", sorted(HARD_TRANSFORMS))
def test_each_hard_transform_changes_the_region_and_stays_in_range(name):
    crop = textured_images(1, size=20)[0]
    out = HARD_TRANSFORMS[name](crop, torch.Generator().manual_seed(0))
    again = HARD_TRANSFORMS[name](crop, torch.Generator().manual_seed(0))
    assert out.shape == crop.shape and torch.equal(out, again)
    assert out.min() >= 0 and out.max() <= 1
    assert (out - crop).abs().mean() > 0.01


def test_hard_transforms_fall_back_when_nothing_visible_changed():
    flat = torch.full((3, 12, 12), 0.4)  # geometric transforms and blur leave a flat patch as it is
    region = torch.ones(12, 12, dtype=torch.bool)
    for seed in range(10):
        out, names = apply_hard_transforms(flat, region, 2, torch.Generator().manual_seed(seed))
        assert ((out - flat).abs().amax(0) > 4 / 255).float().mean() >= 0.5, names


def test_min_change_makes_half_the_region_move_by_more_than_it():
    ramp = torch.linspace(0.3, 0.6, 16)  # a smooth shading: warps, blur and JPEG barely change it
    textured = torch.stack([ramp.view(1, 16).expand(16, 16), ramp.view(16, 1).expand(16, 16), torch.full((16, 16), 0.5)])
    region = torch.ones(16, 16, dtype=torch.bool)
    weak = 0
    for seed in range(20):
        out, _ = apply_hard_transforms(textured, region, 2, torch.Generator().manual_seed(seed))
        weak += ((out - textured).abs().amax(0) > 16 / 255).float().mean() < 0.5
        out, names = apply_hard_transforms(textured, region, 2, torch.Generator().manual_seed(seed), min_change=16 / 255)
        assert ((out - textured).abs().amax(0) > 16 / 255).float().mean() >= 0.5, names
    assert weak > 0  # without it some drawn pairs (blur, elastic, JPEG) leave most pixels within 16/255


def test_anomaly_min_change_reaches_the_generator_and_is_checked():
    from robustad.methods import create_method
    from robustad.methods.patchguard.detector import build_pseudo_anomaly_generator

    detector = create_method("patchguard", profile="quick", anomaly_min_change="16/255")
    assert build_pseudo_anomaly_generator(detector.config).min_change == pytest.approx(16 / 255)
    with pytest.raises(ValueError, match="anomaly_min_change=1.5"):
        create_method("patchguard", profile="quick", anomaly_min_change=1.5)


def test_poisson_blend_solves_the_poisson_equation():
    rng = np.random.default_rng(0)
    destination = 0.5 + 0.05 * rng.random((3, 12, 15))
    source = 0.4 + 0.05 * rng.random((3, 12, 15))
    blended = poisson_blend(destination, source)

    def laplacian(a):
        return a[:, :-2, 1:-1] + a[:, 2:, 1:-1] + a[:, 1:-1, :-2] + a[:, 1:-1, 2:] - 4 * a[:, 1:-1, 1:-1]

    np.testing.assert_allclose(laplacian(blended), laplacian(source), atol=1e-9)
    border = np.ones((12, 15), dtype=bool)
    border[1:-1, 1:-1] = False
    np.testing.assert_array_equal(blended[:, border], destination[:, border])


def test_cutpaste_normal_pastes_a_jittered_rectangle_of_the_paper_size():
    from robustad.methods.patchguard.cutpaste import CutPasteGenerator

    generator = CutPasteGenerator(variant="normal")
    images = textured_images(16)
    out, masks = generator(images, torch.arange(16), torch.Generator().manual_seed(0))
    for mask in masks[:, 0]:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert int(mask.sum()) == int(box), "an axis-aligned rectangle"
        ratio = float(mask.sum()) / SIZE**2
        assert 0.015 <= ratio <= 0.16
        aspect = float(xs.max() - xs.min() + 1) / float(ys.max() - ys.min() + 1)
        assert 0.25 <= aspect <= 4.0


def test_fpi_interpolates_with_one_foreign_fraction_per_image():
    train = textured_images(5)
    generator = make_generator("fpi", train)
    out, masks = generator(train, torch.arange(5), torch.Generator().manual_seed(0))
    for b in range(5):
        inside = masks[b, 0].bool()
        ys, xs = torch.nonzero(inside, as_tuple=True)
        assert int(inside.sum()) == int((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))  # a square patch
        assert ys.max() - ys.min() == xs.max() - xs.min() or ys.min() == 0 or xs.min() == 0 \
            or ys.max() == SIZE - 1 or xs.max() == SIZE - 1
        fractions = [((out[b][:, inside] - train[b][:, inside]) / (train[j][:, inside] - train[b][:, inside]))
                     for j in range(5) if j != b]
        matches = [f for f in fractions if float(f.std()) < 1e-3]
        assert len(matches) == 1, "one foreign image, one interpolation factor"
        assert 0.05 <= float(matches[0].mean()) <= 0.95


def test_ours_with_the_pretrained_foreground(tmp_path):
    """End to end with the offline CNN: prepare computes G(x) (N, H, W), anchors lie where G is high."""
    train = textured_images(2, size=48)
    generator = create_pseudo_anomaly_generator("ours", foreground="efficientnet_lite0", cache_dir=str(tmp_path),
                                                k_soft=1)
    generator.prepare(train)
    assert generator.foreground_maps.shape == (2, 48, 48)
    rect = generator.sample_rectangles(torch.tensor([0, 1] * 20), torch.Generator().manual_seed(0))
    anchors = rect.centres.long()
    values = generator.foreground_maps[torch.tensor([0, 1] * 20), anchors[:, 1], anchors[:, 0]]
    assert (values >= ForegroundAwareGenerator.FOREGROUND_THRESHOLD - 1e-6).all()
    out, masks = generator(train, torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    assert not (((out - train).abs().amax(1, keepdim=True) > 0) & (masks == 0)).any()
