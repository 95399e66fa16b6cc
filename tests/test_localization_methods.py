"""The localization methods of Table 2 (methods/localization): MuSc, ReConPatch, RealNet.

Each builds from scratch (tiny configs, 32 px), fits on the synthetic tree, gives finite maps whose
gradients reach the pixels, round-trips a checkpoint and refuses bad input before any training. MuSc's
transductive threat model gets its own tests: the scored image's clean copy is never a reference, and
its adversarial AUROC does not depend on how the test set is ordered or cut into batches.
"""
import json

import pytest
import torch

from robustad.attacks import check_inside, create_attack
from robustad.bench.evaluation.evaluate import evaluate
from robustad.datasets import create_dataset
from robustad.methods import METHODS, create_method, method_config
from robustad.methods.localization.mutual_scoring import interval_mean, rscin
from robustad.methods.localization.reconpatch import contextual_similarity, relaxed_contrastive_loss
from tests.tiny_configs import SIZE, tiny_overrides

NAMES = ("musc", "reconpatch", "realnet")
_FITTED = {}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name, **extra):
    return create_method(name, **{**tiny_overrides(name), **extra})


def split(root, part):
    return create_dataset("mvtec", root=root, category="alpha", split=part, image_size=SIZE)


def labelled_test_set(root):
    test = split(root, "test")
    items = [test[i] for i in range(len(test))]
    return (torch.stack([b["image"] for b in items]), torch.stack([b["mask"] for b in items]),
            torch.tensor([b["label"] for b in items]))


def fitted(name, root):
    if name not in _FITTED:
        torch.manual_seed(0)
        detector = tiny(name)
        detector.fit(split(root, "train"))
        if name == "musc":
            detector.set_test_references(labelled_test_set(root)[0])
        detector.eval()
        _FITTED[name] = detector
    return _FITTED[name]


def test_registered_with_quick_and_paper_profiles():
    for name in NAMES:
        cls = METHODS.get(name)
        assert cls.__module__.startswith("robustad.methods.localization")
        quick, paper = method_config(name, "quick"), method_config(name, "paper")
        assert quick != paper


