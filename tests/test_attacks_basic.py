import pytest

from robustad.attacks import ATTACKS, check_inside, create_attack
from tests.auroc import pixel_auroc


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 1.5)])
@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_attack_inside_ball_and_lowers_auroc(trained_tiny, name, norm, eps):
    detector, images, masks, labels = trained_tiny
    clean = pixel_auroc(detector, images, masks)
    attack = create_attack(name, norm=norm, eps=eps, steps=10)
    adv = attack(detector, images, masks)
    check_inside(adv, images, attack.threat.norm, eps)
    assert pixel_auroc(detector, adv, masks) < clean - 0.1
    assert all(p.requires_grad for p in detector.parameters())  # restored after the attack


def test_registry_lists_first_attacks():
    assert {"fgsm", "pgd"} <= set(ATTACKS.names())
