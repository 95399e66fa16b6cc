import pytest
import torch

from robustad.methods import CheckpointMismatchError
from tests.tiny_detector import TinyDetector


def test_round_trip_and_refusal(tmp_path):
    torch.manual_seed(0)
    a = TinyDetector()
    a.save_checkpoint(tmp_path / "a.pt")
    b = TinyDetector()
    b.load_checkpoint(tmp_path / "a.pt")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(a(x), b(x))
    other = TinyDetector(width=8, lr=1e-3)
    with pytest.raises(CheckpointMismatchError) as err:
        other.load_checkpoint(tmp_path / "a.pt")
    assert "width" in str(err.value) and "lr" in str(err.value)


def test_corrupt_checkpoint_is_named(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="bad.pt"):
        TinyDetector().load_checkpoint(path)


def test_config_override_types_and_unknown_keys():
    d = TinyDetector(width="8", lr="1/100")
    assert d.config.width == 8 and d.config.lr == 0.01
    with pytest.raises(ValueError, match="valid fields"):
        TinyDetector(bogus=1)
    with pytest.raises(ValueError, match="width"):
        TinyDetector(width="wide")
