"""PatchGuard: model, loss (R and the KL variant), adversarial training, config, checkpoints, attention degree."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from robustad.attacks.objectives import FlipLoss, Objective
from robustad.attacks.threat_model import Norm, lp_norm
from robustad.methods import CheckpointMismatchError, create_method
from robustad.methods.patchguard import PatchGuard
from robustad.methods.patchguard.adversarial_training import (
    adversarial_examples,
    patch_labels,
    patchguard_loss,
)
from robustad.methods.patchguard.attention_degree import attention_degree, image_attention_degrees
from robustad.methods.patchguard.attention_regularizer import attention_r, attention_regularizer, kl_to_uniform
from robustad.methods.patchguard.model import AttentionDiscriminator, DISCRIMINATOR, block_attention

from tests.tiny_configs import PATCHGUARD as TINY


def tiny(**overrides) -> PatchGuard:
    return create_method("patchguard", **{**TINY, **overrides})


class RectangleAnomalies:
    """Stands in for the pseudo-anomaly generator: darkened rectangles with their masks."""

    def __init__(self):
        self.prepared = None

    def prepare(self, images):
        self.prepared = images.shape

    def __call__(self, images, indices, generator):
        out, masks = images.clone(), torch.zeros_like(images[:, :1])
        size = images.shape[-1]
        for j in range(len(images)):
            y, x = torch.randint(0, size // 2, (2,), generator=generator).tolist()
            out[j, :, y:y + size // 3, x:x + size // 3] *= 0.4
            masks[j, :, y:y + size // 3, x:x + size // 3] = 1
        return out, masks


@pytest.fixture
def fake_generator(monkeypatch):
    made = []

    def build(config):
        made.append(RectangleAnomalies())
        return made[-1]

    monkeypatch.setattr("robustad.methods.patchguard.detector.build_pseudo_anomaly_generator", build)
    return made


# -- model ---------------------------------------------------------------------------------------
def test_forward_shape_and_input_gradients():
    torch.manual_seed(0)
    detector = tiny().eval()
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    logits = detector(x)
    assert logits.shape == (3, 4, 4) and logits.dtype == torch.float32
    (grad,) = torch.autograd.grad(detector.score(logits).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert detector.score(logits).shape == (3,)
    assert detector.anomaly_map(logits, 32).shape == (3, 32, 32)


def test_bf16_precision_forward_is_close_to_fp32():
    torch.manual_seed(0)
    detector = tiny().eval()
    x = torch.rand(2, 3, 32, 32)
    fp32 = detector(x)
    detector.config.precision = "bf16"
    bf16 = detector(x)
    assert bf16.dtype == torch.float32
    assert torch.allclose(fp32, bf16, atol=0.1 * fp32.abs().max().item() + 0.05)


def test_recorded_attention_is_the_blocks_attention():
    """The hook's softmax(q·kᵀ) reproduces the block's fused output: attention @ v, projected."""
    torch.manual_seed(0)
    detector = tiny().eval()
    block = detector.net.vit.blocks[-1].attn
    x = torch.randn(2, 16, 32)
    attention = block_attention(block, x)
    assert attention.shape == (2, 2, 16, 16)
    assert torch.allclose(attention.sum(-1), torch.ones(2, 2, 16), atol=1e-5)
    v = block.qkv(x).reshape(2, 16, 3, 2, 16).permute(2, 0, 3, 1, 4)[2]
    rebuilt = block.proj((attention @ v).transpose(1, 2).reshape(2, 16, 32))
    assert torch.allclose(rebuilt, block(x), atol=1e-5)


def test_attention_only_recorded_when_asked():
    torch.manual_seed(0)
    detector = tiny().eval()
    x = torch.rand(2, 3, 32, 32)
    logits, attention = detector.forward_with_attention(x, (1, DISCRIMINATOR))
    assert set(attention) == {1, DISCRIMINATOR}
    assert attention[1].shape == (2, 2, 16, 16) and attention[DISCRIMINATOR].shape == (2, 2, 16, 16)
    assert torch.allclose(logits, detector(x), atol=1e-5)
    assert not detector.net.vit.blocks[1].attn._forward_hooks  # hooks removed afterwards


def test_wrong_image_size_and_too_small_images_are_clear_errors():
    detector = tiny()
    with pytest.raises(ValueError, match="32×32"):
        detector(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="smaller than one patch"):
        detector(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        tiny(image_size=36)
    with pytest.raises(ValueError, match="image_size=8 .*a multiple of patch_size=16"):
        tiny(image_size=8, patch_size=16)


# -- loss ----------------------------------------------------------------------------------------
def test_r_equals_equation_4_on_a_hand_made_attention():
    # one image, one head, N = 4, δ = 1/4: the entries ≤ 0.25 are 0.1, 0.2, 0.25, 0.25, 0.25, 0.25, 0.05
    attention = torch.tensor([[[[0.7, 0.1, 0.0, 0.2],
                                [0.25, 0.25, 0.25, 0.25],
                                [0.0, 0.0, 1.0, 0.0],
                                [0.05, 0.45, 0.5, 0.0]]]])
    expected = 1.0 / (0.1 + 0.0 + 0.2 + 1.0 + 0.0 + 0.0 + 0.0 + 0.05 + 0.0)
    assert attention_r(attention, 0.25).item() == pytest.approx(expected, rel=1e-6)


def test_r_decreases_as_attention_becomes_uniform():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 16, 16) * 4
    values = [attention_r((scores * t).softmax(-1), 1 / 16).mean().item() for t in (1.0, 0.5, 0.1, 0.0)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert values[-1] == pytest.approx(1 / (3 * 16), rel=1e-5)  # uniform: 1 / (heads · N)


def test_kl_variant_is_zero_for_uniform_attention_only():
    uniform = torch.full((2, 3, 8, 8), 1 / 8)
    assert kl_to_uniform(uniform).abs().max().item() < 1e-6
    peaked = torch.randn(2, 3, 8, 8).mul(3).softmax(-1)
    assert (kl_to_uniform(peaked) > 0.01).all()
    both = attention_regularizer({"a": uniform, "b": peaked}, reg_type="kl", delta=1 / 8, kl_weights=(1.0, 0.5))
    assert torch.allclose(both, 0.5 * kl_to_uniform(peaked), atol=1e-6)


def test_loss_is_patch_bce_sum_plus_alpha_r():
    torch.manual_seed(0)
    detector = tiny(dropout=0.0).eval()
    x = torch.rand(2, 3, 32, 32)
    targets = torch.zeros(2, 4, 4)
    targets[0, 1, 1] = 1
    plain = patchguard_loss(detector.net, x, targets, tiny(alpha=0).config)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(detector(x), targets, reduction="none").sum((1, 2))
    assert torch.allclose(plain, bce, atol=1e-4)
    with_r = patchguard_loss(detector.net, x, targets, detector.config)
    _, attention = detector.forward_with_attention(x, (1,))
    assert torch.allclose(with_r - plain, attention_r(attention[1], 1 / 16), atol=1e-4)


def test_patch_label_rules():
    masks = torch.zeros(1, 1, 32, 32)
    masks[0, 0, 0, 0] = 1  # one pixel of the first 8×8 patch (1/64 < 5%)
    masks[0, 0, 8:16, 8:12] = 1  # half of patch (1, 1)
    fraction = patch_labels(masks, 4, "fraction")
    anything = patch_labels(masks, 4, "any")
    assert fraction[0, 0, 0] == 0 and anything[0, 0, 0] == 1
    assert fraction[0, 1, 1] == 1 and anything[0, 1, 1] == 1
    assert fraction.sum() == 1 and anything.sum() == 2


# -- config and ablations ------------------------------------------------------------------------
def test_config_overrides_and_presets():
    detector = create_method("patchguard", alpha=0, adv_train="false", reg_layers="-2,-1", delta_scale="1/2")
    assert detector.config.alpha == 0 and detector.config.adv_train is False
    assert detector.config.reg_layers == (-2, -1) and detector.config.delta_scale == 0.5
    paper = create_method("patchguard", profile="paper")
    assert (paper.config.image_size, paper.config.patch_size, paper.config.vit_embed_dim) == (224, 14, 384)
    assert paper.config.top_k == 5 and paper.config.num_patches == 256 and paper.config.delta == 1 / 256
    assert paper.config.train_steps == 10 and paper.config.epochs == 300
    with pytest.raises(ValueError, match="reg_type"):
        create_method("patchguard", reg_type="l2")
    with pytest.raises(ValueError, match="reg_layers"):
        create_method("patchguard", reg_layers="0")
    with pytest.raises(ValueError, match="pseudo_anomaly"):
        create_method("patchguard", pseudo_anomaly="draem")


def test_long_preset_is_quick_with_twice_the_width_and_three_times_the_epochs():
    quick = create_method("patchguard", profile="quick").config
    long = create_method("patchguard", profile="long").config
    differing = {f.name for f in dataclasses.fields(quick) if getattr(quick, f.name) != getattr(long, f.name)}
    assert differing == {"vit_embed_dim", "epochs"}
    assert (long.vit_embed_dim, long.epochs) == (2 * quick.vit_embed_dim, 3 * quick.epochs)
    assert long.vit_embed_dim % long.vit_heads == 0 and long.vit_embed_dim % long.disc_heads == 0
    assert create_method("patchguard", profile="long", epochs=10).config.epochs == 10  # --config still wins


def test_ablation_fields_change_the_model():
    torch.manual_seed(0)
    with_disc, without = tiny(), tiny(discriminator=False)
    assert any(isinstance(m, AttentionDiscriminator) for m in with_disc.modules())
    assert not any(isinstance(m, AttentionDiscriminator) for m in without.modules())
    assert without(torch.rand(1, 3, 32, 32)).shape == (1, 4, 4)
    with pytest.raises(ValueError, match="discriminator"):
        patchguard_loss(without.net, torch.rand(1, 3, 32, 32), torch.zeros(1, 4, 4), tiny(discriminator=False, reg_discriminator=True).config)
    deeper = tiny(vit_depth=3)
    assert len(deeper.net.vit.blocks) == 3
    assert sum(p.numel() for p in deeper.parameters()) > sum(p.numel() for p in with_disc.parameters())


def test_checkpoint_round_trip_and_refusal(tmp_path):
    torch.manual_seed(0)
    detector = tiny().eval()
    path = tmp_path / "pg.pt"
    detector.save_checkpoint(path)
    torch.manual_seed(1)
    loaded = tiny().eval()
    x = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(loaded(x), detector(x))
    loaded.load_checkpoint(path)
    assert torch.allclose(loaded(x), detector(x))
    with pytest.raises(CheckpointMismatchError, match="alpha: checkpoint has 1.0, expected 0.0"):
        tiny(alpha=0).load_checkpoint(path)



def test_checkpoint_older_than_a_config_field_loads_when_the_field_is_at_its_default(tmp_path):
    detector = tiny().eval()
    path = tmp_path / "old.pt"
    detector.save_checkpoint(path)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["reg_discriminator"]  # written before the field existed
    torch.save(payload, path)
    tiny().load_checkpoint(path)
    with pytest.raises(CheckpointMismatchError, match="reg_discriminator: checkpoint has False, expected True"):
        tiny(reg_discriminator=True).load_checkpoint(path)

# -- adversarial training and fit ----------------------------------------------------------------
def test_training_adversarial_examples_stay_in_the_ball_and_raise_the_flip_loss():
    torch.manual_seed(0)
    detector = tiny(train_steps=5)
    x = torch.rand(2, 3, 32, 32)
    targets = torch.zeros(2, 4, 4)
    adv = adversarial_examples(detector, x, targets, detector.config)
    assert (lp_norm(adv - x, Norm.LINF) <= 8 / 255 + 1e-6).all() and adv.min() >= 0 and adv.max() <= 1
    assert detector.training and all(p.requires_grad for p in detector.parameters())  # restored
    detector.eval()
    with torch.no_grad():
        assert detector(adv).mean() > detector(x).mean()  # normal patches pushed toward "anomalous"


def test_one_attack_on_normal_and_pseudo_anomalies_equals_two():
    torch.manual_seed(0)
    detector = tiny(train_steps=4)
    x = torch.rand(6, 3, 32, 32)
    targets = torch.zeros(6, 4, 4)
    targets[3:, 1:3, 1:3] = 1
    together = adversarial_examples(detector, x, targets, detector.config)
    apart = torch.cat([adversarial_examples(detector, x[:3], targets[:3], detector.config),
                       adversarial_examples(detector, x[3:], targets[3:], detector.config)])
    assert (together - x).abs().amax() == pytest.approx(8 / 255)
    assert (together != apart).float().mean() < 0.01  # per-image losses: only float noise may differ


def test_pgd_started_where_a_shorter_pgd_ended_continues_it():
    from robustad.attacks.objectives import AttackObjective
    from robustad.attacks.pgd import PGD
    from robustad.attacks.threat_model import ThreatModel

    torch.manual_seed(0)
    detector = tiny().eval()
    x = torch.rand(3, 3, 32, 32)
    objective = AttackObjective(detector, torch.zeros(3, 16), Objective.LOCALIZATION, FlipLoss.MARGIN)

    def pgd(steps, start=None):
        return PGD(ThreatModel(eps=8 / 255, steps=steps, step_size=1 / 255), keep_best=False).perturb(
            objective, x, start=start)

    two = pgd(2)
    assert torch.equal(pgd(2, start=two), pgd(4))  # the reused perturbation accumulates the steps
    far = pgd(1, start=x + 0.5)  # a start outside the ball is projected back first
    assert (lp_norm(far - x, Norm.LINF) <= 8 / 255 + 1e-6).all()
    assert ((far - x).abs() > 6 / 255).float().mean() > 0.5


def test_tiny_fit_runs_and_is_deterministic(mvtec_root, fake_generator):
    from robustad.datasets import create_dataset

    train = create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        detector = tiny(epochs=1)
        detector.fit(train)
        weights.append(torch.cat([p.detach().flatten() for p in detector.parameters()]))
        assert not detector.training
    assert fake_generator[0].prepared == (len(train), 3, 32, 32)
    assert torch.equal(weights[0], weights[1])
    torch.manual_seed(0)
    fresh = torch.cat([p.detach().flatten() for p in tiny(epochs=1).parameters()])
    assert not torch.equal(weights[0], fresh)


def test_fit_with_prefetched_batches_gives_the_same_model(mvtec_root, fake_generator, monkeypatch):
    from robustad.datasets import create_dataset
    from robustad.methods.patchguard import detector as module

    train = create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32)
    original = module.training_batches

    def weights(prefetch: bool) -> torch.Tensor:  # on the CPU the fit draws in place; force either way
        monkeypatch.setattr(module, "training_batches", lambda *a, **k: original(*a, **{**k, "prefetch": prefetch}))
        torch.manual_seed(0)
        detector = tiny(epochs=2)
        detector.fit(train)
        return torch.cat([p.detach().flatten() for p in detector.parameters()])

    assert torch.equal(weights(False), weights(True))


def test_after_epoch_sees_each_epoch_in_eval_mode_and_leaves_the_trained_model_as_without_it(mvtec_root,
                                                                                              fake_generator):
    from robustad.attacks import create_attack
    from robustad.datasets import create_dataset

    train = create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32)
    seen = []

    def measure(detector):
        def after_epoch(epoch):  # an attack, and random draws the fit would otherwise see (dropout)
            seen.append((epoch, detector.training))
            x = torch.rand(2, 3, 32, 32)
            create_attack("pgd-2")(detector, x, torch.zeros(2, 1, 32, 32), torch.zeros(2))
            torch.rand(1000)
        return after_epoch

    def weights(observe: bool) -> torch.Tensor:
        torch.manual_seed(0)
        detector = tiny(epochs=3)
        detector.fit(train, after_epoch=measure(detector) if observe else None)
        return torch.cat([p.detach().flatten() for p in detector.parameters()])

    assert torch.equal(weights(True), weights(False))
    assert seen == [(1, False), (2, False), (3, False)]


def test_fit_errors_name_the_problem(fake_generator):
    with pytest.raises(ValueError, match="no images"):
        tiny().fit([])
    small = [{"image": torch.rand(3, 4, 4), "label": 0, "mask": torch.zeros(1, 4, 4), "path": "a.png"}]
    with pytest.raises(ValueError, match="smaller than one patch"):
        tiny().fit(small)
    anomalous = [{"image": torch.rand(3, 32, 32), "label": 1, "mask": torch.ones(1, 32, 32), "path": "b.png"}]
    with pytest.raises(ValueError, match="no normal"):
        tiny().fit(anomalous)


# -- attention degree ----------------------------------------------------------------------------
def test_attention_degree_of_uniform_and_identity_attention():
    n = 16
    uniform = torch.full((2, 3, n, n), 1 / n)
    identity = torch.eye(n).expand(2, 3, n, n)
    assert attention_degree(uniform).tolist() == [n, n]
    assert attention_degree(identity).tolist() == [1, 1]
    half = torch.zeros(1, 1, 4, 4)
    half[..., :2] = 0.5  # each row attends to two tokens
    assert attention_degree(half).item() == 2


def test_image_attention_degrees_of_a_model():
    torch.manual_seed(0)
    detector = tiny().eval()
    degrees = image_attention_degrees(detector, torch.rand(3, 3, 32, 32))
    assert degrees.shape == (3,) and ((degrees >= 1) & (degrees <= 16)).all()
    disc = image_attention_degrees(detector, torch.rand(3, 3, 32, 32), layer="discriminator")
    assert disc.shape == (3,)
    with pytest.raises(ValueError, match="attention layer"):
        image_attention_degrees(detector, torch.rand(1, 3, 32, 32), layer=5)


def test_attention_degree_report_and_figure(tmp_path, mvtec_root):
    from robustad.attacks import create_attack
    from robustad.datasets import create_dataset
    import pandas as pd

    from robustad.bench.evaluation.attention_degree import (
        attention_degree_report, plot_vulnerability, save_attention_degree_report)

    test = create_dataset("mvtec", root=mvtec_root, category="alpha", split="test", image_size=32)
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    masks = torch.stack([test[i]["mask"] for i in range(len(test))])
    labels = torch.tensor([test[i]["label"] for i in range(len(test))])
    torch.manual_seed(0)
    detector = tiny().eval()
    dataset = [{"image": images[i], "mask": masks[i], "label": int(labels[i]), "path": f"{i}"} for i in range(len(images))]
    per_image, per_cluster = attention_degree_report(detector, dataset, create_attack("pgd-2"), groups=3, batch_size=5)
    assert len(per_image) == len(images) and per_image["cluster"].nunique() == 3
    assert per_cluster["images"].sum() == len(images)
    assert (per_cluster["vulnerability"].dropna() >= 0).all()
    anomalous = per_image[per_image.label == 1]
    assert anomalous["pixel_auroc_clean"].notna().all() and per_image[per_image.label == 0]["pixel_auroc_clean"].isna().all()
    plot_vulnerability(per_cluster, tmp_path / "fig2.png")
    assert (tmp_path / "fig2.png").stat().st_size > 1000
    paths = save_attention_degree_report(per_image, per_cluster, tmp_path / "report")
    assert len(pd.read_csv(paths["images"])) == len(images) and paths["figure"].exists()
    assert not math.isnan(per_image["attention_degree"].iloc[0])


def test_texture_datasets_resolve_auto_foreground_to_full():
    from types import SimpleNamespace

    from robustad.methods.patchguard.detector import generator_config

    config = tiny().config
    textures = SimpleNamespace(format=SimpleNamespace(whole_image_foreground=True))
    objects = SimpleNamespace(format=SimpleNamespace(whole_image_foreground=False))
    assert generator_config(config, textures).foreground == "full"
    assert generator_config(config, objects).foreground == "auto"
    assert generator_config(tiny(foreground="resnet18").config, textures).foreground == "resnet18"


@pytest.mark.parametrize("generator", ["ours", "cutpaste"])
def test_fit_with_the_real_pseudo_anomaly_generators(mvtec_root, generator):
    from robustad.datasets import create_dataset

    train = create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32)
    torch.manual_seed(0)
    detector = tiny(epochs=1, pseudo_anomaly=generator, foreground="full", train_steps=1)
    detector.fit(train)
    assert torch.isfinite(detector(torch.rand(1, 3, 32, 32))).all()


def test_diverged_training_is_an_error_naming_the_options(mvtec_root, fake_generator):
    from robustad.datasets import create_dataset

    train = create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32)
    detector = tiny(epochs=3, lr=1e30)  # the first update blows the weights up: the loss turns inf/nan
    with pytest.raises(FloatingPointError, match="diverged.*epoch .* of 3.*train_precision=fp32"):
        detector.fit(train)


def test_anomaly_size_reaches_the_generator_and_is_checked():
    from robustad.methods.patchguard.detector import build_pseudo_anomaly_generator

    generator = build_pseudo_anomaly_generator(tiny(anomaly_size="0.1,0.6", foreground="full").config)
    assert generator.size_range == (0.1, 0.6)
    generator.set_foreground_maps(torch.ones(4, 64, 64))
    rectangles = generator.sample_rectangles(torch.arange(4).repeat(50), torch.Generator().manual_seed(0))
    assert rectangles.sizes.min() >= 0.1 * 64 and rectangles.sizes.max() <= 0.6 * 64
    assert rectangles.sizes.max() > 0.45 * 64  # the wider range is used, not only the paper's 0.3
    with pytest.raises(ValueError, match="anomaly_size"):
        tiny(anomaly_size="0.4,0.2")
