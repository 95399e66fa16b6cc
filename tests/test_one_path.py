"""One path from cells to records: a group's detector is built once, each record read at most once per
command, the same model on a cold and a warm cache, and hooks any plug-in can use (its own weights)."""
from __future__ import annotations

import collections
import json
import textwrap

import pytest

from robustad.bench.cli import main
from robustad.bench.results.records import Record
from tests.tiny_detector import TinyDetector

TINY = "tests.tiny_detector:TinyDetector"


def run_three_attacks(root, results):
    return main(["run", "--method", TINY, "--dataset", "mvtec", "--root", str(root), "--category", "alpha",
                 "--attack", "fgsm", "--attack", "pgd-1", "--attack", "pgd-2", "--results", str(results)])


def test_a_group_of_three_cells_builds_its_detector_once_and_reads_each_record_once(mvtec_root, tmp_path,
                                                                                     monkeypatch):
    built, parsed = [], collections.Counter()
    original_init, original_from_json = TinyDetector.__init__, Record.from_json.__func__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        original_init(self, *args, **kwargs)

    def counting_from_json(cls, data):
        parsed[data.get("cell_id") if isinstance(data, dict) else None] += 1
        return original_from_json(cls, data)

    monkeypatch.setattr(TinyDetector, "__init__", counting_init)
    monkeypatch.setattr(Record, "from_json", classmethod(counting_from_json))
    results = tmp_path / "results"
    assert run_three_attacks(mvtec_root, results) == 0
    assert len(list((results / "records").glob("*.json"))) == 3
    assert len(built) == 1  # one group, one detector: fitted once, attacked three times
    assert parsed == {}  # nothing to read before the first run; the records written are kept in memory
    built.clear()
    assert run_three_attacks(mvtec_root, results) == 0  # every cell done: nothing built, each record read once
    assert built == [] and len(parsed) == 3 and set(parsed.values()) == {1}
    parsed.clear()
    assert main(["run", "--method", TINY, "--dataset", "mvtec", "--root", str(mvtec_root), "--category", "alpha",
                 "--attack", "fgsm", "--attack", "pgd-1", "--attack", "pgd-2", "--results", str(results),
                 "--force"]) == 0
    assert len(built) == 1 and len(parsed) == 3 and set(parsed.values()) == {1}


# The smallest PatchGuard that takes the paper's path: Grad-CAM foreground, pseudo anomalies, PGD training.
SMALL_PATCHGUARD = ["--config", "epochs=2", "--config", "vit_depth=1", "--config", "vit_embed_dim=24",
                    "--config", "vit_heads=2", "--config", "disc_heads=2", "--config", "disc_mlp_dim=32",
                    "--config", "train_steps=1", "--config", "image_size=32"]


def test_a_cold_cache_trains_the_model_a_warm_cache_trains(mvtec_root, tmp_path, monkeypatch):
    """Filling the foreground cache builds a Grad-CAM network; that must not move the generators."""
    monkeypatch.setenv("ROBUSTAD_CACHE", str(tmp_path / "fresh-cache"))
    records = []
    for name in ("cold", "warm"):
        results = tmp_path / name
        assert main(["run", "--method", "patchguard", "--dataset", "mvtec", "--root", str(mvtec_root), "--category",
                     "alpha", "--attack", "pgd", "--steps", "2", "--seed", "7", "--results", str(results),
                     *SMALL_PATCHGUARD]) == 0
        (path,) = (results / "records").glob("*.json")
        records.append(Record.from_json(json.loads(path.read_text())))
    cold, warm = records
    assert cold.checkpoint_sha256 == warm.checkpoint_sha256
    assert (cold.clean, cold.adversarial) == (warm.clean, warm.adversarial)
    assert cold.attack_calibration == warm.attack_calibration


