"""benchmarks/textures_defect_generator.py: the textures test defects as a pseudo-anomaly generator (a diagnostic)."""
import pytest
import torch

from tests.benchmark_scripts import load_benchmark


def brick_like_images(count: int, size: int = 32, grey: bool = True) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    base = 0.3 + 0.4 * torch.rand(count, 1 if grey else 3, size, size, generator=generator)
    return base.expand(-1, 3, -1, -1).contiguous() if grey else base


@pytest.mark.parametrize("grey", [True, False])
def test_defects_change_the_images_inside_their_masks(grey):
    generator = load_benchmark("textures_defect_generator").TestDefectGenerator("brick", draw_size=64)
    images = brick_like_images(6, grey=grey)
    generator.prepare(images)
    out, masks = generator(images, torch.arange(6), torch.Generator().manual_seed(3))
    assert out.shape == images.shape and masks.shape == (6, 1, 32, 32)
    assert out.min() >= 0 and out.max() <= 1
    assert set(masks.unique().tolist()) <= {0.0, 1.0} and (masks.flatten(1).sum(1) > 0).all()
    change = (out - images).abs().amax(1)
    inside = change[masks[:, 0] == 1].mean()
    outside = change[masks[:, 0] == 0].mean()
    assert inside > 0.03 and inside > 10 * outside  # a defect, not noise over the image
    if grey:  # a grey surface stays grey, as in the dataset
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_defects_are_deterministic_given_the_generator():
    generator = load_benchmark("textures_defect_generator").TestDefectGenerator("brick", draw_size=64)
    images = brick_like_images(4)
    first = generator(images, torch.arange(4), torch.Generator().manual_seed(5))
    again = generator(images, torch.arange(4), torch.Generator().manual_seed(5))
    other = generator(images, torch.arange(4), torch.Generator().manual_seed(6))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_bad_category_or_kind_is_refused():
    module = load_benchmark("textures_defect_generator")
    with pytest.raises(ValueError, match="category 'carpet' is not a textures category"):
        module.TestDefectGenerator("carpet")
    with pytest.raises(ValueError, match="kinds \\['dent'\\]"):
        module.TestDefectGenerator("brick", kinds=("dent",))


def test_acceptance_script_trains_patchguard_on_the_test_defects(monkeypatch):
    from robustad.methods.patchguard import detector

    monkeypatch.setattr(detector, "build_pseudo_anomaly_generator", detector.build_pseudo_anomaly_generator)
    load_benchmark("patchguard_acceptance").train_on_test_defects("grass")
    generator = detector.build_pseudo_anomaly_generator(detector.PatchGuardConfig())
    assert type(generator).__name__ == "TestDefectGenerator" and len(generator.donors) == 4


class Constant:
    """A stand-in generator: adds `value` everywhere, mask all ones (or all zeros for value 0)."""

    def __init__(self, value: float):
        self.value = value

    def prepare(self, images):
        pass

    def __call__(self, images, indices, generator):
        torch.rand(1, generator=generator)  # consumes the generator, as a real one does
        return images + self.value, torch.full((len(images), 1, *images.shape[-2:]), float(self.value > 0))


def test_mixed_generator_gives_each_image_one_generators_anomaly_and_mask():
    module = load_benchmark("textures_defect_generator")
    images = torch.zeros(64, 3, 4, 4)
    out, masks = module.MixedGenerator(Constant(0.5), Constant(0.0))(images, torch.arange(64), torch.Generator().manual_seed(0))
    first = out.flatten(1).amax(1) == 0.5
    assert torch.equal(masks.flatten(1).amax(1) == 1, first)  # image and mask from the same generator
    assert 16 < int(first.sum()) < 48  # even odds
    for share, expected in ((1.0, 0.5), (0.0, 0.0)):
        out, _ = module.MixedGenerator(Constant(0.5), Constant(0.0), share)(images, torch.arange(64), torch.Generator())
        assert bool((out == expected).all())
    with pytest.raises(ValueError, match="share 2"):
        module.MixedGenerator(Constant(0.5), Constant(0.0), 2)


def test_acceptance_script_mixes_the_test_defects_with_the_configured_generator(monkeypatch):
    from robustad.methods.patchguard import detector

    monkeypatch.setattr(detector, "build_pseudo_anomaly_generator", detector.build_pseudo_anomaly_generator)
    load_benchmark("patchguard_acceptance").train_on_test_defects("brick", mixed=True)
    generator = detector.build_pseudo_anomaly_generator(detector.PatchGuardConfig(foreground="full"))
    assert type(generator).__name__ == "MixedGenerator"
    assert type(generator.first).__name__ == "TestDefectGenerator"
    assert type(generator.second).__name__ == "ForegroundAwareGenerator"
