"""Per-unit segmentation losses (two-class reading [0, m]), SegPGD and SEA."""
import math

import pytest
import torch
import torch.nn.functional as F

from robustad.attacks import AttackObjective, FlipLoss, Norm, check_inside, create_attack
from robustad.attacks.sea import radius_schedule
from robustad.attacks.segpgd import segpgd_weight
from robustad.attacks.unit_losses import (
    balance_weights,
    balanced_cross_entropy,
    correct_units,
    jensen_shannon,
    masked_cross_entropy,
    segpgd_cross_entropy,
    unit_cross_entropy,
    unit_loss,
)


@pytest.fixture
def units():
    gen = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(3, 20, generator=gen)
    targets = (torch.rand(3, 20, generator=gen) < 0.3).float()
    targets[2] = 0.0  # a normal image: one class only
    return logits, targets


def two_class(logits):
    return torch.stack([torch.zeros_like(logits), logits], dim=1)  # (B, 2, U)


def test_cross_entropy_and_js_equal_their_two_class_softmax_forms(units):
    logits, targets = units
    softmax_ce = F.cross_entropy(two_class(logits), targets.long(), reduction="none")
    torch.testing.assert_close(unit_cross_entropy(logits, targets), softmax_ce)
    p = F.softmax(two_class(logits), dim=1)
    q = F.one_hot(targets.long(), 2).permute(0, 2, 1).float()
    m = (p + q) / 2
    reference_js = 0.5 * (F.kl_div(m.log(), p, reduction="none") + F.kl_div(m.log(), q, reduction="none")).sum(1)
    torch.testing.assert_close(jensen_shannon(logits, targets), reference_js.mean(1), atol=1e-6, rtol=1e-5)
    assert (jensen_shannon(logits, targets) <= math.log(2) + 1e-6).all()


def test_masked_and_balanced_losses_count_only_correct_units(units):
    logits, targets = units
    correct = correct_units(logits, targets)
    assert torch.equal(correct, ((logits > 0).float() == targets).float())
    ce = unit_cross_entropy(logits, targets)
    torch.testing.assert_close(masked_cross_entropy(logits, targets), (ce * correct).mean(1))
    weights = balance_weights(targets)
    torch.testing.assert_close(weights.mean(1), torch.ones(3))
    for image in range(2):  # both classes present: each class gets half the total weight
        anomalous = targets[image] > 0.5
        assert weights[image][anomalous].sum() == pytest.approx(10.0)
        assert weights[image][~anomalous].sum() == pytest.approx(10.0)
    torch.testing.assert_close(balanced_cross_entropy(logits, targets), (ce * correct * weights).mean(1))
    # The mask is not differentiated: wrong units get no gradient.
    x = logits.clone().requires_grad_(True)
    masked_cross_entropy(x, targets).sum().backward()
    assert (x.grad[correct == 0] == 0).all() and (x.grad[correct == 1] != 0).any()
    with pytest.raises(ValueError, match="unknown unit loss"):
        unit_loss("dlr", logits, targets)


def test_segpgd_weight_schedule_and_loss(units):
    steps = 10
    weights = [segpgd_weight(t, steps) for t in range(1, steps + 1)]
    assert weights[0] == 0.0 and weights[-1] == pytest.approx(0.45)
    assert all(a < b for a, b in zip(weights, weights[1:]))
    logits, targets = units
    correct = correct_units(logits, targets)
    x = logits.clone().requires_grad_(True)
    segpgd_cross_entropy(x, targets, 0.0).sum().backward()
    assert (x.grad[correct == 0] == 0).all()  # λ = 0: only the correct units count
    ce = unit_cross_entropy(logits, targets)
    expected = (0.7 * ce * correct + 0.3 * ce * (1 - correct)).mean(1)
    torch.testing.assert_close(segpgd_cross_entropy(logits, targets, 0.3), expected)


def test_sea_radius_schedule():
    eps = 8 / 255
    assert radius_schedule(eps, 300) == [(2 * eps, 90), (1.5 * eps, 90), (eps, 120)]
    assert radius_schedule(eps, 10) == [(2 * eps, 3), (1.5 * eps, 3), (eps, 4)]
    assert radius_schedule(eps, 2) == [(eps, 2)]


def test_sea_is_the_worst_case_over_its_losses(trained_tiny):
    detector, images, masks, labels = trained_tiny
    objective = AttackObjective.build(detector, images, masks, labels)
    full = create_attack("sea", eps=8 / 255, steps=6)
    assert full.losses == ("masked-ce", "balanced-ce", "js", "margin")
    # A single-loss SEA with the first member's loss runs exactly the full SEA's first member.
    first_only = create_attack("sea", eps=8 / 255, steps=6, losses="masked-ce")
    with torch.no_grad():
        combined = objective.loss(full(detector, images, masks, labels), FlipLoss.MARGIN)
        alone = objective.loss(first_only(detector, images, masks, labels), FlipLoss.MARGIN)
        clean = objective.loss(images, FlipLoss.MARGIN)
    assert (combined >= alone - 1e-6).all()
    assert (combined > clean).all()
    with pytest.raises(ValueError, match="unknown loss"):
        create_attack("sea", losses="masked-ce,dlr")


@pytest.mark.parametrize("name", ["segpgd", "sea"])
def test_segmentation_attacks_beat_clean_on_every_image_under_l2(trained_tiny, name):
    detector, images, masks, labels = trained_tiny
    attack = create_attack(name, norm="l2", eps=0.5, steps=6, objective="detection")
    adv = attack(detector, images, masks, labels)
    check_inside(adv, images, Norm.L2, 0.5)
    objective = AttackObjective.build(detector, images, masks, labels, "detection")
    with torch.no_grad():
        assert (objective.loss(adv) > objective.loss(images)).all()
