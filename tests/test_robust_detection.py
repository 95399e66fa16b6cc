"""The detection-only robust methods (methods/robust_detection): PrincipaLS, ZARND, RODEO.

Each fits on the synthetic tree, gives M(x) of shape (B, 1, 1) with S(x) its value, passes
gradients to the pixels, round-trips a checkpoint, and refuses bad input (exposure folders,
backbone weights) in its `check_before_run` hook, before any training. ZARND runs on a randomly
initialized ResNet-18 here: these tests check its plumbing, not its robustness.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from robustad.attacks import check_inside, create_attack
from robustad.datasets import create_dataset
from robustad.methods import METHODS, create_method
from robustad.methods.robust_detection import principals, rodeo
from robustad.methods.robust_detection.principal_latent_space import PrincipalLatentSpace, RunningPCA
from robustad.methods.robust_detection.rodeo import Rodeo, learning_rate
from robustad.methods.robust_detection.zarnd import Zarnd, nearest_squared_distances
from tests.tiny_configs import SIZE, tiny_overrides

NAMES = ("principals", "zarnd", "rodeo")
_FITTED = {}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name, **extra):
    return create_method(name, **{**tiny_overrides(name), **extra})


def train_set(root):
    return create_dataset("mvtec", root=root, category="alpha", split="train", image_size=SIZE)


def fitted(name, root):
    if name not in _FITTED:
        torch.manual_seed(0)
        detector = tiny(name)
        detector.fit(train_set(root))
        _FITTED[name] = detector
    return _FITTED[name]


@pytest.fixture(scope="module")
def test_batch(mvtec_root):
    test = create_dataset("mvtec", root=mvtec_root, category="alpha", split="test", image_size=SIZE)
    items = [test[i] for i in (0, 1, 6, 7)]  # two anomalous, two normal
    return torch.stack([b["image"] for b in items]), torch.stack([b["mask"] for b in items])


def labels_of(masks):
    return masks.flatten(1).amax(1) > 0.5


def write_images(folder, count, size=20, mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        shape = (size, size, 3) if mode == "RGB" else (size, size)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i}.png")
    return folder


def test_registered_as_detection_only():
    for name in NAMES:
        assert name in METHODS.names()
        assert METHODS.get(name).localizes is False
    assert all(METHODS.get(n).localizes for n in ("patchguard", "patchcore"))


@pytest.mark.parametrize("name", NAMES)
def test_fit_shapes_gradient_checkpoint(name, mvtec_root, test_batch, tmp_path):
    detector = fitted(name, mvtec_root)
    images, _ = test_batch
    x = images.clone().requires_grad_(True)
    logits = detector(x)
    assert logits.shape == (len(images), 1, 1)
    scores = detector.score(logits)
    assert scores.shape == (len(images),) and torch.isfinite(scores).all()
    assert torch.equal(scores, logits[:, 0, 0])
    assert scores.detach().std() > 0  # the images get different scores
    (grad,) = torch.autograd.grad(scores.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0

    path = tmp_path / f"{name}.pt"
    detector.save_checkpoint(path)
    restored = tiny(name)
    restored.load_checkpoint(path)
    restored.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(images), detector(images))


@pytest.mark.parametrize("name", NAMES)
def test_detection_attack_moves_the_scores_inside_the_ball(name, mvtec_root, test_batch):
    detector = fitted(name, mvtec_root)
    images, masks = test_batch
    adv = create_attack("pgd", eps=8 / 255, steps=3, objective="detection")(detector, images, masks)
    check_inside(adv, images, "linf", 8 / 255)
    with torch.no_grad():
        clean, attacked = detector.score(detector(images)), detector.score(detector(adv))
    anomalous = labels_of(masks)
    assert anomalous.sum() == 2
    # the detection objective raises normal images' scores and lowers anomalous ones' (PGD keeps each
    # image's best iterate, the clean one included)
    assert (attacked[~anomalous] >= clean[~anomalous]).all() and (attacked[anomalous] <= clean[anomalous]).all()
    assert attacked[~anomalous].mean() > clean[~anomalous].mean()


@pytest.mark.parametrize("name", NAMES)
def test_bad_shapes_are_refused(name, mvtec_root):
    detector = fitted(name, mvtec_root)
    with pytest.raises(ValueError, match="B, 1, 1"):
        detector.score(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="B, 3, H, W"):
        detector(torch.zeros(2, 1, SIZE, SIZE))


@pytest.mark.parametrize("name", ["principals", "zarnd"])  # RODEO's classifier scores from construction on
def test_scoring_before_fit_is_refused(name):
    with pytest.raises(RuntimeError, match="fit"):
        tiny(name)(torch.rand(1, 3, SIZE, SIZE))


# -- ZARND ------------------------------------------------------------------------------------------
def test_zarnd_score_is_the_sum_of_the_two_nearest_squared_distances(mvtec_root, test_batch):
    detector = fitted("zarnd", mvtec_root)
    images, _ = test_batch
    with torch.no_grad():
        features = detector.embed(images)
        expected = torch.cdist(features, detector.train_features).pow(2).sort(dim=1).values[:, :2].sum(1)
        torch.testing.assert_close(detector.score(detector(images)), expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(features.norm(dim=1), torch.ones(len(images)), atol=1e-5)
    assert detector.train_features.shape[0] == len(train_set(mvtec_root))


def test_nearest_squared_distances_takes_k_nearest():
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    query = torch.tensor([[0.0, 0.0]])
    assert nearest_squared_distances(query, bank, 1).item() == 0.0
    assert nearest_squared_distances(query, bank, 2).item() == pytest.approx(1.0)
    assert nearest_squared_distances(query, bank, 5).item() == pytest.approx(10.0)  # k capped at the bank


def test_zarnd_robust_backbone_without_weights_names_the_options():
    from robustad.methods import method_config

    with pytest.raises(ValueError) as err:
        Zarnd.check_before_run(method_config("zarnd", "paper", backbone_weights=""), "mvtec", ["bottle"])
    assert "backbone_weights=" in str(err.value) and "robustbench:" in str(err.value)


def hugging_face_cache(root, repo: str, filename: str, state: dict) -> None:
    """A Hugging Face hub cache at `root` holding one file of `repo`, laid out as huggingface_hub writes it."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    torch.save({"model": state, "epoch": 90}, folder / "snapshots" / ("0" * 40) / filename)


