"""PatchGuard's ablation variants: GLASS's generator (Table 6), CNN backbones (Table 10), BigBird (Table 11)."""
from __future__ import annotations

import pytest
import torch

from robustad.methods import create_method
from robustad.methods.patchguard.adversarial_training import patchguard_loss
from robustad.methods.patchguard.attention_degree import attention_degree, image_attention_degrees
from robustad.methods.patchguard.attention_regularizer import attention_r, kl_to_uniform
from robustad.methods.patchguard.bigbird import bigbird_block_pattern, global_block_indices

from tests.tiny_configs import PATCHGUARD as TINY

BIGBIRD = dict(attention="bigbird", bigbird_block_size=2, bigbird_random_blocks=1)  # 8 blocks of 2 of 16 patches
RESNET = dict(backbone="resnet50", alpha=0, backbone_init="scratch")
UNET = dict(backbone="unet", alpha=0, unet_width=4, unet_levels=2)


def tiny(**overrides):
    return create_method("patchguard", **{**TINY, **overrides})


def train_set(mvtec_root):
    from robustad.datasets import create_dataset

    return create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32)


def assert_differentiable(detector, logits_shape):
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    logits = detector(x)
    assert logits.shape == logits_shape
    assert detector.score(logits).shape == (2,)
    assert detector.anomaly_map(logits, 32).shape == (2, 32, 32)
    (grad,) = torch.autograd.grad(detector.anomaly_map(logits, 32).sum() + detector.score(logits).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def assert_tiny_fit_changes_the_model(detector, mvtec_root):
    before = torch.cat([p.detach().flatten().clone() for p in detector.parameters()])
    detector.fit(train_set(mvtec_root))
    after = torch.cat([p.detach().flatten() for p in detector.parameters()])
    assert not detector.training and torch.isfinite(after).all() and not torch.equal(before, after)
    assert torch.isfinite(detector(torch.rand(1, 3, 32, 32))).all()


# -- BigBird (Table 11) ------------------------------------------------------------------------------
def test_bigbird_block_pattern_has_window_global_and_random_blocks():
    pattern = bigbird_block_pattern(blocks=8, heads=2, window=3, random=1, global_blocks=2,
                                    generator=torch.Generator().manual_seed(0))
    assert global_block_indices(8, 2) == [0, 7]
    assert pattern[:, [0, 7], :].all() and pattern[:, :, [0, 7]].all()  # global rows and columns
    for query in range(1, 7):
        assert pattern[:, query, query - 1:query + 2].all()  # the window
        # window (3) + the other global blocks + exactly one random block
        expected = len({query - 1, query, query + 1} | {0, 7}) + 1
        assert pattern[:, query].sum(dim=-1).tolist() == [expected, expected]


def test_bigbird_shapes_gradients_and_attention_zero_outside_the_pattern():
    torch.manual_seed(0)
    detector = tiny(**BIGBIRD).eval()
    assert_differentiable(detector, (2, 4, 4))
    _, attention = detector.forward_with_attention(torch.rand(2, 3, 32, 32), (0, 1))
    for layer in (0, 1):
        pattern = detector.net.attention_pattern(layer)
        assert pattern.shape == (2, 16, 16) and not pattern.all()  # sparse
        a = attention[layer]
        assert (a.masked_select(~pattern.expand_as(a)) == 0).all()
        assert (a.masked_select(pattern.expand_as(a)) > 0).all()
        assert torch.allclose(a.sum(-1), torch.ones(2, 2, 16), atol=1e-5)
    # the forward's fused masked attention is what the recorded matrix says
    attn = detector.net.vit.blocks[0].attn
    x = torch.randn(2, 16, 32)
    values = attn.qkv(x).reshape(2, 16, 3, 2, 16)[:, :, 2].transpose(1, 2)  # (B, heads, N, head_dim)
    expected = attn.proj((attn.attention(x) @ values).transpose(1, 2).reshape(2, 16, 32))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_bigbird_random_blocks_are_fixed_per_model_and_saved_with_it(tmp_path):
    torch.manual_seed(0)
    first = tiny(**BIGBIRD)
    torch.manual_seed(0)
    same = tiny(**BIGBIRD)
    torch.manual_seed(1)
    other = tiny(**BIGBIRD)
    pattern = first.net.attention_pattern(0)
    assert torch.equal(pattern, same.net.attention_pattern(0))
    assert not all(torch.equal(other.net.attention_pattern(i), first.net.attention_pattern(i)) for i in (0, 1))
    first.eval()
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(first(x), first(x))  # deterministic: attacks see one model
    first.save_checkpoint(tmp_path / "bigbird.pt")
    other.load_checkpoint(tmp_path / "bigbird.pt")
    assert torch.equal(other.net.attention_pattern(0), pattern)


def test_sparse_attention_degree_and_regularizer_read_the_pattern():
    pattern = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 0, 1]], dtype=torch.bool)
    rows = pattern.sum(-1, keepdim=True).float()
    uniform_over_pattern = (pattern.float() / rows).expand(1, 1, 4, 4)
    assert attention_degree(uniform_over_pattern, pattern=pattern).item() == pytest.approx(rows.mean().item())
    # read densely, the same matrix has a lower degree: entries 1/2 and 1/3 are above 1/4, but 0 is not
    assert attention_degree(uniform_over_pattern).item() == pytest.approx(rows.mean().item())
    identity = torch.eye(4).expand(1, 1, 4, 4)
    assert attention_degree(identity, pattern=pattern | torch.eye(4, dtype=torch.bool)).item() == 1.0
    # R over the pattern: every entry is at the row's uniform value, so all count: R = 1 / rows
    assert attention_r(uniform_over_pattern, delta=1 / 4, pattern=pattern).item() == pytest.approx(1 / 4)
    # ... while the dense reading counts no entry of the 2-entry rows (1/2 > 1/4)
    assert attention_r(uniform_over_pattern, delta=1 / 4).item() > 1 / 4
    assert kl_to_uniform(uniform_over_pattern, pattern).abs().item() < 1e-6
    full = torch.ones(4, 4, dtype=torch.bool)
    a = torch.softmax(torch.randn(2, 3, 4, 4), -1)
    assert torch.allclose(attention_r(a, 0.25, full), attention_r(a, 0.25))
    assert torch.allclose(kl_to_uniform(a, full), kl_to_uniform(a))
    assert torch.allclose(attention_degree(a, pattern=full), attention_degree(a))