@pytest.mark.parametrize("name", NAMES)
def test_fit_forward_gradient_checkpoint(name, mvtec_root, tmp_path):
    detector = fitted(name, mvtec_root)
    images = labelled_test_set(mvtec_root)[0][[0, 1, 7, 8]]
    x = images.clone().requires_grad_(True)
    logits = detector(x)
    assert logits.dim() == 3 and logits.shape[0] == 4 and torch.isfinite(logits).all()
    scores = detector.score(logits)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    (grad,) = torch.autograd.grad(scores.sum() + logits.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert detector.anomaly_map(logits.detach(), SIZE).shape == (4, SIZE, SIZE)

    path = tmp_path / f"{name}.pt"
    detector.save_checkpoint(path)
    restored = tiny(name)
    restored.load_checkpoint(path)
    restored.eval()
    if name == "musc":  # references=test: the runner hands them over again after loading
        restored.set_test_references(labelled_test_set(mvtec_root)[0])
    with torch.no_grad():
        torch.testing.assert_close(restored(images), detector(images))


def test_table2_grid_runs_them(capsys):
    from robustad.bench.cli import main

    assert main(["grid", "show", "paper/table2"]) == 0
    out = capsys.readouterr().out
    assert "594 cells, 594 trainings" in out and "musc, reconpatch, realnet" in out
    for name in NAMES:
        assert f"method '{name}' is not implemented" not in out


@pytest.mark.parametrize("objective", ["localization", "detection"])
@pytest.mark.parametrize("name", NAMES)
def test_attackable_under_both_objectives(name, objective, mvtec_root):
    detector = fitted(name, mvtec_root)
    images, masks, labels = labelled_test_set(mvtec_root)
    attack = create_attack("pgd", norm="linf", eps=8 / 255, steps=2, objective=objective)
    adversarial = attack(detector, images, masks, labels.float())
    check_inside(adversarial, images, "linf", 8 / 255)
    with torch.no_grad():
        clean, attacked = detector.score(detector(images)), detector.score(detector(adversarial))
    # the flip objective raises normal images' scores and lowers anomalous ones' on average
    moved = (attacked - clean) * (1 - 2 * labels.float())
    assert moved.mean() > 0


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_shape_is_refused(name, mvtec_root):
    detector = fitted(name, mvtec_root)
    with pytest.raises((ValueError, RuntimeError)):
        detector(torch.rand(2, 1, SIZE, SIZE))


# -- MuSc -------------------------------------------------------------------------------------------
def test_musc_scored_image_never_uses_its_own_clean_copy(mvtec_root):
    detector = fitted("musc", mvtec_root)
    images, masks, labels = labelled_test_set(mvtec_root)
    generator = torch.Generator().manual_seed(1)
    noisy = (images + (8 / 255) * torch.randint(-1, 2, images.shape, generator=generator)).clamp(0, 1)
    attack = create_attack("pgd", norm="linf", eps=8 / 255, steps=2)
    adversarial = attack(detector, images, masks, labels.float())
    own = torch.arange(len(images))
    for batch in (images, noisy, adversarial):
        assert torch.equal(detector.excluded_references(batch), own)
    # M of each adversarial image equals its mutual scores against the other test images only
    with torch.no_grad():
        transductive = detector(adversarial)
        for i in (0, len(images) - 1):
            others = tiny("musc", references="train")
            others.load_state_dict({k: v for k, v in detector.state_dict().items() if k != "reference_images"},
                                   strict=False)
            others.eval()
            others._set_references(images[torch.arange(len(images)) != i])
            assert others.excluded_references(adversarial[i:i + 1]) is None
            torch.testing.assert_close(others(adversarial[i:i + 1])[0], transductive[i])


def test_musc_adversarial_auroc_ignores_order_and_batches(mvtec_root):
    detector = fitted("musc", mvtec_root)
    test = split(mvtec_root, "test")
    permuted = torch.utils.data.Subset(test, torch.randperm(len(test), generator=torch.Generator().manual_seed(3)).tolist())
    attack = create_attack("pgd", norm="linf", eps=8 / 255, steps=3, random_start=True, seed=0)
    first = evaluate(detector, test, attack, batch_size=2, device=torch.device("cpu"), progress=False)
    second = evaluate(detector, permuted, attack, batch_size=5, device=torch.device("cpu"), progress=False)
    assert first["adversarial"]["pixel_auroc"] < first["clean"]["pixel_auroc"]  # the attack did something
    for kind in ("clean", "adversarial"):
        for metric in ("image_auroc", "pixel_auroc"):
            assert first[kind][metric] == pytest.approx(second[kind][metric], abs=1e-9), (kind, metric)


def test_musc_few_references_give_finite_scores(mvtec_root):
    detector = tiny("musc")
    images = labelled_test_set(mvtec_root)[0]
    for count in (2, 3, 4):
        detector.set_test_references(images[:count])
        logits = detector(images[:count])
        assert torch.isfinite(logits).all() and torch.isfinite(detector.score(logits)).all()


def test_musc_interval_mean_and_rscin():
    distances = torch.tensor([[4.0, 1.0, 3.0, 2.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]])
    assert interval_mean(distances, 0.0, 0.3).item() == pytest.approx(2.0)  # the 3 smallest: 1, 2, 3
    assert interval_mean(distances[:, :3], 0.0, 0.3).item() == pytest.approx(1.0)  # int(0.9) = 0: keep one
    score = torch.tensor(0.9)
    similarities = torch.tensor([0.5, 0.8, 0.1])
    references = torch.tensor([0.0, 0.3, 1.0])
    assert rscin(score, similarities, references, (1,)).item() == pytest.approx(0.9)  # only itself
    expected = (1.0 * 0.9 + 0.8 * 0.3) / 1.8
    assert rscin(score, similarities, references, (2,)).item() == pytest.approx(expected)
    assert rscin(score, similarities, references, (0,)) is score


def test_musc_train_references_are_fitted_and_stored(mvtec_root, tmp_path):
    detector = tiny("musc", references="train", train_references=5)
    assert not detector.uses_test_references
    detector.fit(split(mvtec_root, "train"))
    assert detector.reference_images.shape == (5, 3, SIZE, SIZE)
    images = labelled_test_set(mvtec_root)[0][:3]
    assert detector.excluded_references(images) is None
    detector.save_checkpoint(tmp_path / "musc.pt")
    restored = tiny("musc", references="train", train_references=5)
    restored.load_checkpoint(tmp_path / "musc.pt")
    with torch.no_grad():
        torch.testing.assert_close(restored(images), detector(images))


def test_musc_without_references_says_which_hook(mvtec_root):
    with pytest.raises(RuntimeError, match="set_test_references"):
        tiny("musc")(labelled_test_set(mvtec_root)[0][:2])


def test_musc_rscin_k_per_dataset():
    cls = METHODS.get("musc")
    assert cls.cell_overrides({}, "visa", "candle")["rscin_k"] == (1, 8, 9)
    assert "rscin_k" not in cls.cell_overrides({}, "mvtec", "bottle")
    assert cls.cell_overrides({"rscin_k": (1,)}, "visa", "candle")["rscin_k"] == (1,)


def open_clip_tiny_model(tmp_path):
    """A tiny open_clip model config registered under a test name, and a weights file for it."""
    import open_clip  # in the dev extra
    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "head_width": 16, "patch_size": 8},
              "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "Tiny-Test-ViT.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    model = open_clip.create_model("Tiny-Test-ViT", pretrained=None)
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