WEIGHTED_PLUGIN = '''
import dataclasses
from pathlib import Path

import torch
from robustad.core.files import file_sha256
from robustad.methods import Detector, DetectorConfig


@dataclasses.dataclass
class WeightedConfig(DetectorConfig):
    image_size: int = 32
    weights: str = ""  # a file, or a folder of <category>.pt files


class WeightedDefense(Detector):
    """A plug-in that ships its own weights, one file per category, and is never trained here."""

    config_class = WeightedConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.net = torch.nn.Conv2d(3, 1, 8, stride=8)
        self.loaded = None
        if self.config.weights:
            self.net.load_state_dict(torch.load(self.config.weights, weights_only=True))
            self.loaded = {"path": self.config.weights, "sha256": file_sha256(self.config.weights),
                           "source": "the plug-in's own release"}

    @property
    def given_weights(self):
        return self.loaded

    @classmethod
    def cell_overrides(cls, overrides, dataset, category):
        folder = Path(overrides.get("weights", ""))
        if overrides.get("weights") and folder.is_dir():
            return {**overrides, "weights": str(folder / f"{category}.pt")}
        return dict(overrides)

    @classmethod
    def check_before_run(cls, config, dataset, categories):
        folder = Path(config.weights)
        missing = [c for c in categories if config.weights and not (folder / f"{c}.pt").is_file()]
        if missing:
            raise ValueError(f"--config weights={config.weights}: no {missing[0]}.pt")

    def fit(self, train_set):
        raise AssertionError("a detector with given weights is never trained")

    def forward(self, images):
        return self.net(images)[:, 0]
'''


@pytest.fixture
def weighted_plugin(tmp_path, monkeypatch):
    import torch

    (tmp_path / "weighteddefense.py").write_text(textwrap.dedent(WEIGHTED_PLUGIN))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.manual_seed(3)
    torch.save(torch.nn.Conv2d(3, 1, 8, stride=8).state_dict(), folder / "alpha.pt")
    return folder


def test_a_plugin_with_its_own_weights_hook_is_evaluated_by_run_and_check(weighted_plugin, mvtec_root, tmp_path,
                                                                          capsys):
    results = tmp_path / "results"
    common = ["--method", "weighteddefense:WeightedDefense", "--dataset", "mvtec", "--root", str(mvtec_root),
              "--category", "alpha", "--results", str(results), "--config", f"weights={weighted_plugin}"]
    assert main(["run", *common, "--attack", "pgd", "--steps", "2"]) == 0
    (path,) = (results / "records").glob("*.json")
    record = Record.from_json(json.loads(path.read_text()))
    assert record.error is None and record.weights["path"] == str(weighted_plugin / "alpha.pt")
    assert record.seconds["fit"] == 0 and record.checkpoint_sha256 is None
    assert not list(results.rglob("*.pt"))
    capsys.readouterr()
    main(["check", *common, "--steps", "2", "--max-images", "8"])
    report = capsys.readouterr().out
    assert "soundness checks: weighteddefense:WeightedDefense on mvtec/alpha" in report
    assert "inside_threat_model" in report and "undefended_collapses" in report
    assert not list(results.rglob("*.pt"))  # checked as given, never trained
    assert main(["run", *common[:-1], f"weights={tmp_path}", "--attack", "pgd"]) == 2  # no alpha.pt there
    assert "no alpha.pt" in capsys.readouterr().err


def test_bench_check_checks_the_authors_weights_without_training(mvtec_root, tmp_path, capsys):
    from tests.test_patchguard_official import STATE, tiny_config_items

    results = tmp_path / "results"
    main(["check", "--method", "patchguard", "--profile", "official", "--config", f"weights={STATE}",
          *tiny_config_items(), "--dataset", "mvtec", "--root", f"mvtec={mvtec_root}", "--category", "alpha",
          "--steps", "2", "--max-images", "8", "--results", str(results)])
    report = capsys.readouterr().out
    assert "soundness checks: patchguard on mvtec/alpha" in report
    assert "input_gradients_not_masked" in report and "more_steps_not_weaker" in report
    assert "given weights" in report  # no undefended twin is trained for released weights
    assert not list(results.rglob("*.pt"))
