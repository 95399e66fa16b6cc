"""The adapted baselines (methods/baselines): every registered variant builds from scratch, fits on the
synthetic tree, gives differentiable maps, round-trips a checkpoint and survives every attack."""

import numpy as np
import pytest
import scipy.ndimage
import torch

from robustad.attacks import ATTACKS, check_inside, create_attack
from robustad.datasets import create_dataset
from robustad.methods import METHODS, create_method
from robustad.methods.baselines.backbones import MissingWeightsError
from robustad.methods.baselines.smoothing import gaussian_blur

from tests.tiny_configs import BASELINES as TINY
from tests.tiny_configs import SIZE, tiny_overrides


def baseline_names():
    return [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("robustad.methods.baselines")]


def tiny(name, **extra):
    return create_method(name, **{**tiny_overrides(name), **extra})


_FITTED = {}


pytestmark = pytest.mark.usefixtures("one_thread")


def fitted(name, root):
    if name not in _FITTED:
        torch.manual_seed(0)
        detector = tiny(name)
        detector.fit(create_dataset("mvtec", root=root, category="alpha", split="train", image_size=SIZE))
        _FITTED[name] = detector
    return _FITTED[name]


@pytest.fixture(scope="module")
def test_batch(mvtec_root):
    test = create_dataset("mvtec", root=mvtec_root, category="alpha", split="test", image_size=SIZE)
    items = [test[i] for i in (0, 1, 6, 7)]  # two normal, two anomalous
    return torch.stack([b["image"] for b in items]), torch.stack([b["mask"] for b in items])


def test_every_family_is_registered_clean_and_adv():
    families = ("patchcore", "simplenet", "draem", "glass", "recontrast", "generalad")
    assert set(baseline_names()) == {*families, *(f"{family}-adv" for family in families)}


@pytest.mark.parametrize("name", baseline_names())
def test_fit_forward_gradient_checkpoint(name, mvtec_root, test_batch, tmp_path):
    detector = fitted(name, mvtec_root)
    images, masks = test_batch
    x = images.clone().requires_grad_(True)
    logits = detector(x)
    assert logits.dim() == 3 and logits.shape[0] == len(images)
    assert torch.isfinite(logits).all()
    scores = detector.score(logits)
    assert scores.shape == (len(images),) and torch.isfinite(scores).all()
    (grad,) = torch.autograd.grad(scores.sum() + logits.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    pixel = detector.anomaly_map(logits.detach(), SIZE)
    assert pixel.shape == (len(images), SIZE, SIZE) and torch.isfinite(pixel).all()

    path = tmp_path / f"{name}.pt"
    detector.save_checkpoint(path)
    restored = tiny(name)
    restored.load_checkpoint(path)
    restored.eval()
    detector.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(images), detector(images))


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("name", baseline_names())
def test_attacks_run_inside_the_ball(name, attack, mvtec_root, test_batch):
    detector = fitted(name, mvtec_root)
    images, masks = test_batch
    flags = [p.requires_grad for p in detector.parameters()]
    for objective in ("localization", "detection"):
        adv = create_attack(attack, eps=8 / 255, steps=2, objective=objective)(detector, images, masks)
        check_inside(adv, images, "linf", 8 / 255)
        assert (adv - images).abs().amax() > 0  # the gradient moved the images
    assert [p.requires_grad for p in detector.parameters()] == flags  # frozen backbones stay frozen


@pytest.mark.slow
@pytest.mark.parametrize("attack", ATTACKS.names())
@pytest.mark.parametrize("name", baseline_names())
def test_every_registered_attack_runs(name, attack, mvtec_root, test_batch):
    detector = fitted(name, mvtec_root)
    images, masks = test_batch
    options = {"autoattack": {"square_queries": 4}}.get(attack, {})  # its Square part ignores `steps`
    adv = create_attack(attack, eps=8 / 255, steps=2, **options)(detector, images[:2], masks[:2])
    check_inside(adv, images[:2], "linf", 8 / 255)


