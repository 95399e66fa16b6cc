"""PatchGuard `arch=official`: equivalence with the official code, released weights, bad weight files.

The fixture tests/fixtures/patchguard_official_tiny/ was written by
`benchmarks/official_equivalence.py --size full tiny --fixture ...` from the official code
(rohban-lab/PatchGuard, timm 1.0.15): a tiny official model's state_dict, its inputs and outputs,
and the full-size official module's state_dict keys and shapes.
"""
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from robustad.methods import create_method
from robustad.methods.patchguard.released_weights import ReleasedWeightsError
from tests.benchmark_scripts import load_benchmark

equivalence = load_benchmark("official_equivalence")
EPS, STEPS, TINY, compare = equivalence.EPS, equivalence.STEPS, equivalence.TINY, equivalence.compare

FIXTURE = Path(__file__).parent / "fixtures" / "patchguard_official_tiny"
STATE = FIXTURE / "state_dict.pth"


def tiny(**overrides):
    return create_method("patchguard", profile="official", **{**TINY, **overrides})


def test_fixture_is_small():
    assert sum(p.stat().st_size for p in FIXTURE.iterdir()) < 1 << 20


def test_full_size_network_has_the_official_modules_keys_and_shapes():
    expected = json.loads((FIXTURE / "full_state_dict_shapes.json").read_text())
    ours = {k: list(v.shape) for k, v in create_method("patchguard", profile="official").net.state_dict().items()}
    assert ours == expected


def test_official_profile_is_the_official_code():
    config = create_method("patchguard", profile="official").config
    assert (config.arch, config.image_size, config.patch_size, config.vit_embed_dim, config.vit_depth) == \
        ("official", 224, 14, 384, 12)
    assert (config.layer_scale_init, config.feature_layers, config.disc_heads, config.disc_mlp_dim) == \
        (1e-5, (12,), 4, 2048)
    assert (config.reg_type, config.reg_layers, config.kl_weights) == ("kl", (6, 9, 12), (0.005, 0.01, 0.05))
    assert (config.patch_label_rule, config.top_k, config.weight_decay, config.epochs, config.lr) == \
        ("any", 3, 0.01, 1000, 8e-4)
    assert config.pseudo_anomaly == "official"
    paper = create_method("patchguard", profile="paper").config
    assert (paper.arch, paper.top_k, paper.pseudo_anomaly) == ("robustad", 5, "ours")


def test_official_weights_give_the_official_logits_aurocs_and_pgd_images():
    result = compare(FIXTURE)
    assert result["logits_max_abs_diff"] < 1e-5
    assert result["image_auroc"]["robustad"] == pytest.approx(result["image_auroc"]["official"], abs=1e-9)
    assert result["pixel_auroc"]["robustad"] == pytest.approx(result["pixel_auroc"]["official"], abs=1e-6)
    assert result["pgd"]["adversarial_max_abs_diff"] < 1e-5
    assert (result["pgd"]["eps"], result["pgd"]["steps"]) == (EPS, STEPS)


def test_a_differently_initialized_network_gives_other_logits():
    official = torch.load(FIXTURE / "outputs.pt", weights_only=True)
    torch.manual_seed(123)
    with torch.no_grad():
        logits = tiny().eval()(official["images"]).flatten(1)
    assert (logits - official["logits"]).abs().max() > 1e-2


def test_released_weights_are_recorded_and_fit_is_refused(tmp_path):
    detector = tiny(weights=str(STATE))
    info = detector.released_weights
    assert len(info["sha256"]) == 64 and "authors" in info["source"] and info["path"].endswith("state_dict.pth")
    assert not detector.training
    with pytest.raises(RuntimeError, match="released weights"):
        detector.fit([])


# -- bad weight files ------------------------------------------------------------------------------
class Payload:
    def __reduce__(self):
        return (os.makedirs, (str(Payload.target),))


def test_a_malicious_pickle_is_refused_not_executed(tmp_path):
    Payload.target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        pickle.dump({"w": Payload()}, f)
    with pytest.raises(ReleasedWeightsError, match=r"evil\.pth.*refused, not executed"):
        tiny(weights=str(path))
    assert not Payload.target.exists()


