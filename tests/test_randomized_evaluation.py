"""A detector that declares `randomized = True` is scored R times: the record keeps each metric's mean,
standard deviation and worst value, and tables mark the mean."""
from __future__ import annotations

import json

import pytest

from robustad.bench.cli import main

NOISY = '''
import torch
from tests.tiny_detector import TinyDetector


class NoisyDetector(TinyDetector):
    """The tiny detector with fresh Gaussian noise on its input at every call."""

    randomized = True

    def forward(self, images):
        return super().forward(images + 0.05 * torch.randn_like(images))
'''


@pytest.fixture
def noisy(user_module):
    return user_module("noisy", NOISY)


def test_a_randomized_detector_is_evaluated_several_times_and_its_spread_recorded(noisy, mvtec_root, capsys):
    results = noisy / "results"
    assert main(["run", "--method", "noisy:NoisyDetector", "--dataset", "mvtec", "--root", str(mvtec_root),
                 "--category", "alpha", "--attack", "pgd", "--steps", "2", "--evaluations", "4",
                 "--results", str(results)]) == 0
    (path,) = (results / "records").glob("*.json")
    record = json.loads(path.read_text())
    for phase in ("clean", "adversarial"):
        block = record[phase]
        assert block["evaluations"] == 4
        for metric in ("image_auroc", "pixel_auroc"):
            assert block[f"{metric}_worst"] <= block[metric]
            assert block[f"{metric}_std"] > 0  # fresh noise on every pass: the passes differ
    assert "†" in capsys.readouterr().out
    assert main(["table", "--results", str(results), "--format", "markdown", "--task", "al"]) == 0
    table = capsys.readouterr().out
    assert "†" in table and "repeated evaluations" in table


def test_a_deterministic_detector_is_scored_once(mvtec_root, tmp_path):
    results = tmp_path / "results"
    assert main(["run", "--method", "tests.tiny_detector:TinyDetector", "--dataset", "mvtec", "--root",
                 str(mvtec_root), "--category", "alpha", "--attack", "pgd", "--steps", "2", "--evaluations", "4",
                 "--results", str(results)]) == 0
    (path,) = (results / "records").glob("*.json")
    record = json.loads(path.read_text())
    assert record["clean"]["evaluations"] is None and record["adversarial"]["image_auroc_std"] is None


def test_zero_evaluations_are_refused(mvtec_root, tmp_path, capsys):
    assert main(["run", "--method", "tests.tiny_detector:TinyDetector", "--dataset", "mvtec", "--root",
                 str(mvtec_root), "--category", "alpha", "--evaluations", "0", "--results", str(tmp_path / "r")]) == 2
    assert "--evaluations 0" in capsys.readouterr().err


def test_the_calibration_of_a_randomized_detector_reads_the_mean_of_its_clean_passes(mvtec_root):
    import torch

    from robustad.attacks import create_attack
    from robustad.bench.evaluation.evaluate import evaluate
    from robustad.datasets import create_dataset
    from tests.tiny_detector import TinyDetector

    class LogitNoise(TinyDetector):
        randomized = True
        spread = 4.0  # noise far above the untrained logits' spread

        def forward(self, images):
            logits = super().forward(images)
            return logits + self.spread * torch.randn_like(logits)

    torch.manual_seed(0)
    detector = LogitNoise()
    test = create_dataset("mvtec", root=str(mvtec_root), category="alpha", split="test", image_size=32)
    attack = create_attack("pgd", eps=2 / 255, steps=1)

    def scale(evaluations):
        torch.manual_seed(0)
        result = evaluate(detector, test, attack, batch_size=8, device=torch.device("cpu"), progress=False,
                          evaluations=evaluations)
        return result["calibration"]["scale"]

    noisy, averaged = scale(1), scale(16)
    assert noisy > 0.7 * LogitNoise.spread  # one pass: the scale is the noise's
    assert averaged < 0.5 * noisy  # the mean of 16 passes: its noise is 4× smaller
