"""benchmarks/fit_time.py: the per-step breakdown of a PatchGuard fit and its in-place block compile."""
from types import SimpleNamespace

import torch

from tests.benchmark_scripts import load_benchmark


def test_breakdown_covers_the_step_and_scales_to_the_epochs():
    script = load_benchmark("fit_time")
    args = SimpleNamespace(profile="quick", category="brick", seed=0, steps=2, warmup=1)
    overrides = {"vit_depth": "2", "epochs": "7", "train_steps": "2"}
    result = script.time_mode("none", args, overrides, torch.device("cpu"))
    assert all(result[key] > 0 for key in ("pseudo_s", "attack_s", "step_s", "compile_warmup_s"))
    assert result["update_s"] == result["step_s"] - result["attack_s"]
    steps_per_fit = (64 // 16) * 7  # brick's 64 training images, batch 16, 7 epochs
    assert abs(result["fit_estimate_s"] - (result["pseudo_s"] + result["step_s"]) * steps_per_fit) < 1e-9


def test_block_compile_keeps_the_state_dict_and_the_regularized_block_eager():
    from robustad.methods import create_method

    script = load_benchmark("fit_time")
    net = create_method("patchguard", vit_depth=3).net
    keys = list(net.state_dict())
    script.compile_blocks(net, skip=(2,))
    assert list(net.state_dict()) == keys
    compiled = [getattr(block, "_compiled_call_impl", None) is not None for block in net.vit.blocks]
    assert compiled == [True, True, False]
    assert net.head._compiled_call_impl is not None


def test_whole_fits_are_timed_both_ways_and_the_fit_is_left_as_it_was():
    from robustad.methods.patchguard import detector as module

    script = load_benchmark("fit_time")
    original = module.training_batches
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["prefetch"])
        return original(*args, **kwargs)

    module.training_batches = spy
    try:
        args = SimpleNamespace(profile="quick", category="brick", seed=0, fit_epochs=1)
        result = script.time_fits(args, {"vit_depth": "1", "train_steps": "1"}, torch.device("cpu"))
        assert module.training_batches is spy  # put back
    finally:
        module.training_batches = original
    assert calls == [False, False, True]  # warm-up, in place, prefetched: each forced, whatever the device
    assert result["fit_in_place_s"] > 0 and result["fit_prefetched_s"] > 0
    assert result["prefetch_speedup"] == result["fit_in_place_s"] / result["fit_prefetched_s"]
