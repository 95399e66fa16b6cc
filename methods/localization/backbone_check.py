"""A pre-flight check of the CNN backbone weights a config names (the `check_before_run` hook's part).

A run that would stop at construction or after training for want of weights stops before any work
instead, with the message of `backbones.py` naming the `--config` options and the file.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from robustad.methods.baselines.backbones import (EFFICIENTNET, BackboneConfig, MissingWeightsError, build_cnn,
                                                   cached_torchvision_file, options_message)


def check_backbone_weights(method: str, config: BackboneConfig, stages=("layer1",)) -> None:
    """Raises a ValueError (the hook's contract) when"""
    try:
        _check(method, config, stages)
    except MissingWeightsError as err:
        raise ValueError(str(err)) from err


def _check(method: str, config: BackboneConfig, stages) -> None:
    """Raises MissingWeightsError when the pretrained weights are absent, or the given file is missing or
    does not fit `config.backbone` (loaded into a scratch copy of the extractor to find out)."""
    source = config.backbone_weights.strip()
    if config.backbone_init != "pretrained" or (config.backbone == EFFICIENTNET and not source):
        return  # scratch weights, or the weights that ship with the EfficientNet-Lite0 package
    if not source:
        if config.robust_backbone or cached_torchvision_file(config.backbone) is None:
            raise MissingWeightsError(options_message(method, config))
        return
    if not source.startswith("robustbench:") and not Path(source).expanduser().is_file():
        raise MissingWeightsError(f"--config backbone_weights={source} for method {method!r}: no such file "
                                  f"(expected a state dict of {config.backbone})")
    probe = build_cnn(method, dataclasses.replace(config, backbone_init="scratch"), tuple(stages))
    probe.load_pretrained(method, config)  # raises MissingWeightsError naming the file when it does not fit
