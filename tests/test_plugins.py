"""A user's own defense, without editing robustad: both kinds of constructor run through `bench run`."""
from __future__ import annotations

import json
import textwrap

import pytest

from robustad.bench.cli import main

CONFIG_LESS = '''
import torch
from robustad.methods import Detector

class PlainDefense(Detector):
    """A plug-in with a no-argument constructor and its image size as a class attribute."""
    image_size = 32

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Conv2d(3, 1, 8, stride=8)

    def fit(self, train_set):
        torch.nn.init.normal_(self.net.weight)

    def forward(self, images):
        return self.net(images)[:, 0]
'''

WITH_CONFIG = '''
import dataclasses
import torch
from robustad.methods import Detector, DetectorConfig
from robustad.methods.config_fields import in_range

@dataclasses.dataclass
class MyConfig(DetectorConfig):
    image_size: int = 32
    width: int = in_range(4, low=1)

class ConfiguredDefense(Detector):
    name = "configured"
    display_name = "My Defense"
    config_class = MyConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, self.config.width, 8, stride=8),
                                       torch.nn.Conv2d(self.config.width, 1, 1))

    def fit(self, train_set):
        pass

    def forward(self, images):
        return self.net(images)[:, 0]
'''


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    (tmp_path / "userdefense.py").write_text(textwrap.dedent(CONFIG_LESS) + textwrap.dedent(WITH_CONFIG))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def run(method, mvtec_root, results, *extra):
    return main(["run", "--method", method, "--dataset", "mvtec", "--root", str(mvtec_root), "--category", "alpha",
                 "--attack", "pgd", "--steps", "2", "--results", str(results), *extra])


def only_record(results):
    (path,) = (results / "records").glob("*.json")
    return json.loads(path.read_text())


def test_a_config_less_plugin_runs_and_refuses_config(user_folder, mvtec_root, capsys):
    assert run("userdefense:PlainDefense", mvtec_root, user_folder / "plain") == 0
    record = only_record(user_folder / "plain")
    assert record["error"] is None and record["config"]["image_size"] == 32
    assert "PlainDefense on MVTec AD/alpha" in capsys.readouterr().out
    assert run("userdefense:PlainDefense", mvtec_root, user_folder / "refused", "--config", "width=3") == 2
    err = capsys.readouterr().err
    assert "takes no config" in err and "width" in err
    assert not (user_folder / "refused").exists()


def test_a_config_plugin_takes_overrides_and_names_itself(user_folder, mvtec_root, capsys):
    assert run("userdefense:ConfiguredDefense", mvtec_root, user_folder / "configured", "--config", "width=2") == 0
    record = only_record(user_folder / "configured")
    assert record["error"] is None and record["config"]["width"] == 2 and record["config_overrides"] == {"width": 2}
    assert "My Defense (width=2) on MVTec AD/alpha" in capsys.readouterr().out
    assert run("userdefense:ConfiguredDefense", mvtec_root, user_folder / "bad", "--config", "width=0") == 2
    err = capsys.readouterr().err
    assert "width=0" in err and "expected an integer >= 1" in err
