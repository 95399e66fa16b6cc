"""A³ (attacks/a3.py) and the flip success criterion (attacks/flip_success.py) on the tiny detector."""
import pytest
import torch

from robustad.attacks import AttackObjective, check_inside, create_attack
from robustad.attacks.a3 import A3, _State, cosine_step_size
from robustad.attacks.calibration import UnitCalibration
from robustad.attacks.flip_success import flipped_units, image_success, success_margin
from tests.auroc import pixel_auroc, image_auroc

STEPS = 12  # gradient evaluations per image: rounds 0 (8 steps) and part of round 1


def flip_loss(detector, images, masks, labels, objective, adv):
    with torch.no_grad():
        built = AttackObjective.build(detector, images, masks, labels, objective)
        return built.loss(adv)


@pytest.mark.parametrize("objective", ["localization", "detection"])
@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 1.5)])
def test_a3_inside_ball_and_moves_its_target(trained_tiny, norm, eps, objective):
    detector, images, masks, labels = trained_tiny
    attack = create_attack("a3", norm=norm, eps=eps, steps=STEPS, objective=objective)
    adv = attack(detector, images, masks, labels)
    check_inside(adv, images, attack.threat.norm, eps)
    before = flip_loss(detector, images, masks, labels, objective, images)
    after = flip_loss(detector, images, masks, labels, objective, adv)
    assert (after >= before - 1e-6).all()  # best-loss iterate: never worse than clean
    assert after.mean() > before.mean() + 0.1
    if objective == "localization":
        assert pixel_auroc(detector, adv, masks) < pixel_auroc(detector, images, masks) - 0.05
    else:
        assert image_auroc(detector, adv, labels) < image_auroc(detector, images, labels) - 0.3


def test_a3_collapses_undefended_detector(trained_tiny):
    detector, images, masks, labels = trained_tiny
    clean_pixel, clean_image = pixel_auroc(detector, images, masks), image_auroc(detector, images, labels)
    local = create_attack("a3", norm="l2", eps=1.5, steps=STEPS)(detector, images, masks, labels)
    assert pixel_auroc(detector, local, masks) < clean_pixel - 0.25
    detect = create_attack("a3", norm="l2", eps=1.5, steps=STEPS, objective="detection")(detector, images, masks, labels)
    assert image_auroc(detector, detect, labels) < min(0.3, clean_image - 0.5)


def test_a3_deterministic_under_seed(trained_tiny):
    detector, images, masks, labels = trained_tiny
    x, m = images[:6], masks[:6]
    first = create_attack("a3", eps=8 / 255, steps=4, seed=3)(detector, x, m)
    again = create_attack("a3", eps=8 / 255, steps=4, seed=3)(detector, x, m)
    other = create_attack("a3", eps=8 / 255, steps=4, seed=4)(detector, x, m)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a3_spends_its_budget_and_logs_rounds(trained_tiny):
    detector, images, masks, labels = trained_tiny
    attack = create_attack("a3", norm="l2", eps=1.5, steps=STEPS)
    attack(detector, images, masks, labels)
    rounds = attack.last_rounds
    assert rounds[0]["adi_steps"] == 0 and rounds[0]["steps"] == 8 and rounds[0]["attacked"] == len(images)
    assert sum(r["cost"] for r in rounds) <= STEPS * len(images)
    assert rounds[1]["adi_steps"] >= 1  # round 1 begins with ADI steps


def test_select_keeps_unsuccessful_images_closest_to_success():
    state = _State(best_loss=torch.zeros(5), best_adv=torch.zeros(5, 1),
                   best_margin=torch.tensor([-2.5, -0.5, -1.0, 1.0, -2.0]),
                   success=torch.tensor([False, False, False, True, False]))
    assert A3._select(state, 0.5).tolist() == [1, 2]  # 4 open images, top half by margin, successful one skipped
    assert A3._select(state, 0.01).tolist() == [1]  # at least one image
    state.success[:] = True
    assert A3._select(state, 1.0).numel() == 0


def test_cosine_step_size_decays_from_eps():
    assert cosine_step_size(1.0, 0, 8) == pytest.approx(1.0)
    assert cosine_step_size(1.0, 8, 8) < 0.15
    assert cosine_step_size(1.0, 20, 20) < 0.05  # longer runs decay further (to 0.001·ε)


def test_flip_success_criterion():
    targets = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    clean = torch.tensor([[-2.0, -1.0, 3.0], [-3.0, -2.0, -1.0]])
    calibration = UnitCalibration.from_units(clean, targets, "localization")
    up, down = calibration.above, calibration.below
    assert (up, down) == (3.0, -3.0)  # highest anomalous logit, lowest normal logit
    adv = torch.tensor([[4.0, 3.5, -4.0], [4.0, 2.0, 5.0]])
    assert flipped_units(adv, targets, (up, down)).tolist() == [[True, True, True], [True, False, True]]
    assert image_success(adv, targets, (up, down)).tolist() == [True, False]
    assert image_success(adv, targets, (up, down), fraction=0.6).tolist() == [True, True]
    assert image_success(adv, targets, 0.0).tolist() == [True, True]  # a fixed τ = 0 (sigmoid 0.5)
    # the success margin is positive exactly for the successful images
    assert (success_margin(adv, targets, (up, down)) > 0).tolist() == [True, False]
    assert (success_margin(adv, targets, (up, down), fraction=0.6) > 0).tolist() == [True, True]
    with pytest.raises(ValueError):
        image_success(adv, targets, 0.0, fraction=0.0)


def test_a3_rejects_bad_options():
    with pytest.raises(ValueError, match="success_fraction"):
        create_attack("a3", success_fraction=1.5)
    with pytest.raises(ValueError, match="valid"):
        create_attack("a3", restarts_per_round=2)
