"""`pseudo_anomaly=official`: the official code's cut-paste generator, with exact masks on small inputs."""
import pytest
import torch

from robustad.methods.patchguard import official_cutpaste as oc
from robustad.methods.patchguard.pseudo_anomalies import create_pseudo_anomaly_generator


def test_dilation_is_a_square_of_ten_pixels():
    mask = torch.zeros(31, 31, dtype=torch.bool)
    mask[15, 15] = True
    grown = oc.dilate(mask)
    expected = torch.zeros(31, 31, dtype=torch.bool)
    expected[5:26, 5:26] = True
    assert torch.equal(grown, expected)


def test_runs_count_consecutive_foreground_rightwards_and_downwards():
    mask = torch.tensor([[1, 1, 0, 1],
                         [1, 0, 1, 1],
                         [1, 1, 1, 1]], dtype=torch.bool)
    right, down = oc.runs(mask)
    assert right.tolist() == [[2, 1, 0, 1], [1, 0, 2, 1], [4, 3, 2, 1]]
    assert down.tolist() == [[3, 1, 0, 3], [2, 0, 2, 2], [1, 1, 1, 1]]


def test_covers_clips_at_the_border_like_a_slice():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:6, 2:8] = True
    fg = oc.Foreground(mask)
    assert fg.covers(2, 2, 4, 4) and not fg.covers(1, 2, 4, 4)
    assert fg.covers(5, 3, 10, 2)  # mask[3:5, 5:15] is mask[3:5, 5:8]


def test_placements_lie_on_the_foreground_and_respect_the_lower_bound():
    mask = torch.zeros(40, 40, dtype=torch.bool)
    mask[5:35, 10:30] = True
    fg = oc.Foreground(mask)
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        x1, y1, x2, y2, w, h = oc.sample_placement(fg, 6, generator)
        assert w >= 6 and h >= 6
        assert mask[y1:y1 + h, x1:x1 + w].all() and mask[y2:y2 + h, x2:x2 + w].all()
        assert x2 + w <= 40 and y2 + h <= 40


def test_a_foreground_too_small_falls_back_to_a_lower_bound_square():
    mask = torch.zeros(20, 20, dtype=torch.bool)
    mask[3:6, 3:6] = True
    x1, y1, x2, y2, w, h = oc.sample_placement(oc.Foreground(mask), 8, torch.Generator().manual_seed(1))
    assert (w, h) == (8, 8) and mask[y1, x1] and mask[y2, x2]


@pytest.mark.parametrize("angle", [0.0, 90.0, -90.0])
def test_rotation_by_0_or_90_degrees_keeps_the_whole_rectangle(angle):
    patch = torch.rand(3, 6, 9)
    rotated, mask = oc.rotate(patch, angle)
    assert rotated.shape == (3, 6, 9) and mask.shape == (6, 9) and bool(mask.all())


def test_rotation_by_45_degrees_cuts_the_corners():
    _, mask = oc.rotate(torch.rand(3, 21, 21), 45.0)
    assert not mask[0, 0] and not mask[0, -1] and not mask[-1, 0] and not mask[-1, -1]
    assert mask[10, :].all() and mask[:, 10].all()


def test_unrotated_paste_gives_exactly_the_destination_rectangle(monkeypatch):
    placements = []
    sample = oc.sample_placement

    def recording(*args):
        placements.append(sample(*args))
        return placements[-1]

    monkeypatch.setattr(oc, "sample_placement", recording)
    monkeypatch.setattr(oc, "rotate", lambda patch, angle, original=oc.rotate: original(patch, 0.0))
    images = torch.rand(3, 3, 32, 32)
    generator = create_pseudo_anomaly_generator("official", foreground="full", official_min_side=28)
    generator.prepare(images)
    anomalous, masks = generator(images, torch.arange(3), torch.Generator().manual_seed(0))
    for b, (x1, y1, x2, y2, w, h) in enumerate(placements):
        expected = torch.zeros(32, 32)
        expected[y2:y2 + h, x2:x2 + w] = 1
        assert torch.equal(masks[b, 0], expected)
        assert w >= round(28 * 32 / 224)
    assert torch.equal(anomalous * (1 - masks), images * (1 - masks))


def test_masks_lie_in_the_dilated_foreground_and_only_they_change():
    images = torch.rand(4, 3, 48, 48)
    maps = torch.zeros(4, 48, 48)
    maps[:, 20:28, 16:32] = 1.0
    generator = create_pseudo_anomaly_generator("official", official_min_side=20)
    generator.set_foreground_maps(maps)
    anomalous, masks = generator(images, torch.arange(4), torch.Generator().manual_seed(3))
    allowed = oc.dilate(maps[0] > 0)
    assert masks.sum() > 0 and bool(masks[:, 0][:, ~allowed].eq(0).all())
    assert torch.equal(anomalous * (1 - masks), images * (1 - masks))
    changed = (anomalous - images).abs().amax(1) > 1 / 255
    assert changed[masks[:, 0] > 0].float().mean() > 0.5
    assert set(masks.unique().tolist()) <= {0.0, 1.0}


def test_the_same_seed_gives_the_same_anomalies():
    images = torch.rand(2, 3, 32, 32)
    generator = create_pseudo_anomaly_generator("official", foreground="full")
    generator.prepare(images)
    a = generator(images, torch.arange(2), torch.Generator().manual_seed(5))
    b = generator(images, torch.arange(2), torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("level", oc.LEVELS)
def test_every_distortion_keeps_shape_and_range(level):
    generator = torch.Generator().manual_seed(0)
    patch = torch.rand(3, 12, 17)
    for name, transform in oc.DISTORTIONS.items():
        out = transform(patch, level, generator)
        assert out.shape == patch.shape and 0 <= float(out.min()) and float(out.max()) <= 1, name
    assert oc.colour_jitter(patch, level, generator).shape == patch.shape