def test_bigbird_regularizer_is_used_in_the_loss_and_degrees_come_from_the_model():
    torch.manual_seed(0)
    detector = tiny(**BIGBIRD)
    x, targets = torch.rand(2, 3, 32, 32), torch.zeros(2, 4, 4)
    with_r = patchguard_loss(detector.net.eval(), x, targets, detector.config)
    without = patchguard_loss(detector.net, x, targets, tiny(**BIGBIRD, alpha=0).config)
    assert (with_r > without).all()
    degrees = image_attention_degrees(detector, x)
    _, attention = detector.forward_with_attention(x, (1,))
    assert torch.allclose(degrees, attention_degree(attention[1], pattern=detector.net.attention_pattern(1)))


def test_bigbird_tiny_fit(mvtec_root):
    torch.manual_seed(0)
    assert_tiny_fit_changes_the_model(tiny(**BIGBIRD, epochs=1, train_steps=1, pseudo_anomaly="ours",
                                           foreground="full"), mvtec_root)


def test_bigbird_config_is_checked():
    with pytest.raises(ValueError, match="bigbird_block_size"):
        tiny(attention="bigbird", bigbird_block_size=3)
    with pytest.raises(ValueError, match="bigbird_window_blocks"):
        tiny(attention="bigbird", bigbird_block_size=2, bigbird_window_blocks=2)


# -- ResNet-50 on patches (Table 10) -----------------------------------------------------------------
def test_resnet50_shapes_gradients_and_independent_patches():
    torch.manual_seed(0)
    detector = tiny(**RESNET, resnet_width=64).eval()
    assert detector.net.classifier.in_features == 2048  # torchvision's ResNet-50
    assert_differentiable(detector, (2, 4, 4))
    x = torch.rand(1, 3, 32, 32)
    changed = x.clone()
    changed[:, :, 8:16, 16:24] = torch.rand(1, 3, 8, 8)  # patch (row 1, column 2)
    difference = (detector(changed) - detector(x)).abs()[0]
    assert difference[1, 2] > 0
    difference[1, 2] = 0
    assert (difference == 0).all()  # every other patch's score is unchanged: scored independently


def test_resnet50_tiny_fit(mvtec_root):
    # ResNet-50's blocks at 4 channels in the first stage, so that a fit takes seconds
    torch.manual_seed(0)
    detector = tiny(**RESNET, resnet_width=4, epochs=1, train_steps=1, foreground="full")
    assert detector.net.classifier.in_features == 4 * 8 * 4  # last stage: 8× the width, bottleneck expansion 4
    assert_tiny_fit_changes_the_model(detector, mvtec_root)


def test_narrow_resnet50_has_resnet50s_blocks_and_refuses_imagenet_weights():
    from timm.models.resnet import Bottleneck

    quick = create_method("patchguard", profile="quick", backbone="resnet50", alpha=0)
    stages = quick.net.features.stages
    assert [len(stages[f"layer{i}"]) for i in range(1, 5)] == [3, 4, 6, 3]
    assert all(isinstance(block, Bottleneck) for stage in stages.values() for block in stage)
    assert quick.config.resnet_width == 16 and quick.net.classifier.in_features == 512
    with pytest.raises(ValueError, match="resnet_width.*backbone_init=scratch"):
        tiny(**{**RESNET, "backbone_init": "pretrained", "resnet_width": 16})


