"""Our attacks against reference implementations, and the properties every registered attack needs.

- fgsm / pgd equal torchattacks' FGSM / PGD / PGDL2 on the same detector, wrapped as per-cell
  two-class logits [0, m] (torchattacks' CE is then our `loss="ce"`).
- APGD's core gives AutoAttack's APGD-CE robust accuracy (within one point) on a small 10-class
  classifier trained here on generated data.
- Every registered attack, on an undefended detector: inside the ε-ball and [0, 1], deterministic
  under a seed, collapses the targeted AUROC, and each objective moves the quantity it targets.
"""
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from robustad.attacks import ATTACKS, AttackObjective, FlipLoss, Norm, check_inside, create_attack
from robustad.attacks.apgd import Evaluation, apgd_ascent, apgd_start
from robustad.attacks.calibration import UnitCalibration
from tests.auroc import pixel_auroc

class CellClassifier(nn.Module):
    """A detector seen as a segmentation model: (B, 2, h, w) logits [0, m] per cell."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, x):
        m = self.detector(x)
        return torch.stack([torch.zeros_like(m), m], dim=1)


def cell_labels(detector, images, masks, labels):
    targets = AttackObjective.build(detector, images, masks, labels).targets
    grid = detector(images[:1]).shape[-2:]
    return targets.view(-1, *grid).long()


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (dict(name="fgsm", norm="linf", eps=8 / 255), lambda ta, m: ta.FGSM(m, eps=8 / 255)),
        (
            dict(name="pgd", norm="linf", eps=8 / 255, steps=7, step_size=2 / 255),
            lambda ta, m: ta.PGD(m, eps=8 / 255, alpha=2 / 255, steps=7, random_start=False),
        ),
        (
            dict(name="pgd", norm="l2", eps=0.5, steps=7, step_size=0.1),
            lambda ta, m: ta.PGDL2(m, eps=0.5, alpha=0.1, steps=7, random_start=False),
        ),
    ],
    ids=["fgsm-linf", "pgd-linf", "pgd-l2"],
)
def test_fgsm_pgd_equal_torchattacks(trained_tiny, ours, theirs):
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks (dev extra) is the FGSM/PGD reference")
    detector, images, masks, labels = trained_tiny
    options = dict(ours)
    attack = create_attack(options.pop("name"), loss="ce", keep_best=False, **options)
    # the identity calibration reads each cell as [0, m], as the wrapped model gives torchattacks
    adv = attack(detector, images, masks, labels, calibration=UnitCalibration.identity())
    wrapped = CellClassifier(detector).eval()
    reference = theirs(torchattacks, wrapped)(images, cell_labels(detector, images, masks, labels))
    assert (adv - images).abs().max() > 1e-3  # the attack moved the images
    torch.testing.assert_close(adv, reference, atol=1e-5, rtol=0)


# -- APGD against AutoAttack's APGD-CE on a 10-class classifier ----------------------------------


def blob_images(n, generator, prototypes, noise=0.15):
    """n 16×16 images of 10 classes: a smooth class prototype plus Gaussian noise."""
    labels = torch.randint(0, len(prototypes), (n,), generator=generator)
    images = prototypes[labels] + noise * torch.randn(n, *prototypes.shape[1:], generator=generator)
    return images.clamp(0, 1), labels


@pytest.fixture(scope="module")
def blob_classifier():
    gen = torch.Generator().manual_seed(0)
    prototypes = F.interpolate(torch.rand(10, 3, 4, 4, generator=gen), size=16, mode="bilinear", align_corners=False)
    prototypes = 0.5 + 0.25 * (prototypes - 0.5) / (prototypes - 0.5).abs().amax()
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(64, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(150):
        x, y = blob_images(32, gen, prototypes)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval().requires_grad_(False)
    images, labels = blob_images(256, gen, prototypes)
    return net, images, labels


def classifier_evaluation(net, labels):
    """APGD-CE on a classifier: CE gradient, CE steers the step size, the margin ranks iterates."""

    def evaluate(x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = net(x)
            ce = F.cross_entropy(logits, labels, reduction="none")
            (grad,) = torch.autograd.grad(ce.sum(), x)
        logits = logits.detach()
        true = logits.gather(1, labels[:, None])[:, 0]
        other = logits.scatter(1, labels[:, None], -float("inf")).amax(1)
        return Evaluation(grad, ce.detach(), other - true)

    return evaluate


def robust_accuracy(net, clean, labels, rank):
    with torch.no_grad():
        correct = net(clean).argmax(1) == labels
    return (correct & (rank <= 0)).float().mean().item()


@pytest.mark.parametrize("norm,eps", [(Norm.LINF, 8 / 255), (Norm.L2, 0.5)], ids=["linf", "l2"])
def test_apgd_matches_autoattack_apgd_ce(blob_classifier, norm, eps):
    ref = pytest.importorskip("pyautoattack.autopgd_base", reason="pyautoattack (dev extra) is the APGD reference")
    net, images, labels = blob_classifier
    steps = 40
    with torch.no_grad():
        clean_accuracy = (net(images).argmax(1) == labels).float().mean().item()
    assert clean_accuracy > 0.9

    start = apgd_start(images, norm, eps, torch.Generator().manual_seed(1))
    run = apgd_ascent(classifier_evaluation(net, labels), images, start, norm, eps, steps)
    ours = robust_accuracy(net, images, labels, run.best_rank)
    assert 0.1 < ours < 0.9, f"robust accuracy {ours:.2f} is too close to 0 or 1 to compare attacks"

    reference_norm = "Linf" if norm == Norm.LINF else "L2"
    reference = ref.APGDAttack(net, n_iter=steps, norm=reference_norm, eps=eps, seed=0, loss="ce", device="cpu")
    # From the same starting point both follow the same algorithm: the same images survive.
    reference.init_hyperparam(images)
    _, survived, _, _ = reference.attack_single_run(images, labels, x_init=start)
    assert abs(ours - survived.float().mean().item()) <= 0.01 + 1e-9

    if norm == Norm.LINF:  # AutoAttack's own random start: equal within one point
        with torch.no_grad():
            theirs = (net(reference.perturb(images, labels)).argmax(1) == labels).float().mean().item()
        assert abs(ours - theirs) <= 0.01 + 1e-9, f"ours {ours:.3f}, AutoAttack APGD-CE {theirs:.3f}"


# -- every registered attack ---------------------------------------------------------------------

# Budgets per attack: query counts for black-box attacks, iterations for the others.
FAST = {"square": dict(steps=20), "simba": dict(steps=20), "autoattack": dict(steps=3, square_queries=10)}
STRONG = {"square": dict(steps=300), "simba": dict(steps=300), "autoattack": dict(steps=6, square_queries=50)}


def build(name, budgets, **kw):
    return create_attack(name, **{"steps": 3 if budgets is FAST else 6, **budgets.get(name, {}), **kw})


def flip_margin(detector, adv, images, masks, labels, objective):
    with torch.no_grad():
        ranking = AttackObjective.build(detector, images, masks, labels, objective, FlipLoss.MARGIN)
        return ranking.loss(adv).mean().item()


def supports(name, norm):
    return Norm.parse(norm) in ATTACKS.get(name).norms


@pytest.mark.parametrize("name,norm,eps", [(name, norm, eps) for norm, eps in (("linf", 8 / 255), ("l2", 0.5))
                                             for name in ATTACKS.names() if supports(name, norm)])
def test_every_attack_inside_ball_and_deterministic(trained_tiny, name, norm, eps):
    detector, images, masks, labels = trained_tiny
    first = build(name, FAST, norm=norm, eps=eps, seed=3)(detector, images, masks, labels)
    check_inside(first, images, Norm.parse(norm), eps)
    second = build(name, FAST, norm=norm, eps=eps, seed=3)(detector, images, masks, labels)
    assert torch.equal(first, second)
    assert (first - images).abs().max() > 0  # it did something


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_collapses_undefended_detector_on_its_objective(trained_tiny, name):
    detector, images, masks, labels = trained_tiny
    eps = 16 / 255
    clean_pixel = pixel_auroc(detector, images, masks)
    with torch.no_grad():
        clean_image = roc_auc_score(labels.numpy(), detector.score(detector(images)).numpy())
    adv = {
        objective: build(name, STRONG, norm="linf", eps=eps, objective=objective)(detector, images, masks, labels)
        for objective in ("localization", "detection")
    }
    assert pixel_auroc(detector, adv["localization"], masks) < clean_pixel - 0.2
    with torch.no_grad():
        attacked_image = roc_auc_score(labels.numpy(), detector.score(detector(adv["detection"])).numpy())
    assert attacked_image < min(clean_image - 0.2, 0.5)
    # Each objective moves its own quantity more than the other objective does.
    for own, other in (("localization", "detection"), ("detection", "localization")):
        own_gain = flip_margin(detector, adv[own], images, masks, labels, own)
        other_gain = flip_margin(detector, adv[other], images, masks, labels, own)
        clean = flip_margin(detector, images, images, masks, labels, own)
        assert own_gain > clean and own_gain > other_gain, (own, clean, own_gain, other_gain)