def test_a_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "cut.pth"
    path.write_bytes(STATE.read_bytes()[:2000])
    with pytest.raises(ReleasedWeightsError, match=r"cut\.pth.*cannot be read"):
        tiny(weights=str(path))


@pytest.mark.parametrize("payload, expected", [
    ([torch.zeros(1)], "holds list"),
    ({"a": "text"}, "dict of other values"),
    ({"method": "patchguard", "state_dict": {}, "config": {}}, "a robustad checkpoint"),
])
def test_not_a_state_dict(tmp_path, payload, expected):
    path = tmp_path / "other.pth"
    torch.save(payload, path)
    with pytest.raises(ReleasedWeightsError, match=rf"other\.pth.*{expected}"):
        tiny(weights=str(path))


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = torch.load(STATE, weights_only=True)
    state.pop("discriminator.positional_encodings")
    state["discriminator.extra"] = torch.zeros(1)
    path = tmp_path / "keys.pth"
    torch.save(state, path)
    with pytest.raises(ReleasedWeightsError) as err:
        tiny(weights=str(path))
    text = str(err.value)
    assert "keys.pth" in text and "missing keys: discriminator.positional_encodings" in text
    assert "unexpected keys: discriminator.extra" in text and "--profile official" in text


def test_mis_shaped_keys_name_the_key_and_the_options(tmp_path):
    # the tiny file into the tiny network at another image size: the position embeddings differ
    with pytest.raises(ReleasedWeightsError) as err:
        tiny(weights=str(STATE), image_size=42)
    text = str(err.value)
    assert "mis-shaped keys: discriminator.positional_encodings file (4, 24) vs network (9, 24)" in text
    assert "image_size" in text and "state_dict.pth" in text


def test_the_full_network_refuses_the_tiny_file():
    with pytest.raises(ReleasedWeightsError, match=r"missing keys: .*blocks\.10.*mis-shaped keys: discriminator"):
        create_method("patchguard", profile="official", weights=str(STATE))


def test_a_folder_or_a_missing_file_is_refused(tmp_path):
    with pytest.raises(ReleasedWeightsError, match="a folder"):
        tiny(weights=str(tmp_path))
    with pytest.raises(ReleasedWeightsError, match="no such file"):
        tiny(weights=str(tmp_path / "absent.pth"))


def test_weights_need_the_official_network():
    with pytest.raises(ValueError, match="weights.*arch=official"):
        create_method("patchguard", profile="quick", weights=str(STATE))


# -- the runner ------------------------------------------------------------------------------------
def tiny_config_items():
    items = []
    for key, value in TINY.items():
        text = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
        items += ["--config", f"{key}={text}"]
    return items


def test_bench_run_evaluates_released_weights_per_category_without_training(mvtec_root, tmp_path):
    from robustad.bench.cli import main
    from robustad.bench.results.records import Record

    weights = tmp_path / "weights"
    weights.mkdir()
    for category in ("alpha", "beta"):
        (weights / f"patchguard_mvtec_{category}.pth").write_bytes(STATE.read_bytes())
    results = tmp_path / "results"
    code = main(["run", "--method", "patchguard", "--profile", "official", "--dataset", "mvtec", "--root",
                 str(mvtec_root), "--category", "all", "--attack", "pgd", "--steps", "2", "--results", str(results),
                 "--config", f"weights={weights}", *tiny_config_items()])
    assert code == 0
    records = [Record.from_json(json.loads(p.read_text())) for p in (results / "records").glob("*.json")]
    assert sorted(r.category for r in records) == ["alpha", "beta"]
    for record in records:
        assert record.error is None
        assert record.weights["sha256"] == records[0].weights["sha256"] and "authors" in record.weights["source"]
        assert record.weights["path"].endswith(f"patchguard_mvtec_{record.category}.pth")
        assert record.seconds["fit"] == 0 and record.checkpoint_sha256 is None
    assert not list(results.rglob("*.pt"))  # no checkpoint trained or saved