def test_cnn_backbones_refuse_the_attention_regularizer_and_attention():
    for backbone in ("resnet50", "unet"):
        with pytest.raises(ValueError, match="alpha=0"):
            tiny(backbone=backbone, backbone_init="scratch")
        with pytest.raises(ValueError, match="attention"):
            tiny(backbone=backbone, alpha=0, attention="bigbird", bigbird_block_size=2)
    detector = tiny(**UNET)
    with pytest.raises(ValueError, match="no attention"):
        detector.forward_with_attention(torch.rand(1, 3, 32, 32), (0,))


def test_resnet50_pretrained_weights_missing_is_a_clear_error(tmp_path, monkeypatch):
    from robustad.methods.patchguard import PatchGuard

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    config = tiny(**RESNET, resnet_width=64).config
    config.backbone_init = "pretrained"
    with pytest.raises(ValueError, match="resnet50-0676ba61.pth"):
        PatchGuard.check_before_run(config, "mvtec", ["bottle"])
    config.backbone_weights = str(tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="absent.pth"):
        PatchGuard.check_before_run(config, "mvtec", ["bottle"])
    with pytest.raises(RuntimeError, match="absent.pth"):
        tiny(**{**RESNET, "resnet_width": 64, "backbone_init": "pretrained",
                "backbone_weights": str(tmp_path / "absent.pth")})


# -- U-Net (Table 10) ---------------------------------------------------------------------------------
def test_unet_shapes_gradients_and_top_p_score():
    torch.manual_seed(0)
    detector = tiny(**UNET).eval()
    assert_differentiable(detector, (2, 32, 32))
    logits = torch.randn(3, 32, 32)
    # p = k/N: top_k = 5 of N = 16 patches is 5/16 of 1024 pixels = 320 pixels
    expected = logits.flatten(1).sort(dim=1, descending=True).values[:, :320].mean(1)
    assert torch.allclose(detector.score(logits), expected)


def test_unet_loss_has_the_patch_sums_scale():
    torch.manual_seed(0)
    detector = tiny(**UNET)
    x = torch.rand(2, 3, 32, 32)
    zero_logits_loss = patchguard_loss(lambda images: torch.zeros(2, 32, 32), x, torch.zeros(2, 32, 32),
                                       detector.config)
    # BCE(0, 0) = log 2 per unit; 16 patches' worth, whatever the number of pixels
    assert torch.allclose(zero_logits_loss, torch.full((2,), 16 * torch.log(torch.tensor(2.0)).item()))


def test_unet_tiny_fit(mvtec_root):
    torch.manual_seed(0)
    assert_tiny_fit_changes_the_model(tiny(**UNET, epochs=1, train_steps=1, foreground="full"), mvtec_root)


# -- GLASS's local anomaly synthesis (Table 6) --------------------------------------------------------
def test_glass_generator_masks_are_exact_and_inside_the_foreground():
    from robustad.methods.patchguard.pseudo_anomalies import create_pseudo_anomaly_generator

    images = torch.rand(6, 3, 32, 32)
    generator = create_pseudo_anomaly_generator("glass", foreground="full", texture_source="procedural")
    generator.set_training_images(images)
    foreground = torch.zeros(6, 32, 32)
    foreground[:, 8:24, 4:20] = 1
    generator.set_foreground_maps(foreground)
    anomalous, masks = generator(images, torch.arange(6), torch.Generator().manual_seed(0))
    assert anomalous.shape == images.shape and masks.shape == (6, 1, 32, 32)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks.flatten(1).sum(1) > 0).all()  # never empty
    assert (masks[:, 0] <= foreground).all()  # only on the foreground
    outside = masks.expand_as(images) == 0
    assert torch.equal(anomalous[outside], images[outside])
    assert (anomalous - images).abs().amax() > 0.05 and anomalous.min() >= 0 and anomalous.max() <= 1
    again, again_masks = generator(images, torch.arange(6), torch.Generator().manual_seed(0))
    assert torch.equal(again, anomalous) and torch.equal(again_masks, masks)


def test_glass_generator_tiny_fit(mvtec_root):
    torch.manual_seed(0)
    detector = tiny(pseudo_anomaly="glass", texture_source="train", foreground="full", epochs=1, train_steps=1)
    assert_tiny_fit_changes_the_model(detector, mvtec_root)
    assert_differentiable(detector.eval(), (2, 4, 4))


def test_glass_generator_without_dtd_is_refused_before_training(tmp_path):
    from robustad.methods.patchguard import PatchGuard

    config = tiny(pseudo_anomaly="glass", texture_source="dtd").config
    with pytest.raises(ValueError, match="dtd_root"):
        PatchGuard.check_before_run(config, "mvtec", ["bottle"])
    (tmp_path / "banded").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "banded" / "banded_0001.jpg")
    config.dtd_root = str(tmp_path)
    PatchGuard.check_before_run(config, "mvtec", ["bottle"])
