"""PatchGuard: model, loss (R and the KL variant), adversarial training, config, checkpoints, attention degree."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from robustad.attacks.objectives import FlipLoss, Objective, flip_loss
from robustad.attacks.threat_model import Norm, lp_norm
from robustad.methods import CheckpointMismatchError, create_method
from robustad.methods.patchguard import PatchGuard, PatchGuardConfig
from robustad.methods.patchguard.adversarial_training import (
    IGNORED,
    adversarial_examples,
    detection_rows,
    image_labels,
    patch_labels,
    patchguard_loss,
    training_attack,
    training_batch,
    training_eps,
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
    with pytest.raises(ValueError, match="at least patch_size"):
        tiny(image_size=4, patch_size=8)


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
    weighted = patchguard_loss(detector.net, x, targets, tiny(alpha=0, anomalous_patch_weight=3).config)
    anomalous_bce = torch.nn.functional.binary_cross_entropy_with_logits(detector(x)[0, 1, 1], torch.tensor(1.0))
    assert torch.allclose(weighted - plain, torch.stack([2 * anomalous_bce, torch.tensor(0.0)]), atol=1e-4)


def test_patch_label_rules():
    masks = torch.zeros(1, 1, 32, 32)
    masks[0, 0, 0, 0] = 1  # one pixel of the first 8×8 patch (1/64 < 5%)
    masks[0, 0, 8:16, 8:12] = 1  # half of patch (1, 1)
    fraction = patch_labels(masks, 4, "fraction")
    anything = patch_labels(masks, 4, "any")
    assert fraction[0, 0, 0] == 0 and anything[0, 0, 0] == 1
    assert fraction[0, 1, 1] == 1 and anything[0, 1, 1] == 1
    assert fraction.sum() == 1 and anything.sum() == 2


def test_patch_ignore_band_leaves_partly_covered_patches_out_of_the_loss_and_the_attack_loss():
    masks = torch.zeros(1, 1, 32, 32)
    masks[0, 0, 8:16, 8:10] = 1  # 25% of patch (1, 1)
    masks[0, 0, 16:24, 16:24] = 1  # all of patch (2, 2)
    masks[0, 0, 0:8, 24:30] = 1  # 75% of patch (0, 3)
    targets = patch_labels(masks, 4, "fraction", ignore_up_to=0.25)
    assert targets[0, 1, 1] == IGNORED and targets[0, 2, 2] == 1 and targets[0, 0, 3] == 1
    assert (targets == IGNORED).sum() == 1 and targets[0, 0, 0] == 0
    assert torch.equal(patch_labels(masks, 4, "fraction", ignore_up_to=0.1), patch_labels(masks, 4, "fraction"))

    torch.manual_seed(0)
    detector = tiny(dropout=0.0, alpha=0).eval()
    x = torch.rand(1, 3, 32, 32)
    logits = detector(x)
    kept = torch.ones(1, 4, 4)
    kept[0, 1, 1] = 0
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.clamp_min(0), reduction="none")
    loss = patchguard_loss(detector.net, x, targets, detector.config)
    assert torch.allclose(loss, (bce * kept).sum((1, 2)), atol=1e-4)
    assert not torch.allclose(loss, bce.sum((1, 2)), atol=1e-3)  # the ignored patch had a loss to drop

    flat, cells = logits.flatten(1), targets.flatten(1)
    shown = kept.flatten(1) > 0
    for kind in (FlipLoss.MARGIN, FlipLoss.CE):
        assert torch.allclose(flip_loss(flat, cells, kind), flip_loss(flat[shown][None], cells[shown][None], kind), atol=1e-5)
    _, batch_targets = training_batch(x, x, masks, tiny(patch_ignore_up_to=0.25).config)
    assert torch.equal(batch_targets[1], targets[0]) and (batch_targets[0] == 0).all()
    with pytest.raises(ValueError, match="patch_ignore_up_to"):
        PatchGuardConfig(patch_ignore_up_to=1.5)


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


def test_conv_stem_keeps_the_token_grid_and_the_receptive_field_local():
    from robustad.methods.patchguard.conv_stem import conv_stem

    for patch, size in [(8, 32), (14, 28), (16, 64), (7, 21)]:
        stem = conv_stem(patch, 32)
        assert stem(torch.rand(2, 3, size, size)).shape == (2, 32, size // patch, size // patch)
    torch.manual_seed(0)
    stem = conv_stem(8, 32)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(stem(x)[0, :, 0, 0].sum(), x)
    touched = grad.abs().sum(1)[0] > 0  # the first token sees the top-left corner only (3 convs: ≤ 15 px)
    assert touched[:8, :8].all() and not touched[16:].any() and not touched[:, 16:].any()
    torch.manual_seed(0)
    detector = tiny(patch_embed="conv").eval()
    assert any(isinstance(m, torch.nn.Sequential) and len(m) == 7 for m in detector.net.vit.patch_embed.modules())
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    logits = detector(x)
    assert logits.shape == (2, 4, 4)
    (grad,) = torch.autograd.grad(logits.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="patch_embed='cnn'"):
        tiny(patch_embed="cnn")


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
    del payload["config"]["patch_ignore_up_to"]  # written before the field existed
    torch.save(payload, path)
    tiny().load_checkpoint(path)
    with pytest.raises(CheckpointMismatchError, match="patch_ignore_up_to: checkpoint has 0.0, expected 0.25"):
        tiny(patch_ignore_up_to=0.25).load_checkpoint(path)

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


def test_detection_rows_take_the_same_share_of_normal_images_and_pseudo_anomalies():
    assert not detection_rows(8, 0.0).any()
    assert detection_rows(8, 0.5).tolist() == [True, True, False, False, True, True, False, False]
    assert detection_rows(8, 1.0).all()
    assert detection_rows(6, 0.5).tolist() == [True, True, False, True, True, False]  # round(1.5) = 2


def test_training_attack_on_the_score_raises_normal_and_lowers_anomalous_scores():
    torch.manual_seed(0)
    detector = tiny(train_steps=5, train_detection_share=1.0)
    x = torch.rand(4, 3, 32, 32)
    targets = torch.zeros(4, 4, 4)
    targets[2:, 1:3, 1:3] = 1  # [x; x']: two normal images, two pseudo anomalies
    adv = training_attack(detector, x, targets, detector.config)
    assert (lp_norm(adv - x, Norm.LINF) <= 8 / 255 + 1e-6).all()
    detector.eval()
    with torch.no_grad():
        change = detector.score(detector(adv)) - detector.score(detector(x))
    assert (change[:2] > 0).all() and (change[2:] < 0).all()
    assert image_labels(targets).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_training_attack_with_no_detection_share_is_the_patch_label_attack():
    torch.manual_seed(0)
    detector = tiny(train_steps=3)
    x = torch.rand(4, 3, 32, 32)
    targets = torch.zeros(4, 4, 4)
    targets[2:, :2, :2] = 1
    assert torch.equal(training_attack(detector, x, targets, detector.config),
                       adversarial_examples(detector, x, targets, detector.config))
    detector.config.train_detection_share = 0.5  # rows 0 and 2 on S, rows 1 and 3 on the patch labels
    mixed = training_attack(detector, x, targets, detector.config)
    on_patches = adversarial_examples(detector, x[[1, 3]], targets[[1, 3]], detector.config)
    assert (mixed[[1, 3]] != on_patches).float().mean() < 0.01  # only float noise may differ
    on_score = adversarial_examples(detector, x[[0, 2]], targets[[0, 2]], detector.config, objective=Objective.DETECTION)
    assert (mixed[[0, 2]] != on_score).float().mean() < 0.01


def test_detection_share_outside_pgd_training_or_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="train_detection_share=1.5"):
        PatchGuardConfig(train_detection_share=1.5)
    with pytest.raises(ValueError, match="train_detection_share: only PGD training"):
        PatchGuardConfig(train_detection_share=0.5, train_objective="trades")
    with pytest.raises(ValueError, match="train_detection_share: only PGD training"):
        PatchGuardConfig(train_detection_share=0.5, train_replays=4)


def test_training_random_start_draws_a_new_start_each_call_deterministically():
    x = torch.rand(2, 3, 32, 32)
    targets = torch.zeros(2, 4, 4)

    def two_calls(**overrides):
        torch.manual_seed(0)
        detector = tiny(train_steps=1, train_step_size=1 / 255, **overrides)
        return [adversarial_examples(detector, x, targets, detector.config) for _ in range(2)]

    first, second = two_calls(train_random_start=True)
    again, _ = two_calls(train_random_start=True)
    assert torch.equal(first, again)  # deterministic under torch.manual_seed
    assert (first != second).float().mean() > 0.5  # a new uniform start in each training step
    assert (lp_norm(first - x, Norm.LINF) <= 8 / 255 + 1e-6).all()
    # one step of 1/255 from a uniform start leaves most pixels more than 1/255 from x; from x none
    assert ((first - x).abs() > 1.5 / 255).float().mean() > 0.5
    plain, plain_again = two_calls()
    assert torch.equal(plain, plain_again) and ((plain - x).abs() <= 1 / 255 + 1e-6).all()


def test_pgd_started_where_a_shorter_pgd_ended_continues_it():
    from robustad.attacks.objectives import AttackObjective, FlipLoss, Objective
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


def test_perturbation_memory_round_trips_per_image_and_slot():
    from robustad.methods.patchguard.perturbation_memory import PerturbationMemory

    memory = PerturbationMemory(5, (3, 8, 8))
    index = torch.tensor([4, 1])
    assert torch.equal(memory.recall(index), torch.zeros(4, 3, 8, 8))
    delta = (torch.rand(4, 3, 8, 8) * 2 - 1) * 8 / 255
    memory.store(index, delta)
    assert torch.allclose(memory.recall(index), delta, atol=1e-4)  # float16 storage
    assert torch.allclose(memory.recall(torch.tensor([1])), delta[[1, 3]], atol=1e-4)  # normal, pseudo-anomaly slot
    assert torch.equal(memory.recall(torch.tensor([0, 2, 3])), torch.zeros(6, 3, 8, 8))
    with pytest.raises(ValueError, match="2 perturbations for 2 images"):
        memory.store(index, delta[:2])


def test_training_reuse_perturbation_starts_each_step_where_the_last_ended():
    from robustad.methods.patchguard.adversarial_training import training_step
    from robustad.methods.patchguard.perturbation_memory import PerturbationMemory

    torch.manual_seed(0)
    detector = tiny(train_steps=1, train_step_size=1 / 255, train_reuse_perturbation=True)
    optimizer = torch.optim.SGD(detector.net.parameters(), lr=0.0)  # the model stays the same
    normal = torch.rand(2, 3, 32, 32)
    anomalous, masks = RectangleAnomalies()(normal, None, torch.Generator().manual_seed(0))
    memory = PerturbationMemory(4, (3, 32, 32))
    index = torch.tensor([3, 0])
    sizes = []
    for _ in range(3):
        training_step(detector, optimizer, normal, anomalous, masks, memory=memory, index=index)
        sizes.append(float(memory.recall(index).abs().amax()))
    # one step of 1/255 per training step: the perturbation grows by a step each time
    assert sizes == pytest.approx([1 / 255, 2 / 255, 3 / 255], abs=1e-4)
    assert torch.equal(memory.recall(torch.tensor([1, 2])), torch.zeros(4, 3, 32, 32))  # other images untouched
    with pytest.raises(ValueError, match="train_reuse_perturbation and train_random_start"):
        tiny(train_reuse_perturbation=True, train_random_start=True)


def test_free_training_takes_one_optimizer_and_one_attack_step_per_replay():
    from robustad.methods.patchguard.free_adversarial_training import free_training_step
    from robustad.methods.patchguard.perturbation_memory import PerturbationMemory

    torch.manual_seed(0)
    detector = tiny(train_replays=3, train_step_size=1 / 255, train_reuse_perturbation=True)
    optimizer = torch.optim.AdamW(detector.net.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in detector.net.parameters()]
    normal = torch.rand(2, 3, 32, 32)
    anomalous, masks = RectangleAnomalies()(normal, None, torch.Generator().manual_seed(0))
    memory = PerturbationMemory(2, (3, 32, 32))
    index = torch.tensor([1, 0])
    loss = free_training_step(detector, optimizer, normal, anomalous, masks, memory=memory, index=index)
    assert math.isfinite(loss) and loss > 0
    assert optimizer.state[next(detector.net.parameters())]["step"] == 3  # one update per replay
    assert any(not torch.equal(a, b) for a, b in zip(before, detector.net.parameters()))
    # three ascent steps of 1/255 from x: every pixel moved, none by more than 3/255
    delta = memory.recall(index)
    assert float(delta.abs().amax()) == pytest.approx(3 / 255, abs=1e-4)
    assert (delta.abs() > 0.5 / 255).float().mean() > 0.9
    free_training_step(detector, optimizer, normal, anomalous, masks, memory=memory, index=index)
    assert float(memory.recall(index).abs().amax()) == pytest.approx(6 / 255, abs=1e-4)  # continued, not restarted
    normal_delta = memory.recall(index)[:2]
    with torch.no_grad():  # the ascent raised the normal patches' logits (the flip loss) on the current model
        detector.eval()
        assert detector(normal + normal_delta).mean() > detector(normal).mean()
    with pytest.raises(ValueError, match="train_replays=-1"):
        tiny(train_replays=-1)


@pytest.mark.parametrize("replays", [0, 2])
def test_train_clean_loss_false_trains_on_the_adversarial_examples_only(monkeypatch, replays):
    from robustad.methods.patchguard import adversarial_training, free_adversarial_training

    seen = []
    real_loss = adversarial_training.patchguard_loss

    def recording_loss(net, images, targets, config, **kwargs):
        seen.append((images.detach().clone(), targets.clone()))
        return real_loss(net, images, targets, config, **kwargs)

    monkeypatch.setattr(adversarial_training, "patchguard_loss", recording_loss)
    monkeypatch.setattr(free_adversarial_training, "patchguard_loss", recording_loss)
    step = free_adversarial_training.free_training_step if replays else adversarial_training.training_step
    normal = torch.rand(2, 3, 32, 32)
    anomalous, masks = RectangleAnomalies()(normal, None, torch.Generator().manual_seed(0))
    clean = torch.cat([normal, anomalous])
    for clean_loss in (True, False):
        seen.clear()
        torch.manual_seed(0)
        detector = tiny(train_steps=2, train_replays=replays, train_clean_loss=clean_loss)
        optimizer = torch.optim.AdamW(detector.net.parameters(), lr=1e-3)
        loss = step(detector, optimizer, normal, anomalous, masks)
        images, targets = seen[-1]
        assert math.isfinite(loss) and loss > 0
        assert targets[:2].sum() == 0 and targets[2:4].sum() > 0  # normal, then pseudo-anomaly targets
        if clean_loss:  # eq. 7: [x; x'] then their adversarial examples
            assert len(images) == 8 and torch.equal(images[:4], clean) and torch.equal(targets[4:], targets[:4])
            adversarial = images[4:]
        else:
            assert len(images) == 4
            adversarial = images
        assert (adversarial - clean).abs().amax() <= 8 / 255 + 1e-6
        assert not torch.equal(adversarial, clean)  # free training: the last replay's δ has moved


def test_bernoulli_kl_is_the_patchwise_kl_of_the_anomaly_probabilities():
    from robustad.methods.patchguard.trades_training import bernoulli_kl

    logits = torch.tensor([[[0.0, 2.0], [-1.0, 3.0]]])
    assert float(bernoulli_kl(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    other = torch.tensor([[[1.0, 2.0], [-1.0, -3.0]]])
    p, q = torch.sigmoid(logits), torch.sigmoid(other)
    expected = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).sum()
    assert float(bernoulli_kl(logits, other)) == pytest.approx(float(expected), rel=1e-5)


def test_trades_step_maximizes_the_kl_and_minimizes_clean_loss_plus_beta_kl(monkeypatch):
    from robustad.methods.patchguard import trades_training
    from robustad.methods.patchguard.adversarial_training import patchguard_loss, training_batch

    crafted = []
    real_examples = trades_training.adversarial_examples

    def recording_examples(detector, images, targets, config, eps=None, start=None, loss=None):
        crafted.append((targets.clone(), loss, real_examples(detector, images, targets, config, eps, start, loss)))
        return crafted[-1][2]

    monkeypatch.setattr(trades_training, "adversarial_examples", recording_examples)
    torch.manual_seed(0)
    detector = tiny(train_objective="trades", trades_beta=3.0, dropout=0.0, train_steps=3)
    optimizer = torch.optim.SGD(detector.net.parameters(), lr=0.0)  # the model stays the same
    normal = torch.rand(2, 3, 32, 32)
    anomalous, masks = RectangleAnomalies()(normal, None, torch.Generator().manual_seed(0))
    loss = trades_training.trades_training_step(detector, optimizer, normal, anomalous, masks)
    images, targets = training_batch(normal, anomalous, masks, detector.config)
    soft_targets, attack_loss, adversarial = crafted[-1]
    detector.eval()
    with torch.no_grad():
        clean_logits = detector(images)
        assert torch.allclose(soft_targets, torch.sigmoid(clean_logits), atol=1e-5)  # p(x), eval mode
        assert attack_loss == FlipLoss.CE
        assert (adversarial - images).abs().amax() <= 8 / 255 + 1e-6
        kl_adversarial = trades_training.bernoulli_kl(clean_logits, detector(adversarial))
        kl_noise = trades_training.bernoulli_kl(clean_logits, detector(images + 0.001 * torch.randn_like(images)))
        assert (kl_adversarial > 10 * kl_noise).all()  # the attack found a far larger KL than the start
        detector.train()  # dropout 0: the training pass is deterministic
        per_image = patchguard_loss(detector.net, images, targets, detector.config)
        expected = (per_image + 3.0 * kl_adversarial).view(2, 2).mean(1).sum()
    assert loss == pytest.approx(float(expected), rel=1e-4)
    for clash in (dict(train_replays=2), dict(train_random_start=True), dict(train_clean_loss=False)):
        with pytest.raises(ValueError, match="train_objective=trades"):
            tiny(train_objective="trades", **clash)
    with pytest.raises(ValueError, match="train_objective='madry'"):
        tiny(train_objective="madry")


def test_free_training_fit_runs_and_is_deterministic(mvtec_root, fake_generator):
    from robustad.datasets import create_dataset

    train = create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        detector = tiny(epochs=2, train_replays=2, train_reuse_perturbation=True)
        detector.fit(train)
        weights.append(torch.cat([p.detach().flatten() for p in detector.parameters()]))
    assert torch.equal(weights[0], weights[1])
    torch.manual_seed(0)
    pgd = tiny(epochs=2, train_reuse_perturbation=True)
    pgd.fit(train)
    assert not torch.equal(weights[0], torch.cat([p.detach().flatten() for p in pgd.parameters()]))


def test_eps_warmup_ramps_the_training_eps_then_holds_it():
    config = PatchGuardConfig(epochs=10, eps_warmup=0.5)
    ramp = [training_eps(config, epoch / 10) for epoch in range(10)]
    assert ramp[0] == pytest.approx(config.train_eps / 5)
    assert all(a < b for a, b in zip(ramp[:5], ramp[1:5]))
    assert ramp[4:] == [config.train_eps] * 6
    assert training_eps(PatchGuardConfig(epochs=10), 0.0) == config.train_eps  # off by default
    torch.manual_seed(0)
    detector = tiny(train_steps=3)
    x = torch.rand(2, 3, 32, 32)
    adv = adversarial_examples(detector, x, torch.zeros(2, 4, 4), detector.config, eps=2 / 255)
    assert lp_norm(adv - x, Norm.LINF).max() <= 2 / 255 + 1e-6
    assert lp_norm(adv - x, Norm.LINF).max() > 1.5 / 255  # the full step size of the smaller ε
    with pytest.raises(ValueError, match="eps_warmup"):
        PatchGuardConfig(eps_warmup=1.5)


@pytest.mark.parametrize("objective", [{"train_objective": "pgd"}, {"train_objective": "trades"},
                                       {"train_detection_share": 0.5}], ids=["pgd", "trades", "detection-share"])
def test_tiny_fit_runs_and_is_deterministic(mvtec_root, fake_generator, objective):
    from robustad.datasets import create_dataset

    train = create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        detector = tiny(epochs=1, **objective)
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


def test_fit_reuses_perturbations_from_the_second_epoch_on(mvtec_root, fake_generator):
    from robustad.datasets import create_dataset

    train = create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32)

    def weights(epochs, **overrides):
        torch.manual_seed(0)
        detector = tiny(epochs=epochs, **overrides)
        detector.fit(train)
        return torch.cat([p.detach().flatten() for p in detector.parameters()])

    # first visit: every stored δ is zero, the attack starts at x as without the memory
    assert torch.equal(weights(1), weights(1, train_reuse_perturbation=True))
    assert not torch.equal(weights(2), weights(2, train_reuse_perturbation=True))


def test_fit_with_ema_decay_keeps_the_moving_average_of_the_weights(mvtec_root, fake_generator, monkeypatch):
    import robustad.methods.patchguard.detector as detector_module
    from robustad.datasets import create_dataset

    train = create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32)
    after_each_step = []
    real_step = detector_module.training_step

    def recording_step(detector, *args, **kwargs):
        loss = real_step(detector, *args, **kwargs)
        after_each_step.append(torch.cat([p.detach().flatten().clone() for p in detector.net.parameters()]))
        return loss

    monkeypatch.setattr(detector_module, "training_step", recording_step)
    torch.manual_seed(0)
    detector = tiny(epochs=2, ema_decay=0.6)
    detector.fit(train)
    assert len(after_each_step) >= 2
    average = after_each_step[0]
    for weights in after_each_step[1:]:
        average = 0.6 * average + 0.4 * weights
    final = torch.cat([p.detach().flatten() for p in detector.net.parameters()])
    assert torch.allclose(final, average, atol=1e-6)
    assert not torch.allclose(final, after_each_step[-1], atol=1e-6)  # not the last iterate
    with pytest.raises(ValueError, match="ema_decay"):
        PatchGuardConfig(ema_decay=1.0)


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

    from robustad.methods.patchguard.attention_degree import (
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