def test_musc_open_clip_path_loads_a_weights_file_and_resizes_positions(mvtec_root, tmp_path):
    path = open_clip_tiny_model(tmp_path)
    detector = create_method("musc", image_size=48, backbone="Tiny-Test-ViT", backbone_weights=str(path),
                             feature_layers=(0, 2), aggregation_degrees=(1, 3))
    assert detector.grid == 6  # 48 px / patch 8: position embeddings resampled from the 4×4 grid
    images = torch.nn.functional.interpolate(labelled_test_set(mvtec_root)[0], size=48)
    detector.set_test_references(images)
    x = images[:2].clone().requires_grad_(True)
    logits = detector(x)
    (grad,) = torch.autograd.grad(detector.score(logits).sum(), x)
    assert logits.shape == (2, 6, 6) and grad.abs().sum() > 0


def test_musc_check_before_run_refuses_missing_and_wrong_weights(tmp_path):
    cls = METHODS.get("musc")
    missing = method_config("musc", "paper", backbone_weights=str(tmp_path / "none.pt"))
    with pytest.raises(ValueError, match="backbone_weights"):
        cls.check_before_run(missing, "mvtec", ["bottle"])
    wrong = tmp_path / "wrong.pt"
    torch.save({"visual.conv1.weight": torch.zeros(8, 3, 4, 4)}, wrong)
    with pytest.raises(ValueError, match="not ViT-L-14-336 weights"):
        cls.check_before_run(method_config("musc", "paper", backbone_weights=str(wrong)), "mvtec", ["bottle"])
    cls.check_before_run(method_config("musc", "quick"), "mvtec", ["bottle"])  # the tiny ViT needs nothing


# -- ReConPatch -------------------------------------------------------------------------------------
def test_reconpatch_starts_from_patchcore_features_and_learns(mvtec_root):
    torch.manual_seed(0)
    detector = tiny("reconpatch", epochs=4)
    images = labelled_test_set(mvtec_root)[0][:2]
    with torch.no_grad():
        torch.testing.assert_close(detector.features(images), detector.features.local(images))
    detector.fit(split(mvtec_root, "train"))
    with torch.no_grad():
        assert not torch.allclose(detector.features(images), detector.features.local(images))
    assert len(detector.train_losses) > 1 and all(map(lambda v: v == v, detector.train_losses))


def test_reconpatch_pseudo_labels_and_loss():
    z = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    context = contextual_similarity(z, 4)
    assert torch.allclose(context, context.T) and context.min() >= 0 and context.max() <= 1
    assert (context.diagonal() > 0).all()
    ones, zeros = torch.ones(12, 12), torch.zeros(12, 12)
    # all pairs similar: the loss pulls them together (δ² > 0); all dissimilar beyond the margin: no loss
    assert relaxed_contrastive_loss(z, ones, margin=1.0) > 0
    assert relaxed_contrastive_loss(z, zeros, margin=1e-3) == 0