def test_zarnd_paper_backbone_comes_from_the_hugging_face_cache_only(tmp_path, monkeypatch):
    import torchvision
    from huggingface_hub import constants

    from robustad.methods import method_config

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    paper = method_config("zarnd", "paper")
    assert paper.backbone_weights == "hf:madrylab/robust-imagenet-models/resnet18_linf_eps8.0.ckpt"
    with pytest.raises(ValueError) as err:  # an empty cache: a clear error, no download
        Zarnd.check_before_run(paper, "mvtec", ["bottle"])
    assert "resnet18_linf_eps8.0.ckpt" in str(err.value) and "hf download" in str(err.value)

    torch.manual_seed(0)
    robust = torchvision.models.resnet18(weights=None).state_dict()
    state = {f"module.model.{k}": v for k, v in robust.items()}  # the robustness library's layout
    hugging_face_cache(tmp_path / "hub", "madrylab/robust-imagenet-models", "resnet18_linf_eps8.0.ckpt", state)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    Zarnd.check_before_run(paper, "mvtec", ["bottle"])
    detector = Zarnd(paper)
    assert torch.equal(detector.extractor.stem[0].weight, robust["conv1.weight"])


def test_zarnd_weights_file_checks(tmp_path):
    from robustad.methods import method_config

    missing = tmp_path / "nowhere.pt"
    with pytest.raises(ValueError, match=f"backbone_weights={missing}.*no such file"):
        Zarnd.check_before_run(method_config("zarnd", "paper", backbone_weights=str(missing)), "mvtec", ["bottle"])
    other = tmp_path / "resnet18-width8.pt"  # a ResNet-18 of other widths: another architecture
    torch.save(rodeo.build_resnet18(8).state_dict(), other)
    with pytest.raises(ValueError) as err:
        Zarnd.check_before_run(method_config("zarnd", "paper", backbone_weights=str(other)), "mvtec", ["bottle"])
    assert f"backbone_weights={other}" in str(err.value) and "shape" in str(err.value)
    fitting = tmp_path / "resnet18.pt"
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), fitting)
    Zarnd.check_before_run(method_config("zarnd", "paper", backbone_weights=str(fitting)), "mvtec", ["bottle"])
    Zarnd.check_before_run(method_config("zarnd", "quick", backbone_init="scratch"), "mvtec", ["bottle"])


