"""CAA (attacks/caa.py): published policies as data, composition inside the ε-ball, tiny detector."""
import pytest
import torch

from robustad.attacks import AttackObjective, check_inside, create_attack
from robustad.attacks.caa import L2_POLICY, LINF_POLICY, PolicyStep, cw_flip_loss
from tests.auroc import pixel_auroc, image_auroc

STEPS = 10


def test_published_policies_are_data():
    assert [(p.attack, p.steps) for p in LINF_POLICY] == [("multi_targeted", 50), ("multi_targeted", 25), ("cw_linf", 125)]
    assert [(p.attack, p.steps) for p in L2_POLICY] == [("multi_targeted", 100), ("pgd_adaptive", 25), ("ddn", 1000)]
    assert L2_POLICY[1].magnitude == pytest.approx(0.4375) and L2_POLICY[2].magnitude is None


def test_policy_scales_with_eps_and_steps():
    linf = create_attack("caa", norm="linf", eps=4 / 255)
    assert linf.threat.steps == 200  # the published L∞ total
    assert linf.scaled_policy() == [("multi_targeted", pytest.approx(4 / 255), 50),
                                    ("multi_targeted", pytest.approx(4 / 255), 25), ("cw_linf", pytest.approx(4 / 255), 125)]
    l2 = create_attack("caa-37", norm="l2", eps=1.0).scaled_policy()
    assert sum(s for _, _, s in l2) == 37
    assert l2[1][1] == pytest.approx(0.875)  # 0.4375 at ε = 0.5 → 0.875 at ε = 1
    assert [name for name, _, _ in l2] == ["multi_targeted", "pgd_adaptive", "ddn"]


def test_caa_rejects_bad_policies():
    with pytest.raises(ValueError, match="unknown policy member"):
        create_attack("caa", policy=(PolicyStep("spatial", 1.0, 10),))
    with pytest.raises(ValueError, match="L2 attack"):
        create_attack("caa", norm="linf", policy=(PolicyStep("ddn", None, 10),))


def test_cw_loss_is_a_capped_margin():
    targets = torch.tensor([[0.0, 1.0]])
    low = cw_flip_loss(torch.tensor([[0.0, 0.0]]), targets)
    raised = cw_flip_loss(torch.tensor([[1.0, -1.0]]), targets)
    assert raised - low == pytest.approx(2.0)  # like the margin loss while units are unflipped by < κ
    saturated = cw_flip_loss(torch.tensor([[60.0, -60.0]]), targets)
    assert saturated == pytest.approx(0.0) and cw_flip_loss(torch.tensor([[80.0, -80.0]]), targets) == pytest.approx(0.0)


@pytest.mark.parametrize("objective", ["localization", "detection"])
@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 1.5)])
def test_caa_inside_ball_and_moves_its_target(trained_tiny, norm, eps, objective):
    detector, images, masks, labels = trained_tiny
    attack = create_attack("caa", norm=norm, eps=eps, steps=STEPS, objective=objective)
    adv = attack(detector, images, masks, labels)
    check_inside(adv, images, attack.threat.norm, eps)
    with torch.no_grad():
        built = AttackObjective.build(detector, images, masks, labels, objective)
        before, after = built.loss(images), built.loss(adv)
    assert (after >= before - 1e-6).all()
    assert after.mean() > before.mean() + 0.1
    if objective == "localization":
        assert pixel_auroc(detector, adv, masks) < pixel_auroc(detector, images, masks) - 0.05
    else:
        assert image_auroc(detector, adv, labels) < image_auroc(detector, images, labels) - 0.3


def test_caa_collapses_undefended_detector(trained_tiny):
    detector, images, masks, labels = trained_tiny
    local = create_attack("caa", norm="l2", eps=1.5, steps=STEPS)(detector, images, masks, labels)
    assert pixel_auroc(detector, local, masks) < pixel_auroc(detector, images, masks) - 0.25
    detect = create_attack("caa", norm="l2", eps=1.5, steps=STEPS, objective="detection")(detector, images, masks, labels)
    assert image_auroc(detector, detect, labels) < min(0.3, image_auroc(detector, images, labels) - 0.5)


def test_caa_deterministic_under_seed(trained_tiny):
    detector, images, masks, _ = trained_tiny
    x, m = images[:6], masks[:6]
    first = create_attack("caa", eps=8 / 255, steps=6, seed=1)(detector, x, m)
    again = create_attack("caa", eps=8 / 255, steps=6, seed=1)(detector, x, m)
    other = create_attack("caa", eps=8 / 255, steps=6, seed=2)(detector, x, m)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_members_stay_inside_their_own_ball(trained_tiny):
    """A member with a small magnitude may move its start point by at most that magnitude."""
    detector, images, masks, _ = trained_tiny
    small = (PolicyStep("multi_targeted", 2 / 255, 4),)  # published ε 8/255 → 2/255 at ε = 8/255
    adv = create_attack("caa", eps=8 / 255, steps=4, policy=small)(detector, images, masks)
    assert (adv - images).abs().max() <= 2 / 255 + 1e-6
