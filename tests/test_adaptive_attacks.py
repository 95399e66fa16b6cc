"""Adaptive attacks: BPDA through non-differentiable steps and EOT over a randomized detector.

Oracles with known answers (Athalye, Carlini & Wagner, ICML 2018; docs/adaptive.md): the defenses
here are plug-ins written in this file, as a user's would be (subclasses of `robustad.methods.Detector`
using `NonDifferentiable` and `randomized = True`), wrapped around the trained tiny detector.
- An 8-bit quantizer before the model has a zero gradient almost everywhere: plain PGD cannot move
  and leaves AUROC at its clean value; with `bpda=true` PGD does as well as on the model without it.
- Fresh Gaussian input noise on every call: PGD on one noisy pass per step is weaker than with
  `eot=20`, and with EOT it reaches what the attack on the noise-free model achieves.
"""
import json
import textwrap
import threading

import pytest
import torch
from sklearn.metrics import roc_auc_score

from robustad.attacks import ATTACKS, create_attack
from robustad.attacks.attack import RANDOMIZED_EOT
from robustad.methods import Detector, NonDifferentiable, bpda_active, bpda_enabled

EPS = 8 / 255


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 255) / 255


class Quantized(Detector):
    """Bit-depth reduction to 8 bits, then the model: gradient zero almost everywhere."""

    image_size = 32

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.quantize = NonDifferentiable(quantize_8bit)

    def forward(self, images):
        return self.inner(self.quantize(images))


class Noisy(Detector):
    """Adds fresh Gaussian noise (std `sigma`) to its input on every call."""

    image_size = 32
    randomized = True

    def __init__(self, inner, sigma: float = 0.3):
        super().__init__()
        self.inner = inner
        self.sigma = sigma

    def forward(self, images):
        return self.inner(images + self.sigma * torch.randn_like(images))


class Counting(Detector):
    """A deterministic detector counting the images of its forward passes."""

    image_size = 32

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.images_seen = 0

    def forward(self, images):
        self.images_seen += images.shape[0]
        return self.inner(images)


def pixel_auroc(detector, images, masks, repeats: int = 1) -> float:
    """Pixel AUROC (%) averaged over `repeats` seeded evaluations (a randomized detector's spread)."""
    values = []
    for r in range(repeats):
        torch.manual_seed(1000 + r)
        with torch.no_grad():
            maps = detector.anomaly_map(detector(images), images.shape[-1])
        values.append(roc_auc_score(masks.flatten().numpy() > 0.5, maps.flatten().numpy()))
    return 100 * sum(values) / repeats


def attacked(detector, images, masks, name="pgd", seed=1, **options):
    torch.manual_seed(seed)  # the detector's noise comes from torch's global generator
    return create_attack(name, eps=EPS, seed=seed, **options)(detector, images, masks)


# -- NonDifferentiable and the BPDA switch ------------------------------------------------------------

def test_non_differentiable_is_exact_and_passes_the_surrogate_gradient_only_under_bpda():
    step = NonDifferentiable(quantize_8bit)
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    plain = step(x)
    assert torch.equal(plain, quantize_8bit(x.detach()))
    (grad,) = torch.autograd.grad(plain.sum(), x)
    assert grad.abs().max() == 0  # round() has no gradient: what a plain attack sees
    with bpda_enabled():
        assert bpda_active()
        through = step(x)
        assert torch.equal(through, quantize_8bit(x.detach()))  # the forward value is still exact
        (grad,) = torch.autograd.grad(through.sum(), x)
    assert torch.equal(grad, torch.ones_like(x))  # identity surrogate
    assert not bpda_active()
    squared = NonDifferentiable(quantize_8bit, surrogate=lambda t: t ** 2)
    with bpda_enabled():
        (grad,) = torch.autograd.grad(squared(x).sum(), x)
    torch.testing.assert_close(grad, 2 * x.detach())


def test_bpda_setting_is_restored_on_error_and_does_not_leak_to_other_threads():
    seen = {}

    def other_thread():
        seen["other"] = bpda_active()

    with pytest.raises(RuntimeError):
        with bpda_enabled():
            worker = threading.Thread(target=other_thread)
            worker.start()
            worker.join()
            with bpda_enabled(False):
                assert not bpda_active()
            assert bpda_active()
            raise RuntimeError("attack failed")
    assert seen["other"] is False and not bpda_active()


def test_a_surrogate_of_the_wrong_shape_is_refused():
    step = NonDifferentiable(lambda t: t.mean(1, keepdim=True))  # identity surrogate: wrong shape
    with bpda_enabled(), pytest.raises(ValueError, match="surrogate"):
        step(torch.rand(1, 3, 4, 4, requires_grad=True))


# -- the oracles ---------------------------------------------------------------------------------

def test_bpda_defeats_8bit_quantization(trained_tiny):
    tiny, images, masks, _ = trained_tiny
    defended = Quantized(tiny)
    clean = pixel_auroc(defended, images, masks)
    plain = pixel_auroc(defended, attacked(defended, images, masks, steps=5), masks)
    bpda = pixel_auroc(defended, attacked(defended, images, masks, steps=5, bpda=True), masks)
    undefended = pixel_auroc(tiny, attacked(tiny, images, masks, steps=5), masks)
    print(f"\nquantizer oracle, pixel AUROC %: clean {clean:.1f}, PGD-5 {plain:.1f}, PGD-5 with BPDA {bpda:.1f}, "
          f"PGD-5 on the model without the quantizer {undefended:.1f}")  # docs/adaptive.md quotes these
    assert undefended < clean - 15  # the model itself breaks
    assert plain > clean - 1, f"plain PGD moved the quantized detector: {clean:.1f} -> {plain:.1f}"
    assert abs(bpda - undefended) < 3, f"BPDA {bpda:.1f} vs the model without the quantizer {undefended:.1f}"


