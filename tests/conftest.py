import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Generated datasets and foreground maps go to a temporary cache, never the user's."""
    old = os.environ.get("ROBUSTAD_CACHE")
    os.environ["ROBUSTAD_CACHE"] = str(tmp_path_factory.mktemp("robustad-cache"))
    yield
    if old is None:
        os.environ.pop("ROBUSTAD_CACHE", None)
    else:
        os.environ["ROBUSTAD_CACHE"] = old


@pytest.fixture(scope="session")
def mvtec_root(tmp_path_factory):
    from tests.synthetic import write_mvtec_tree

    return write_mvtec_tree(tmp_path_factory.mktemp("mvtec"))


@pytest.fixture(scope="session")
def trained_tiny(mvtec_root):
    """A TinyDetector fitted on category "alpha" of the synthetic tree, with its test batch."""
    from robustad.datasets import create_dataset
    from tests.tiny_detector import TinyDetector

    torch.manual_seed(0)
    detector = TinyDetector()
    detector.fit(create_dataset("mvtec", root=mvtec_root, category="alpha", split="train", image_size=32))
    test = create_dataset("mvtec", root=mvtec_root, category="alpha", split="test", image_size=32)
    batch = [test[i] for i in range(len(test))]
    images = torch.stack([b["image"] for b in batch])
    masks = torch.stack([b["mask"] for b in batch])
    labels = torch.tensor([b["label"] for b in batch])
    return detector, images, masks, labels


@pytest.fixture(scope="session")
def tiny_report_run(mvtec_root, tmp_path_factory):
    """(results folder, records) of the tiny detector's 2 categories × (FGSM, PGD-1, PGD-3), shared by
    the figure and report tests (tests/report_records.py)."""
    from tests.report_records import tiny_results

    results = tmp_path_factory.mktemp("tiny-report-results")
    return results, tiny_results(mvtec_root, results)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on one thread: avoids the spin-wait cost of a shared, oversubscribed CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Writes a user's plug-in module `name.py` in a fresh folder that is the working directory and on
    the Python path, as `bench run --method name:Class` finds it; returns the folder."""
    import textwrap

    def write(name: str, source: str):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        return tmp_path

    return write
