"""Same seed, same model: every method's construction and fit are functions of the cell's seed.

The runner seeds every generator (`robustad.core.seeding.seed_everything`) right before a detector
is built and again before `fit`; methods draw from those generators (or `derived_generator()`).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustad.core.seeding import derived_generator, seed_everything
from robustad.datasets import create_dataset
from robustad.methods import METHODS, create_method
from tests.tiny_configs import tiny_overrides


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def built_and_fitted(name: str, seed: int, root) -> dict[str, torch.Tensor]:
    """The state_dict after the runner's sequence: seed, build, seed, fit."""
    detector = create_method(name, seed=seed, **tiny_overrides(name))
    train = create_dataset("mvtec", root=root, category="alpha", split="train", image_size=detector.image_size)
    torch.rand(7)  # whatever happens between construction and fit must not matter
    seed_everything(seed)
    detector.fit(train)
    return {k: v.detach().clone() for k, v in detector.state_dict().items()}


def differing_keys(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]


def test_construction_follows_the_seed():
    first = create_method("patchguard", seed=3)
    torch.rand(100)
    second = create_method("patchguard", seed=3)
    other = create_method("patchguard", seed=4)
    assert torch.equal(first.net.vit.pos_embed, second.net.vit.pos_embed)
    assert not torch.equal(first.net.vit.pos_embed, other.net.vit.pos_embed)


def test_derived_generator_follows_the_global_seed():
    seed_everything(5)
    a = torch.rand(4, generator=derived_generator())
    seed_everything(5)
    b = torch.rand(4, generator=derived_generator())
    seed_everything(6)
    c = torch.rand(4, generator=derived_generator())
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", METHODS.names())
def test_same_seed_same_state_dict_other_seed_other_one(name, mvtec_root):
    first = built_and_fitted(name, 0, mvtec_root)
    again = built_and_fitted(name, 0, mvtec_root)
    assert differing_keys(first, again) == []
    other = built_and_fitted(name, 1, mvtec_root)
    assert differing_keys(first, other), f"{name}: seeds 0 and 1 gave the same model"


RUN_CELLS = """
import sys
from robustad.bench.cli import main
from tests.tiny_configs import tiny_overrides
root, results, methods = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
for method in methods:
    config = [f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in tiny_overrides(method).items()]
    code = main(["run", "--method", method, "--dataset", "mvtec", "--root", root, "--category", "alpha",
                 "--attack", "pgd", "--steps", "3", "--results", results]
                + [arg for item in config for arg in ("--config", item)])
    assert code == 0, method
"""


def run_in_fresh_process(root, results: Path, methods: list[str]) -> None:
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", RUN_CELLS, str(root), str(results), ",".join(methods)],
                   cwd=repo, check=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
                   capture_output=True, text=True)


def outcome(results: Path) -> dict[str, tuple]:
    """Per method: the record's metrics, and the bytes of its checkpoint."""
    out = {}
    for path in sorted((results / "records").glob("*.json")):
        record = json.loads(path.read_text())
        checkpoint = next((results / "checkpoints" / record["method"]).rglob("*.pt"))
        out[record["method"]] = (record["clean"], record["adversarial"], record["checkpoint_sha256"],
                                 checkpoint.read_bytes())
    return out


def test_two_bench_runs_in_fresh_processes_give_identical_records_and_checkpoints(mvtec_root, tmp_path):
    methods = ["patchguard"] + [n for n in METHODS.names() if n.endswith("-adv")]
    run_in_fresh_process(mvtec_root, tmp_path / "first", methods)
    run_in_fresh_process(mvtec_root, tmp_path / "second", methods)
    first, second = outcome(tmp_path / "first"), outcome(tmp_path / "second")
    assert sorted(first) == sorted(methods)
    for method in methods:
        assert first[method][:3] == second[method][:3], method
        assert first[method][3] == second[method][3], f"{method}: checkpoint bytes differ"