def test_eot_defeats_input_noise(trained_tiny):
    tiny, images, masks, _ = trained_tiny
    noisy = Noisy(tiny, sigma=0.3)
    # AUROC of a randomized detector: the mean over repeated evaluations
    clean = pixel_auroc(noisy, images, masks, repeats=5)
    one_pass = [pixel_auroc(noisy, attacked(noisy, images, masks, steps=3, eot=1, seed=s), masks, repeats=5)
                for s in (1, 2)]
    eot = pixel_auroc(noisy, attacked(noisy, images, masks, steps=3, eot=20), masks, repeats=5)
    noise_free = pixel_auroc(noisy, attacked(tiny, images, masks, steps=3), masks, repeats=5)
    print(f"\nnoise oracle, pixel AUROC %: clean {clean:.1f}, PGD-3 one pass {one_pass[0]:.1f} / {one_pass[1]:.1f}, "
          f"EOT-20 {eot:.1f}, attack on the noise-free model {noise_free:.1f}")  # docs/adaptive.md quotes these
    assert eot < clean - 15
    assert min(one_pass) > eot + 3, f"EOT-20 {eot:.1f} is not clearly stronger than one pass {one_pass}"
    assert eot < noise_free + 2, f"EOT-20 {eot:.1f} falls short of the noise-free model's attack {noise_free:.1f}"


# -- EOT reaches every attack ---------------------------------------------------------------------

BUDGETS = {"a3": dict(steps=6), "sea": dict(steps=3), "caa": dict(steps=3), "square": dict(steps=6),
           "simba": dict(steps=6), "autoattack": dict(steps=2, square_queries=4), "fgsm": {}}


@pytest.mark.parametrize("name", [n for n in ATTACKS.names() if not n.startswith("test-")])
def test_every_attack_averages_every_forward_over_the_eot_passes(trained_tiny, name):
    """On a deterministic detector the mean of K identical passes is the pass itself (exactly, for
    K = 2), so eot=2 returns the same images as eot=1, with every forward but the clean probe twice."""
    tiny, images, masks, _ = trained_tiny
    images, masks = images[4:8], masks[4:8]
    runs = {}
    for eot in (1, 2):
        counting = Counting(tiny)
        attack = create_attack(name, eps=EPS, seed=3, eot=eot, **BUDGETS.get(name, dict(steps=2)))
        runs[eot] = (attack(counting, images, masks), counting.images_seen, attack.describe())
    (adv1, seen1, described1), (adv2, seen2, described2) = runs[1], runs[2]
    probe = images.shape[0]  # AttackObjective.build's clean forward (one pass: it only reads the grid)
    assert seen2 - probe == 2 * (seen1 - probe)
    torch.testing.assert_close(adv2, adv1, rtol=0, atol=1e-6)
    assert (described1["eot"], described2["eot"]) == (1, 2)
    for member in described2.get("members", []):
        assert member["eot"] == 2, name


def test_default_eot_follows_the_declared_randomness_and_is_recorded(trained_tiny):
    tiny, images, masks, _ = trained_tiny
    attack = create_attack("fgsm", eps=EPS)
    assert attack.describe()["eot"] == "auto" and attack.describe()["bpda"] is False
    attack(tiny, images[:2], masks[:2])
    assert attack.describe()["eot"] == 1
    attack(Noisy(tiny), images[:2], masks[:2])
    assert attack.describe()["eot"] == RANDOMIZED_EOT == 20
    worst = create_attack("worst:fgsm,pgd-2", eps=EPS, eot=3, bpda="true")
    assert [m.describe()["bpda"] for m in worst.members] == [True, True]
    assert all(m.eot == 3 for m in worst.members)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "x", True])
def test_a_bad_eot_is_refused_before_attacking(bad):
    with pytest.raises(ValueError, match="eot"):
        create_attack("pgd", eot=bad)


def test_bpda_option_is_parsed(trained_tiny):
    with pytest.raises(ValueError, match="bpda"):
        create_attack("pgd", bpda="maybe")
    assert create_attack("apgd", bpda="true").bpda is True


# -- a plug-in from outside the repository, through `bench run` -----------------------------------

PLUGIN = '''
import torch
from robustad.methods import Detector, NonDifferentiable

class QuantizedNoisy(Detector):
    """A user's defense: input noise, then 8-bit quantization declared non-differentiable."""
    image_size = 32
    randomized = True

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Conv2d(3, 1, 8, stride=8)
        self.quantize = NonDifferentiable(lambda x: torch.round(x * 255) / 255)

    def fit(self, train_set):
        torch.nn.init.normal_(self.net.weight)

    def forward(self, images):
        return self.net(self.quantize((images + 0.05 * torch.randn_like(images)).clamp(0, 1)))[:, 0]
'''


def test_a_plugin_declares_randomness_and_non_differentiable_steps(tmp_path, monkeypatch, mvtec_root):
    from robustad.bench.cli import main

    (tmp_path / "userdefense_adaptive.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["run", "--method", "userdefense_adaptive:QuantizedNoisy", "--dataset", "mvtec", "--root",
                 str(mvtec_root), "--category", "alpha", "--attack", "pgd", "--steps", "2", "--results",
                 str(tmp_path / "results"), "--attack-option", "eot=3", "--attack-option", "bpda=true"])
    assert code == 0
    (path,) = (tmp_path / "results" / "records").glob("*.json")
    record = json.loads(path.read_text())
    assert record["error"] is None
    assert record["attack_config"]["eot"] == 3 and record["attack_config"]["bpda"] is True
    assert record["attack_options"] == {"eot": 3, "bpda": True}
