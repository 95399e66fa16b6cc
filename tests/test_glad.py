"""GLAD at the quick profile (tiny random diffusers models and ViT, built in code): the plumbing, not accuracy."""
import dataclasses

import pytest
import torch

from robustad.methods import METHODS, NonDifferentiable, bpda_enabled, create_method
from robustad.methods.glad.config import OFFICIAL_CLASS_VALUES, PROFILES, resolve
from robustad.methods.glad.detector import GLAD
from robustad.methods.glad.reconstruction import ddim_timesteps
from robustad.methods.glad.scoring import object_mask, otsu_threshold
from robustad.core.profiles import Profile

pytest.importorskip("diffusers", reason="GLAD needs the `glad` extra (part of `dev`)")


def quick(seed=0, **overrides):
    return create_method("glad", profile="quick", seed=seed, **overrides)


def test_glad_is_registered_and_declares_randomness():
    assert "glad" in METHODS.names() and GLAD.randomized is True
    assert quick().randomized is True and quick(deterministic=True).randomized is False


def test_shapes_and_gradients_reach_the_pixels():
    detector = quick().eval()
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    maps = detector(images)
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()
    assert detector.score(maps).shape == (2,)
    maps.sum().backward()
    per_image = images.grad.flatten(1).abs().amax(1)
    assert torch.isfinite(images.grad).all() and (per_image > 0).all()


def test_randomized_forward_differs_and_deterministic_mode_repeats_per_image():
    images = torch.rand(2, 3, 32, 32)
    noisy = quick().eval()
    with torch.no_grad():
        assert (noisy(images) - noisy(images)).abs().max() > 1e-6
    fixed = quick(deterministic=True).eval()
    with torch.no_grad():
        first, second = fixed(images), fixed(images)
        alone = fixed(images[1:])  # the same image gets the same draws wherever it sits in the batch
    assert torch.equal(first, second)
    torch.testing.assert_close(alone[0], first[1], rtol=1e-4, atol=1e-5)


def test_fit_fine_tunes_the_unet_only(mvtec_root):
    from robustad.datasets import create_dataset

    detector = quick(train_steps=2, batch_size=2)
    train = create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32)
    unet_before = [p.detach().clone() for p in detector.unet.parameters()]
    vae_before = [p.detach().clone() for p in detector.vae.parameters()]
    detector.fit(train)
    assert len(detector.train_losses) == 2 and all(torch.isfinite(torch.tensor(detector.train_losses)))
    assert any(not torch.equal(a, b) for a, b in zip(unet_before, detector.unet.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(vae_before, detector.vae.parameters()))
    assert not detector.training and not detector.vae.training


def test_bpda_passes_the_otsu_mask_and_branch_gradients():
    """The object mask and the adaptive branch are NonDifferentiable: BPDA adds their identity gradients."""
    detector = quick(deterministic=True, foreground="dark", input_threshold=0.01).eval()
    assert isinstance(detector.foreground, NonDifferentiable) and isinstance(detector.ddim.branch, NonDifferentiable)
    images = torch.rand(1, 3, 32, 32)
    grads = []
    for bpda in (False, True):
        x = images.clone().requires_grad_(True)
        with bpda_enabled(bpda):
            values = detector(x)
            values.sum().backward()
        grads.append((values.detach(), x.grad))
    assert torch.equal(grads[0][0], grads[1][0])  # the forward value does not change
    assert not torch.allclose(grads[0][1], grads[1][1])


def test_otsu_separates_a_dark_object_from_a_light_background():
    grey = torch.full((1, 1, 128, 128), 0.8)
    grey[..., 60:70, 60:70] = 0.2
    threshold = otsu_threshold(grey * 255)
    assert 0.2 * 255 <= float(threshold) < 0.8 * 255
    mask = object_mask(grey, "dark")  # dilated by the σ = 6 filter (about 24 px), then smoothed
    assert mask[0, 0, 65, 65] > 0.99 and mask[0, 0, 0, 0] < 0.01
    assert object_mask(grey, "light")[0, 0, 0, 0] > 0.99


def test_paper_profile_takes_the_official_per_class_values_unless_given():
    paper = PROFILES[Profile.PAPER]
    capsule = resolve(dataclasses.replace(paper, **GLAD.cell_overrides({}, "mvtec", "capsule")))
    assert (capsule.denoise_step, capsule.input_threshold, capsule.min_step, capsule.train_steps) == (600, 0.4, 350, 2000)
    assert capsule.inference_steps == 25
    candle = resolve(dataclasses.replace(paper, **GLAD.cell_overrides({}, "visa", "candle")))
    assert (candle.pixel_weight, candle.inference_steps) == (7, 15)
    given = resolve(dataclasses.replace(paper, **GLAD.cell_overrides({"denoise_step": 300}, "mvtec", "capsule")))
    assert given.denoise_step == 300 and given.input_threshold == 0.4
    assert len(OFFICIAL_CLASS_VALUES["mvtec"]) == 15
    with pytest.raises(ValueError, match="class_values=given"):
        resolve(dataclasses.replace(paper, class_values="given"))


def test_ddim_timesteps_follow_the_official_leading_spacing():
    steps, stride = ddim_timesteps(750, 25)
    assert stride == 30 and steps[0] == 721 and steps[-1] == 1 and len(steps) == 25


def test_missing_stable_diffusion_weights_are_named_before_training(tmp_path):
    config = dataclasses.replace(PROFILES[Profile.PAPER], sd_weights=str(tmp_path / "sd-v1-4"))
    with pytest.raises(ValueError, match="sd_weights=.*sd-v1-4.*unet"):
        GLAD.check_before_run(config, "mvtec", ["bottle"])
    with pytest.raises(RuntimeError, match="stable-diffusion-v1-4"):
        create_method("glad", profile="paper", sd_weights=str(tmp_path / "sd-v1-4"))