# -- RealNet ----------------------------------------------------------------------------------------
def test_realnet_selects_channels_and_records_its_anomalies(mvtec_root):
    detector = fitted("realnet", mvtec_root)
    for i, count in enumerate(detector.config.block_channels):
        index = getattr(detector, f"afs_index_{i}")
        assert len(index) == count and torch.equal(index, index.sort().values) and len(index.unique()) == count
    assert detector.config_dict()["anomalies"] == "dtd-mode textures from train"
    assert tiny("realnet", sdas_dir="/somewhere").config_dict()["anomalies"] == "sdas"


def test_realnet_scores_each_image_alone(mvtec_root):
    detector = fitted("realnet", mvtec_root)
    images = labelled_test_set(mvtec_root)[0][:4]
    with torch.no_grad():
        together = detector(images)
        alone = torch.cat([detector(images[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_realnet_check_before_run(tmp_path):
    cls = METHODS.get("realnet")
    scratch = dict(backbone_init="scratch")
    with pytest.raises(ValueError, match="sdas_dir"):
        cls.check_before_run(method_config("realnet", "paper", sdas_dir=str(tmp_path / "missing"), **scratch),
                             "mvtec", ["bottle"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="sdas_dir"):
        cls.check_before_run(method_config("realnet", "paper", sdas_dir=str(empty), **scratch), "mvtec", ["bottle"])
    with pytest.raises(ValueError, match="dtd_root"):
        cls.check_before_run(method_config("realnet", "paper", **scratch), "mvtec", ["bottle"])
    filled = tmp_path / "sdas" / "bottle"
    filled.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(filled / "0.png")
    template = str(tmp_path / "sdas" / "{category}")
    cls.check_before_run(method_config("realnet", "paper", sdas_dir=template, **scratch), "mvtec", ["bottle"])
    with pytest.raises(ValueError, match="sdas_dir"):
        cls.check_before_run(method_config("realnet", "paper", sdas_dir=template, **scratch), "mvtec", ["cable"])
    assert cls.cell_overrides({"sdas_dir": template}, "mvtec", "bottle")["sdas_dir"] == str(filled)


@pytest.mark.parametrize("name", ["reconpatch", "realnet"])
def test_missing_or_wrong_backbone_weights_are_refused_before_training(name, tmp_path):
    cls = METHODS.get(name)
    offline = {"texture_source": "train"} if name == "realnet" else {}
    missing = method_config(name, "quick", backbone="resnet18", backbone_weights=str(tmp_path / "none.pt"), **offline)
    with pytest.raises(ValueError, match="backbone_weights"):
        cls.check_before_run(missing, "mvtec", ["bottle"])
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, wrong)
    with pytest.raises(ValueError, match="wrong.pt"):
        cls.check_before_run(method_config(name, "quick", backbone="resnet18", backbone_weights=str(wrong), **offline),
                             "mvtec", ["bottle"])
    cls.check_before_run(method_config(name, "quick", **offline), "mvtec", ["bottle"])  # shipped EfficientNet weights


def test_bench_run_hands_musc_its_clean_test_set(mvtec_root, tmp_path):
    """The runner gives a transductive detector its references (`prepare`): `bench run --method musc` runs."""
    import json

    from robustad.bench.cli import main
    from tests.tiny_configs import tiny_overrides

    items = []
    for key, value in tiny_overrides("musc").items():
        items += ["--config", f"{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}"]
    results = tmp_path / "results"
    assert main(["run", "--method", "musc", "--dataset", "mvtec", "--root", str(mvtec_root), "--category", "alpha",
                 "--attack", "pgd", "--steps", "2", "--results", str(results), *items]) == 0
    (path,) = (results / "records").glob("*.json")
    record = json.loads(path.read_text())
    assert record["error"] is None and record["clean"]["pixel_auroc"] is not None
