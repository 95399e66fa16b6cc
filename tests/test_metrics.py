"""Metrics: known answers, degenerate inputs, and AUPRO against a slow per-threshold reference."""
import math

import numpy as np
import pytest
import torch
from skimage.measure import label as label_regions

from robustad.bench.evaluation.metrics import image_auroc, pixel_aupro, pixel_auroc, pro_curve


def slow_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """One threshold at a time, regions from skimage, area clipped segment by segment."""
    regions = [label_regions(m, connectivity=2) for m in masks]
    region_masks = [(r == k) for r in regions for k in range(1, r.max() + 1)]
    region_maps = [maps[i] for i, r in enumerate(regions) for _ in range(r.max())]
    normal = masks == 0
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        fpr = float(np.mean(maps[normal] >= t))
        pro = float(np.mean([np.mean(m[r] >= t) for m, r in zip(region_maps, region_masks)]))
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (fpr_limit - x0) / (x1 - x0) * (y1 - y0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return 100 * area / fpr_limit


def random_case(rng, n=6, size=20, ties=False):
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n // 2, n):  # half the images anomalous, with one to three blobs
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 4, size=2)
            h, w = rng.integers(1, 5, size=2)
            masks[i, y:y + h, x:x + w] = 1
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    if ties:
        maps = np.round(maps, 1)
    return masks, maps


def test_perfect_and_inverted_scores():
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.7, 0.8, 0.9])
    assert image_auroc(labels, scores) == 100.0
    assert image_auroc(labels, -scores) == 0.0
    masks, _ = random_case(np.random.default_rng(0))
    perfect = masks + 0.01 * np.random.default_rng(1).random(masks.shape)
    assert pixel_auroc(masks, perfect) == pytest.approx(100.0)
    assert pixel_aupro(masks, perfect) == pytest.approx(100.0)
    assert pixel_auroc(masks, 1 - perfect) == pytest.approx(0.0)
    assert pixel_aupro(masks, 1 - perfect) == pytest.approx(0.0)


def test_aupro_hand_computed_single_region():
    # Region pixels score 0.9 and 0.4; the four normal pixels 0.8, 0.3, 0.2, 0.1. The curve is
    # (0,0) (0,.5) (.25,.5) (.25,1) ...: area to 0.3 = .25·.5 + .05·1 = .175, over .3 = 58.33%.
    masks = np.array([[[1, 1, 0], [0, 0, 0]]])
    maps = np.array([[[0.9, 0.4, 0.8], [0.3, 0.2, 0.1]]])
    assert pixel_aupro(masks, maps) == pytest.approx(100 * 0.175 / 0.3)


def test_aupro_averages_over_regions_not_pixels():
    # A 1-pixel region scored low and a 3-pixel region scored high: PRO .5 (pixel TPR would be .75).
    masks = np.array([[[1, 0, 1, 1, 1, 0]]])
    maps = np.array([[[0.2, 0.5, 0.9, 0.9, 0.9, 0.1]]])
    assert pixel_aupro(masks, maps) == pytest.approx(50.0)


def test_aupro_regions_are_8_connected():
    # (0,0) touches (1,1) only diagonally: one 3-pixel region, of which one pixel is found first.
    masks = np.zeros((1, 3, 3))
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = 1
    maps = np.where(masks > 0, 0.1, 0.5)
    maps[0, 0, 0] = 0.9
    assert pixel_aupro(masks, maps) == pytest.approx(100 / 3)


def test_regions_of_different_images_stay_apart():
    # The same blob in two images is two regions: one found, one missed, PRO 0.5 before any FP.
    masks = np.zeros((2, 4, 4))
    masks[:, 0, 0] = 1
    maps = np.full((2, 4, 4), 0.5)
    maps[0, 0, 0], maps[1, 0, 0] = 0.9, 0.1
    assert pixel_aupro(masks, maps) == pytest.approx(50.0)


@pytest.mark.parametrize("seed,ties,limit", [(0, False, 0.3), (1, True, 0.3), (2, False, 0.05), (3, True, 1.0)])
def test_aupro_matches_slow_reference(seed, ties, limit):
    masks, maps = random_case(np.random.default_rng(seed), ties=ties)
    assert pixel_aupro(masks, maps, fpr_limit=limit) == pytest.approx(slow_aupro(masks, maps, limit), abs=1e-9)


def test_pro_curve_is_monotone_and_ends_at_one():
    masks, maps = random_case(np.random.default_rng(4), ties=True)
    fpr, pro = pro_curve(masks, maps)
    assert fpr[0] == pro[0] == 0.0
    assert fpr[-1] == pytest.approx(1.0) and pro[-1] == 1.0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12)


def test_pixel_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(5)
    masks, maps = random_case(rng, n=2, size=6, ties=True)
    pos, neg = maps[masks == 1], maps[masks == 0]
    pairwise = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
    assert pixel_auroc(masks, maps) == pytest.approx(100 * pairwise)


def test_torch_inputs_and_channel_dimension():
    masks, maps = random_case(np.random.default_rng(6))
    expected_auroc, expected_aupro = pixel_auroc(masks, maps), pixel_aupro(masks, maps)
    masks_t = torch.from_numpy(masks).float().unsqueeze(1)  # (N, 1, H, W), as the runner holds them
    maps_t = torch.from_numpy(maps).float().requires_grad_()
    assert pixel_auroc(masks_t, maps_t) == pytest.approx(expected_auroc, abs=1e-4)
    assert pixel_aupro(masks_t, maps_t) == pytest.approx(expected_aupro, abs=1e-4)
    assert isinstance(image_auroc(torch.tensor([0, 1]), torch.tensor([0.2, 0.1])), float)


def test_single_class_gives_nan_without_error():
    masks = np.zeros((3, 5, 5))
    maps = np.random.default_rng(7).random((3, 5, 5))
    assert math.isnan(image_auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(pixel_auroc(masks, maps))
    assert math.isnan(pixel_aupro(masks, maps))
    assert math.isnan(pixel_aupro(np.ones((3, 5, 5)), maps))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="same shape"):
        pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="masks"):
        pixel_aupro(np.full((1, 2, 2), 2.0), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="maps"):
        pixel_auroc(np.eye(2)[None], np.full((1, 2, 2), np.nan))
    with pytest.raises(ValueError, match="same length"):
        image_auroc([0, 1], [0.5])
    with pytest.raises(ValueError, match="fpr_limit"):
        pixel_aupro(np.eye(2)[None], np.eye(2)[None], fpr_limit=0)