# -- PrincipaLS ---------------------------------------------------------------------------------------
def test_running_pca_finds_the_subspace_and_removes_the_rest():
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(6, 2)).Q  # a 2-d subspace of R^6
    offset = torch.randn(6)
    pca = RunningPCA(6, 2, momentum=0.5)
    for _ in range(5):
        pca.update((torch.randn(200, 2) * torch.tensor([3.0, 1.0])) @ basis.T + offset)
    inside = torch.randn(4, 2) @ basis.T + offset
    torch.testing.assert_close(pca.reconstruct(pca.project(inside)), inside, atol=1e-4, rtol=1e-4)
    normal = torch.linalg.qr(torch.cat([basis, torch.randn(6, 1)], 1)).Q[:, 2]  # orthogonal to the subspace
    torch.testing.assert_close(pca.reconstruct(pca.project(inside + 2 * normal)), inside, atol=1e-4, rtol=1e-4)


def test_principal_latent_space_learns_in_training_and_is_fixed_in_eval():
    torch.manual_seed(0)
    module = PrincipalLatentSpace(channels=5, height=3, width=3, vector_components=1, spatial_components=2)
    module.train()
    module(torch.randn(8, 5, 3, 3))
    first = module.vector.components.clone()
    module(torch.randn(8, 5, 3, 3) * torch.arange(1.0, 6.0).view(1, 5, 1, 1))
    assert not torch.equal(first, module.vector.components)  # incremental update in training
    module.eval()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    out = module(torch.randn(4, 5, 3, 3, requires_grad=True))
    assert out.shape == (4, 5, 3, 3)
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())  # fixed in eval
    with pytest.raises(ValueError, match="5, 3, 3"):
        module(torch.randn(1, 4, 3, 3))


def test_principals_refuses_components_beyond_the_latent():
    with pytest.raises(ValueError, match="spatial_components=99"):
        tiny("principals", spatial_components=99)
    with pytest.raises(ValueError, match="multiple of"):
        tiny("principals", image_size=36, depth=3)


@pytest.mark.parametrize("name, module", [("principals", principals), ("rodeo", rodeo)])
def test_adv_train_switch(name, module, mvtec_root, monkeypatch):
    calls = []
    original = module.pgd_training_examples

    def counting(*args, **kwargs):
        calls.append(kwargs.get("generator", args[5] if len(args) > 5 else None))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "pgd_training_examples", counting)
    tiny(name, adv_train="false").fit(train_set(mvtec_root))
    assert calls == []
    tiny(name).fit(train_set(mvtec_root))
    assert calls, f"{name}: adversarial training made no PGD examples"


# -- RODEO ----------------------------------------------------------------------------------------------
def test_rodeo_learning_rate_schedule_is_the_notebooks():
    assert learning_rate(0.1, 0.0, 5) == pytest.approx(0.1)
    assert learning_rate(0.1, 1.0, 5) == pytest.approx(0.01)  # epochs // 3 = 1
    assert learning_rate(0.1, 3.0, 5) == pytest.approx(0.001)  # 2 · epochs // 3 = 3
    assert learning_rate(0.1, 5.0, 5) == pytest.approx(0.0)
    assert learning_rate(0.1, 0.5, 5) == pytest.approx(0.055)