@pytest.mark.parametrize("name", [n for n in baseline_names() if n.removesuffix("-adv") != "draem"])
def test_missing_weights_name_the_options(name, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    family = name.removesuffix("-adv")
    kwargs = {k: v for k, v in TINY[family].items() if k in ("backbone", "vit_depth", "vit_patch_size", "blocks")}
    with pytest.raises(MissingWeightsError) as err:
        create_method(name, **kwargs)
    text = str(err.value)
    assert "backbone_init=scratch" in text and "backbone_weights=" in text
    if name.endswith("-adv"):
        assert "robustbench:" in text


def test_backbone_weights_from_a_file_with_prefixes(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    state = {f"module.model.{k}": v for k, v in reference.state_dict().items()}
    state["module.normalizer.mean"] = torch.zeros(3)
    torch.save({"model": state}, tmp_path / "robust.pt")
    detector = create_method("patchcore", backbone="resnet18", backbone_weights=str(tmp_path / "robust.pt"),
                             image_size=SIZE, pretrain_dim=64, target_dim=64)
    loaded = detector.features.extractor.stages["layer2"][0].conv1.weight
    torch.testing.assert_close(loaded, reference.layer2[0].conv1.weight)

    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "wrong.pt")
    with pytest.raises(MissingWeightsError, match="do not fit"):
        create_method("patchcore", backbone="resnet18", backbone_weights=str(tmp_path / "wrong.pt"))


def test_unknown_backbone_init_is_rejected():
    with pytest.raises(ValueError, match="backbone_init"):
        create_method("patchcore", backbone="resnet18", backbone_init="imagenet")


def test_gaussian_blur_matches_scipy():
    maps = torch.rand(2, 19, 23)
    expected = scipy.ndimage.gaussian_filter(maps.numpy(), sigma=4.0, axes=(1, 2))
    np.testing.assert_allclose(gaussian_blur(maps, 4.0).numpy(), expected, atol=1e-5)


def test_patchcore_memory_bank_and_reweighting(mvtec_root, test_batch):
    detector = fitted("patchcore", mvtec_root)
    grid = (SIZE // 8) ** 2
    assert detector.memory_bank.shape == (round(12 * grid * 0.1), 64)
    images, _ = test_batch
    logits = detector(images)
    reweighted = detector.score(logits)
    plain = detector.score(logits.clone())  # not the tensor forward returned: the official plain max
    torch.testing.assert_close(plain, logits.flatten(1).amax(1))
    assert (reweighted < plain).all() and (reweighted > 0).all()


@pytest.mark.parametrize("name", ["draem", "glass"])
def test_dtd_texture_source_without_dtd_names_the_offline_options(name, mvtec_root):
    detector = tiny(name, texture_source="dtd")
    train = create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=SIZE)
    with pytest.raises(FileNotFoundError, match="texture_source=train"):
        detector.fit(train)


def test_robust_vit_weights_from_a_file(tmp_path):
    import timm

    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=SIZE,
                                  depth=2, patch_size=8)
    torch.save({f"model.{k}": v for k, v in reference.state_dict().items()}, tmp_path / "vit.pt")
    tiny_vit = {k: v for k, v in TINY["generalad"].items() if k in ("backbone", "vit_depth", "vit_patch_size", "blocks")}
    detector = create_method("generalad-adv", image_size=SIZE, backbone_weights=str(tmp_path / "vit.pt"), **tiny_vit)
    torch.testing.assert_close(detector.features.vit.pos_embed, reference.pos_embed)
    torch.testing.assert_close(detector.features.vit.blocks[1].mlp.fc1.weight, reference.blocks[1].mlp.fc1.weight)


@pytest.mark.parametrize("name", ["patchcore", "simplenet", "glass"])
def test_efficientnet_lite0_backbone_loads_the_packaged_imagenet_weights(name, mvtec_root):
    """`backbone=efficientnet_lite0`: the offline pretrained backbone; weights equal the package's file."""
    from robustad.methods import efficientnet_lite0

    file = efficientnet_lite0.weights_file()
    if file is None:
        pytest.skip("efficientnet-lite0 packages not installed")
    reference = torch.load(file, map_location="cpu", weights_only=True)
    family = {k: v for k, v in TINY[name].items() if k != "backbone"}
    detector = create_method(name, image_size=SIZE, backbone="efficientnet_lite0", **family)
    extractor = detector.features.extractor
    torch.testing.assert_close(extractor.stem[0].weight, reference["_conv_stem.weight"])
    torch.testing.assert_close(extractor.blocks[4].state_dict()["_project_conv.weight"],
                               reference["_blocks.4._project_conv.weight"])
    detector.fit(create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=SIZE))
    images = torch.rand(2, 3, SIZE, SIZE, requires_grad=True)
    detector.score(detector(images)).sum().backward()
    assert images.grad.abs().sum() > 0


def test_unknown_cnn_backbone_names_the_choices():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        create_method("simplenet", backbone="vgg16", backbone_init="scratch")


def test_simplenet_noise_relative_scales_with_the_features():
    """σ = noise_std (absolute, the paper's) unless noise_relative asks for a multiple of the feature std."""
    features = 3.0 * torch.randn(500, 64)
    absolute = tiny("simplenet")
    assert absolute.noise_sigma(features) == pytest.approx(0.015)
    relative = tiny("simplenet", noise_relative=0.2)
    assert relative.noise_sigma(features) == pytest.approx(0.2 * float(features.std()))
