"""SimBA (attacks/simba.py) and the DCT basis (attacks/dct.py): query-only, inside the ε-ball, weaker than PGD."""
import pytest
import torch

from robustad.attacks import AttackObjective, check_inside, create_attack
from robustad.attacks.dct import DCTBasis, dct_matrix, low_frequency_order
from tests.auroc import image_auroc


def test_dct_basis_is_orthonormal_and_matches_scipy():
    from scipy.fft import idctn

    matrix = dct_matrix(8, torch.float64)
    assert torch.allclose(matrix @ matrix.T, torch.eye(8, dtype=torch.float64), atol=1e-12)
    basis = DCTBasis((3, 8, 8), dtype=torch.float64)
    image = basis.image(64 + 2 * 8 + 5)  # channel 1, frequency (2, 5)
    coefficients = torch.zeros(8, 8, dtype=torch.float64)
    coefficients[2, 5] = 1.0
    expected = torch.from_numpy(idctn(coefficients.numpy(), norm="ortho"))
    assert torch.allclose(image[1], expected, atol=1e-12)
    assert image[0].abs().max() == 0 and image[2].abs().max() == 0


def test_low_frequency_order_is_a_permutation_low_first():
    order = low_frequency_order((3, 32, 32), initial=4, stride=2, generator=torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(3 * 32 * 32))
    first = order[: 3 * 4 * 4]
    rows, cols = (first % 1024) // 32, first % 32
    assert rows.max() < 4 and cols.max() < 4  # the initial block comes first, in every channel
    radius = torch.maximum((order % 1024) // 32, order % 32)
    assert (radius[3 * 16:].diff() >= -1).all()  # then bands of width 2 (a band may mix r and r+1)


@pytest.mark.parametrize(
    "norm,eps,objective,basis",
    [
        ("linf", 8 / 255, "localization", "dct"),
        ("linf", 8 / 255, "detection", "dct"),
        ("l2", 1.5, "localization", "dct"),
        ("l2", 1.5, "detection", "dct"),
        ("linf", 8 / 255, "localization", "pixel"),
        ("l2", 1.5, "detection", "pixel"),
    ],
)
def test_simba_inside_ball_query_only_and_moves_its_target(trained_tiny, norm, eps, objective, basis):
    detector, images, masks, labels = trained_tiny
    grad_modes = []
    hook = detector.register_forward_pre_hook(lambda module, args: grad_modes.append(torch.is_grad_enabled()))
    try:
        attack = create_attack("simba", norm=norm, eps=eps, steps=40, objective=objective, basis=basis)
        adv = attack(detector, images, masks, labels)
    finally:
        hook.remove()
    check_inside(adv, images, attack.threat.norm, eps)
    assert grad_modes and not any(grad_modes)  # black box: no forward ever builds a graph
    assert attack.last_queries.max() <= 40
    with torch.no_grad():
        built = AttackObjective.build(detector, images, masks, labels, objective)
        before, after = built.loss(images), built.loss(adv)
    assert (after >= before - 1e-6).all()  # SimBA only accepts steps that raise the loss
    assert (after > before).sum() >= len(images) // 2


def test_simba_deterministic_under_seed(trained_tiny):
    detector, images, masks, _ = trained_tiny
    x, m = images[:4], masks[:4]
    first = create_attack("simba", eps=8 / 255, steps=20, seed=5)(detector, x, m)
    again = create_attack("simba", eps=8 / 255, steps=20, seed=5)(detector, x, m)
    other = create_attack("simba", eps=8 / 255, steps=20, seed=6)(detector, x, m)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_simba_lowers_auroc_but_not_below_pgd(trained_tiny):
    """A black-box attack lowers AUROC clearly, yet never beats white-box PGD (no gradient masking)."""
    detector, images, masks, labels = trained_tiny
    clean = image_auroc(detector, images, labels)
    kw = dict(norm="l2", eps=1.5, objective="detection")
    black = image_auroc(detector, create_attack("simba", steps=150, **kw)(detector, images, masks, labels), labels)
    white = image_auroc(detector, create_attack("pgd", steps=10, **kw)(detector, images, masks, labels), labels)
    assert black < clean - 0.3
    assert black >= white - 0.02


def test_simba_rejects_unknown_basis():
    with pytest.raises(ValueError, match="basis"):
        create_attack("simba", basis="wavelet")
