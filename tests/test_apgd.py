"""APGD's step-size schedule and best-point bookkeeping; AutoAttack and Square built on it."""
import pytest
import torch

from robustad.attacks import AttackObjective, FlipLoss, Norm, check_inside, create_attack
from robustad.attacks.apgd import Evaluation, apgd_ascent, apgd_start, checkpoint_lengths
from robustad.attacks.square import bump, two_bump_pattern, window_fraction


def concave_bowl(centre):
    """f(x) = −‖x − c‖²: its maximum c needs a shrinking step to be reached by sign/normalized steps."""

    def evaluate(x):
        value = -((x - centre) ** 2).flatten(1).sum(1)
        return Evaluation(-2 * (x - centre), value, value)

    return evaluate


def test_checkpoints_follow_the_paper():
    assert checkpoint_lengths(100) == (22, 3, 6)
    assert checkpoint_lengths(1000) == (220, 30, 60)
    assert checkpoint_lengths(5) == (1, 1, 1)


@pytest.mark.parametrize("norm,eps", [(Norm.LINF, 0.2), (Norm.L2, 1.0)])
def test_step_size_halving_reaches_an_interior_maximum(norm, eps):
    clean = torch.full((2, 1, 4, 4), 0.5)
    centre = clean + torch.linspace(-0.5, 0.5, 16).view(1, 1, 4, 4) * eps / 4
    start = apgd_start(clean, norm, eps, torch.Generator().manual_seed(0))
    initial = concave_bowl(centre)(start).track
    run = apgd_ascent(concave_bowl(centre), clean, start, norm, eps, steps=100)
    check_inside(run.best_adv, clean, norm, eps)
    # A fixed step of 2ε would keep oscillating at distance ~ε; halving brings it far closer.
    assert (run.best_adv - centre).abs().max() < 0.02 * eps
    assert (run.best_rank > initial).all()
    assert run.track_history.shape == (101, 2)


def test_best_point_is_ranked_by_rank_not_by_track():
    clean = torch.full((1, 1, 2, 2), 0.5)
    centre = clean + 0.05

    def evaluate(x):  # climbs the bowl, but ranks points by their distance to the clean image
        value = -((x - centre) ** 2).flatten(1).sum(1)
        return Evaluation(-2 * (x - centre), value, -(x - clean).abs().flatten(1).sum(1))

    run = apgd_ascent(evaluate, clean, clean.clone(), Norm.LINF, 0.1, steps=20)
    assert torch.equal(run.best_adv, clean)  # the start has the best rank
    assert (run.best_track_adv - centre).abs().max() < 0.02


def test_apgd_restarts_never_lower_the_loss(trained_tiny):
    detector, images, masks, labels = trained_tiny
    objective = AttackObjective.build(detector, images, masks, labels)
    losses = []
    for restarts in (1, 2):
        adv = create_attack("apgd", eps=8 / 255, steps=5, restarts=restarts)(detector, images, masks, labels)
        with torch.no_grad():
            losses.append(objective.loss(adv, FlipLoss.MARGIN))
    assert (losses[1] >= losses[0] - 1e-6).all()


def test_apgd_options_and_defaults():
    attack = create_attack("apgd")
    assert attack.threat.steps == 100 and attack.loss == FlipLoss.MARGIN  # APGD-CE lives on inside AutoAttack
    assert create_attack("apgd-1000", loss="ce").threat.steps == 1000
    with pytest.raises(ValueError, match="rho"):
        create_attack("apgd", rho=1.5)
    with pytest.raises(ValueError, match="loss"):
        create_attack("apgd", loss="dlr")


def test_autoattack_is_the_worst_case_of_its_members(trained_tiny):
    detector, images, masks, labels = trained_tiny
    attack = create_attack("autoattack", eps=8 / 255, steps=3, square_queries=10)
    assert [name for name, _ in attack.members] == ["apgd-ce", "pgd-margin", "apgd-margin", "square"]
    adv = attack(detector, images, masks, labels)
    objective = AttackObjective.build(detector, images, masks, labels)
    with torch.no_grad():
        combined = objective.loss(adv, FlipLoss.MARGIN)
        for name, member in attack.members:
            alone = member(detector, images, masks, labels)
            assert (combined >= objective.loss(alone, FlipLoss.MARGIN) - 1e-6).all(), name
    without_square = create_attack("autoattack", norm="l2", eps=0.5, square_queries=0)
    assert [name for name, _ in without_square.members] == ["apgd-ce", "pgd-margin", "apgd-margin"]
    assert len(without_square.describe()["members"]) == 3


def test_square_l2_patterns():
    pattern = two_bump_pattern(7)
    assert pattern.shape == (7, 7)
    assert pattern.norm() == pytest.approx(1.0)
    assert (pattern[:3] > 0).all() and (pattern[3:] < 0).all()  # + bump on 3 rows, − bump on 4
    column = bump(5, 5)[:, 2]
    assert column.argmax() == 2 and column[0] < column[1] < column[2]


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_square_never_below_clean(trained_tiny, norm, eps):
    detector, images, masks, labels = trained_tiny
    attack = create_attack("square", norm=norm, eps=eps, steps=40)
    adv = attack(detector, images, masks, labels)
    check_inside(adv, images, attack.threat.norm, eps)
    objective = AttackObjective.build(detector, images, masks, labels)
    with torch.no_grad():
        gain = objective.loss(adv) - objective.loss(images)
    assert (gain >= -1e-6).all() and (gain > 0).float().mean() > 0.5


def test_square_schedule():
    # AutoAttack's schedule (resc_schedule=False): halvings at queries 10, 50, 200, ... whatever the budget
    assert window_fraction(0.8, 0, 5000) == 0.8
    assert window_fraction(0.8, 20, 5000) == 0.4
    assert window_fraction(0.8, 60, 5000) == 0.2
    assert window_fraction(0.8, 4999, 5000) == pytest.approx(0.8 / 128)  # past 4000, not yet 6000
    # rescaled (the standalone reference's default): query q of N counts as q·10,000/N
    assert window_fraction(0.8, 20, 5000, rescale=True) == 0.4  # query 40 of 10,000
    assert window_fraction(0.8, 26, 5000, rescale=True) == 0.2  # query 52 of 10,000: past 10 and 50
    assert window_fraction(0.8, 9999, 10000, rescale=True) == pytest.approx(0.8 / 512)
    assert create_attack("square").rescale_schedule is False
    assert create_attack("square", rescale_schedule=True).describe()["rescale_schedule"] is True
    with pytest.raises(ValueError, match="p_init"):
        create_attack("square", p_init=0.0)