def test_rodeo_trains_against_an_exposure_folder(mvtec_root, tmp_path, monkeypatch):
    folder = write_images(tmp_path / "exposures" / "nested", 3, size=20)
    write_images(tmp_path / "exposures", 2, size=40, mode="L")  # other sizes and modes are resized / repeated
    seen = []
    original = rodeo.load_exposures

    def recording(method, directory, size):
        loaded = original(method, directory, size)
        seen.append(loaded.shape)
        return loaded

    monkeypatch.setattr(rodeo, "load_exposures", recording)
    detector = tiny("rodeo", exposure_dir=str(folder.parent))
    Rodeo.check_before_run(detector.config, "mvtec", ["alpha"])
    detector.fit(train_set(mvtec_root))
    assert seen == [(5, 3, SIZE, SIZE)]
    assert str(folder.parent) in detector.exposure_source
    assert detector.config_dict()["exposure_dir"] == str(folder.parent)  # stored in every record
    assert "ours" in tiny("rodeo").exposure_source


@pytest.mark.parametrize("generator", ["perlin", "nsa", "ours"])
def test_rodeo_pseudo_exposures(generator, mvtec_root):
    detector = tiny("rodeo", pseudo_anomaly=generator)
    detector.fit(train_set(mvtec_root))
    assert generator in detector.exposure_source


def test_rodeo_patchguard_exposures_take_their_size_and_least_change():
    def changes(min_change):
        torch.manual_seed(0)
        images = torch.rand(8, 3, 32, 32) * 0.5 + 0.25
        exposures = rodeo.PseudoExposures("ours", images, foreground="full", size_range=(0.5, 0.5),
                                          min_change=min_change)
        return (exposures(images, torch.arange(8), torch.Generator().manual_seed(0)) - images).abs().amax(dim=1)

    floor, free = changes(0.4), changes(0.0)
    changed = floor > 1e-6
    assert changed.any(dim=(1, 2)).all()
    assert changed.sum(dim=(1, 2)).max() <= 16 * 16 * 2  # a rotated square of side 16 px at most
    share = [float((floor[i][changed[i]] > 0.4).float().mean()) for i in range(8)]
    share_free = [float((free[i][free[i] > 1e-6] > 0.4).float().mean()) for i in range(8)]
    assert sum(share) / 8 > sum(share_free) / 8 + 0.1  # the floor adds change where transforms left little


def test_rodeo_refuses_bad_exposure_folders_before_training(tmp_path):
    from robustad.methods import method_config

    def check(folder):
        with pytest.raises(ValueError) as err:
            Rodeo.check_before_run(method_config("rodeo", "quick", exposure_dir=str(folder)), "mvtec", ["alpha"])
        assert f"--config exposure_dir={folder}" in str(err.value)
        return str(err.value)

    assert "no such folder" in check(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    assert "holds no image" in check(tmp_path / "empty")
    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"")
    assert "not a folder" in check(a_file)
    broken = write_images(tmp_path / "broken", 2)
    (broken / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert str(broken / "bad.png") in check(broken)
    Rodeo.check_before_run(method_config("rodeo", "quick"), "mvtec", ["alpha"])  # no folder: nothing to check


def test_rodeo_per_category_exposure_folders(tmp_path):
    from robustad.methods import method_config

    write_images(tmp_path / "exposures" / "alpha", 2)
    (tmp_path / "exposures" / "beta").mkdir()  # empty: refused, naming its folder
    shared = str(tmp_path / "exposures")
    assert Rodeo.cell_overrides({"exposure_dir": shared}, "mvtec", "alpha") == {"exposure_dir": f"{shared}/alpha"}
    assert Rodeo.cell_overrides({"exposure_dir": shared}, "mvtec", "gamma") == {"exposure_dir": shared}
    assert Rodeo.cell_overrides({"epochs": 3}, "mvtec", "alpha") == {"epochs": 3}
    Rodeo.check_before_run(method_config("rodeo", "quick", exposure_dir=shared), "mvtec", ["alpha"])
    with pytest.raises(ValueError, match=f"exposure_dir={shared}/beta: the folder holds no image"):
        Rodeo.check_before_run(method_config("rodeo", "quick", exposure_dir=shared), "mvtec", ["alpha", "beta"])
