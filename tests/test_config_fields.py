"""Config domains declared next to the fields (methods/config_fields.py) and refused with a clear message."""
from __future__ import annotations

import dataclasses

import pytest

from robustad.methods import create_method
from robustad.methods.config_fields import ConfigValueError, check_config, in_range, one_of
from robustad.methods.detector import DetectorConfig


@dataclasses.dataclass
class ExampleConfig(DetectorConfig):
    ratio: float = in_range(0.1, low=0, high=1, low_open=True)
    mode: str = one_of("a", ("a", "b"))
    window: tuple = in_range((0.2, 0.4), low=0, high=1, length=2, ordered=True)
    plain: float = 3.0


@pytest.mark.parametrize("overrides, message", [
    (dict(ratio=0.0), r"ratio=0.0: expected a number in \(0, 1\]"),
    (dict(ratio=float("nan")), r"ratio=nan"),
    (dict(mode="c"), r"mode='c': expected one of a, b"),
    (dict(window=(0.5, 0.2)), r"window=\(0.5, 0.2\): expected values in increasing order"),
    (dict(window=(0.5,)), r"expected 2 comma-separated values"),
    (dict(image_size=0), r"image_size=0: expected an integer >= 8"),
    (dict(top_k=0), r"top_k=0: expected an integer >= 1"),
])
def test_a_value_outside_its_domain_names_the_field_value_and_domain(overrides, message):
    with pytest.raises(ConfigValueError, match=message):
        ExampleConfig(**overrides)


def test_numbers_take_the_type_of_the_default_so_equal_settings_compare_equal():
    config = ExampleConfig(ratio=1, window=(0, 1), plain=2)
    assert config == ExampleConfig(ratio=1.0, window=(0.0, 1.0), plain=2.0)
    assert isinstance(config.ratio, float) and all(isinstance(v, float) for v in config.window)
    check_config(config)


def test_create_method_names_the_method_and_the_option():
    with pytest.raises(ValueError, match=r"--config top_k=0 for method 'patchguard': expected an integer >= 1"):
        create_method("patchguard", top_k="0")
    with pytest.raises(ValueError, match=r"--config image_size=60 for method 'patchguard': expected a multiple of"):
        create_method("patchguard", image_size="60")
    with pytest.raises(ValueError, match=r"reg_type='l2'.*expected one of paper, kl"):
        create_method("patchguard", reg_type="l2")
    assert create_method("patchguard", alpha="0").config == create_method("patchguard", alpha="0.0").config


@pytest.mark.parametrize("method", ["patchcore", "simplenet", "draem", "glass", "recontrast", "generalad"])
def test_a_method_without_an_official_preset_takes_its_paper_one(method):
    from robustad.core.profiles import Profile
    from robustad.methods import method_config
    from robustad.methods.registry import resolve_method

    cls = resolve_method(method)
    assert Profile.OFFICIAL not in cls.profiles
    assert method_config(method, "official") == cls.profiles[Profile.PAPER]
    assert method_config(method, "long") == cls.profiles[Profile.QUICK]