def test_bench_run_names_missing_category_files_before_anything_runs(mvtec_root, tmp_path, capsys):
    from robustad.bench.cli import main

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "patchguard_mvtec_alpha.pth").write_bytes(STATE.read_bytes())
    results = tmp_path / "results"
    code = main(["run", "--method", "patchguard", "--profile", "official", "--dataset", "mvtec", "--root",
                 str(mvtec_root), "--category", "all", "--results", str(results), "--config", f"weights={weights}",
                 *tiny_config_items()])
    assert code != 0
    assert "patchguard_mvtec_beta.pth" in capsys.readouterr().err
    assert not (results / "records").exists()


# -- the official recipe ---------------------------------------------------------------------------
def test_regularized_attention_drops_the_class_token():
    detector = tiny().eval()
    logits, attention = detector.forward_with_attention(torch.rand(2, 3, 28, 28), (0, 1))
    assert logits.shape == (2, 2, 2)
    assert {k: tuple(v.shape) for k, v in attention.items()} == {0: (2, 2, 4, 4), 1: (2, 2, 4, 4)}
    assert bool((attention[0].sum(-1) < 1).all())  # the class token's column is gone, as in the official loss


def test_attention_of_blocks_after_the_last_feature_layer_is_refused():
    with pytest.raises(ValueError, match="reg_layers"):
        tiny(feature_layers=(1,), reg_layers=(2,))


def test_the_official_recipe_trains_the_official_network(mvtec_root):
    from robustad.datasets import create_dataset

    train = create_dataset("mvtec", root=str(mvtec_root), category="alpha", split="train", image_size=28)
    torch.manual_seed(0)
    detector = tiny(epochs=2, batch_size=4, train_steps=2)
    assert detector.config.train_attack_mode == "train" and detector.config.pseudo_anomaly == "official"
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    detector.fit(train)
    changed = [k for k, v in detector.state_dict().items() if not torch.equal(v, before[k])]
    assert any(".blocks.0." in k for k in changed) and any(k.startswith("net.discriminator") for k in changed)
    assert not detector.training


def test_one_weights_file_for_several_categories_is_refused(mvtec_root, tmp_path, capsys):
    from robustad.bench.cli import main

    code = main(["run", "--method", "patchguard", "--profile", "official", "--dataset", "mvtec", "--root",
                 str(mvtec_root), "--category", "alpha,beta", "--results", str(tmp_path / "r"),
                 "--config", f"weights={STATE}", *tiny_config_items()])
    assert code != 0
    assert "one file for 2 categories" in capsys.readouterr().err
    assert not (tmp_path / "r" / "records").exists()


def test_the_cost_estimate_has_no_fit_for_given_weights(mvtec_root):
    from robustad.bench.run.cost import CostModel
    from robustad.bench.run.jobs import make_groups
    from robustad.bench.runner import CellSpec

    spec = CellSpec(method="patchguard", dataset="mvtec", category="alpha", root=str(mvtec_root), profile="official",
                    config=tuple({**TINY, "weights": str(STATE)}.items()), attack="pgd-2")
    (group,) = make_groups([spec])
    assert CostModel().estimate(group, prior_only=True).fit_s == 0


def test_a_bad_weights_file_leaves_only_its_error_record(mvtec_root, tmp_path):
    from robustad.bench.cli import main
    from robustad.bench.results.records import Record

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "patchguard_mvtec_alpha.pth").write_bytes(STATE.read_bytes()[:3000])
    results = tmp_path / "results"
    code = main(["run", "--method", "patchguard", "--profile", "official", "--dataset", "mvtec", "--root",
                 str(mvtec_root), "--category", "alpha", "--attack", "pgd-2", "--results", str(results),
                 "--config", f"weights={weights}", *tiny_config_items()])
    assert code != 0
    (path,) = (results / "records").glob("*.json")
    record = Record.from_json(json.loads(path.read_text()))
    assert "ReleasedWeightsError" in record.error and "patchguard_mvtec_alpha.pth" in record.error
    assert record.clean is None and not list(results.rglob("*.pt"))
