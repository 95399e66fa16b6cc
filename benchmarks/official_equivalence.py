"""robustad's `arch=official` PatchGuard against the official code itself (rohban-lab/PatchGuard).

    python benchmarks/official_equivalence.py --official-src DIR [--official-python PY] [--size full tiny]

Two stages. The official stage runs the official code from the checkout DIR (its `patchguard.py`,
`attack.py`, `utils.py`), under `--official-python` (default: this interpreter; the official
attention wrapper needs timm < 1.0.2x, e.g. a venv with timm 1.0.15): it builds the official
`PatchGuard` with a seed, saves its `state_dict`, and computes on a small synthetic test set (random
images, half of them with patch-aligned rectangular masks) the patch logits, image and pixel AUROC
(its `get_auc`), and adversarial images of its `pgd_attack` (ε = 8/255, 10 steps, eval mode). The
robustad stage loads that `state_dict` file through `--config weights=` (`released_weights.py`)
and computes the same with robustad's detector, metrics and `pgd` attack (the same ε, steps, step
2.5·ε/steps, no random start, the last iterate). Prints one JSON object.

Sizes: `full` is the official default (dinov2 ViT-S/14 at 224 px); `tiny` the same code at 28 px
with a 2-block ViT of width 24 (timm.create_model given those sizes), small enough for the CI
fixture `--fixture DIR` writes (tests/fixtures/patchguard_official_tiny/). The official get_auc is
called with σ and radius scaled to the image size as robustad scales them (6 and 7 at 224 px).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPS = 8 / 255
STEPS = 10
TINY = {"image_size": 28, "patch_size": 14, "vit_embed_dim": 24, "vit_depth": 2, "vit_heads": 2,
        "disc_mlp_dim": 32, "disc_heads": 4, "feature_layers": (2,), "reg_layers": (1, 2),
        "kl_weights": (0.005, 0.01)}


def smoothing(image_size: int) -> tuple[float, int]:
    """σ and radius at this image size, as robustad scales the official 6 and 7 at 224 px."""
    return 6.0 * image_size / 224, max(1, round(7 * image_size / 224))


def synthetic_test_set(image_size: int, patch: int, count: int, seed: int):
    """Random images (count, 3, S, S), labels (half anomalous) and patch-aligned masks (count, 1, S, S)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, image_size, image_size, generator=generator)
    masks = torch.zeros(count, 1, image_size, image_size)
    labels = torch.zeros(count)
    grid = image_size // patch
    for i in range(count // 2, count):
        labels[i] = 1
        row, col = (int(v) for v in torch.randint(0, grid, (2,), generator=generator))
        height, width = (int(v) for v in torch.randint(1, max(2, grid // 2), (2,), generator=generator))
        masks[i, :, row * patch:min(grid, row + height) * patch, col * patch:min(grid, col + width) * patch] = 1
    return images, labels, masks


# -- the official stage (imports the official code and torch only) ----------------------------------
def official_stage(args) -> None:
    import torch

    sys.path.insert(0, str(Path(args.official_src).resolve()))
    import timm

    if args.size == "tiny":
        original = timm.create_model

        def create_model(name, **kwargs):  # the official FeatureExtractor's call, with tiny sizes added
            return original(name, **kwargs, patch_size=TINY["patch_size"], embed_dim=TINY["vit_embed_dim"],
                            depth=TINY["vit_depth"], num_heads=TINY["vit_heads"])

        timm.create_model = create_model
    import patchguard  # noqa: E402 - the official modules, from --official-src
    from attack import pgd_attack
    from utils import get_auc, label_patch, patchify

    tiny = args.size == "tiny"
    options = argparse.Namespace(
        hf_path="vit_small_patch14_dinov2.lvd142m",
        feature_layers=list(TINY["feature_layers"]) if tiny else [12],
        reg_layers=list(TINY["reg_layers"]) if tiny else [6, 9, 12],
        image_size=TINY["image_size"] if tiny else 224,
        hidden_dim=TINY["disc_mlp_dim"] if tiny else 2048, dsc_layers=1, dsc_heads=4,
    )
    torch.manual_seed(args.seed)
    model = patchguard.PatchGuard(options, torch.device("cpu")).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "state_dict.pth")
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    (out / "state_dict_shapes.json").write_text(json.dumps(shapes, indent=0))
    patch = model.patch_size
    images, labels, masks = synthetic_test_set(options.image_size, patch, args.n_test, args.seed)
    with torch.no_grad():
        logits = model(images)
    sigma, radius = smoothing(options.image_size)
    image_auc, pixel_auc = get_auc([logits], [labels], [masks], model.patches_per_side, sigma, radius, 3)
    start = time.perf_counter()
    adversarial = pgd_attack(model, images, label_patch(patchify(masks, patch)), EPS, STEPS)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        adversarial_logits = model(adversarial)
    torch.save({"images": images, "labels": labels, "masks": masks, "logits": logits,
                "adversarial": adversarial, "adversarial_logits": adversarial_logits,
                "image_auroc": 100 * float(image_auc), "pixel_auroc": 100 * float(pixel_auc),
                "pgd_seconds": seconds, "timm": str(timm.__version__), "torch": str(torch.__version__),
                "size": args.size, "seed": args.seed}, out / "outputs.pt")


# -- the robustad stage ------------------------------------------------------------------------------
def robustad_detector(size: str, weights: Path):
    from robustad.methods import create_method

    overrides = dict(TINY) if size == "tiny" else {}
    return create_method("patchguard", profile="official", weights=str(weights), **overrides)


def compare(directory: Path) -> dict:
    """robustad on the official stage's files in `directory`: the differences, as a dict."""
    import torch

    from robustad.attacks import create_attack
    from robustad.bench.evaluation.metrics import image_auroc, pixel_auroc

    official = torch.load(directory / "outputs.pt", map_location="cpu", weights_only=True)
    detector = robustad_detector(official["size"], directory / "state_dict.pth").eval()
    images, labels, masks = official["images"], official["labels"], official["masks"]
    with torch.no_grad():
        logits = detector(images)
    size = images.shape[-1]
    scores = detector.score(logits)
    maps = detector.anomaly_map(logits, size)
    ours_image = image_auroc(labels.numpy(), scores.numpy())
    ours_pixel = pixel_auroc(masks[:, 0].numpy(), maps.numpy())
    attack = create_attack("pgd", eps=EPS, steps=STEPS, step_size=2.5 * EPS / STEPS, random_start=False,
                           keep_best=False)
    start = time.perf_counter()
    adversarial = attack(detector, images, masks, labels)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        adversarial_logits = detector(adversarial).flatten(1)
    pixel_gap = (adversarial - official["adversarial"]).abs()
    step = 2.5 * EPS / STEPS
    return {
        "size": official["size"], "image_size": size, "seed": official["seed"], "n_test": len(labels),
        "official_versions": {"timm": official["timm"], "torch": official["torch"]},
        "parameters": sum(t.numel() for t in detector.net.state_dict().values()),
        "state_dict_keys": len(detector.net.state_dict()),
        "weights_sha256": detector.released_weights["sha256"],
        "logits_max_abs_diff": float((logits.flatten(1) - official["logits"]).abs().max()),
        "logits_max_abs": float(official["logits"].abs().max()),
        "image_auroc": {"official": official["image_auroc"], "robustad": ours_image},
        "pixel_auroc": {"official": official["pixel_auroc"], "robustad": ours_pixel},
        "pgd": {
            "eps": EPS, "steps": STEPS, "step_size": step,
            "adversarial_max_abs_diff": float(pixel_gap.max()),
            "pixels_differing_fraction": float((pixel_gap > 1e-6).float().mean()),
            "pixels_differing_by_a_step_or_more": float((pixel_gap > step * 0.999).float().mean()),
            "adversarial_logits_max_abs_diff": float((adversarial_logits - official["adversarial_logits"]).abs().max()),
            "seconds": {"official": official["pgd_seconds"], "robustad": seconds},
        },
    }


def write_fixture(directory: Path, fixture: Path) -> None:
    """The tiny run's state_dict, inputs and official outputs, for tests/test_patchguard_official.py."""
    import shutil

    fixture.mkdir(parents=True, exist_ok=True)
    full_shapes = directory.parent / "full" / "state_dict_shapes.json"
    if full_shapes.is_file():  # the full-size network's keys and shapes, for a key-for-key test
        shutil.copyfile(full_shapes, fixture / "full_state_dict_shapes.json")
    shutil.copyfile(directory / "state_dict.pth", fixture / "state_dict.pth")
    shutil.copyfile(directory / "outputs.pt", fixture / "outputs.pt")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-src", required=True, help="a checkout of github.com/rohban-lab/PatchGuard")
    parser.add_argument("--official-python", default=sys.executable,
                        help="the interpreter for the official code (timm < 1.0.2x), default this one")
    parser.add_argument("--size", nargs="+", default=["full", "tiny"], choices=["full", "tiny"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--fixture", help="write the tiny run's files here (a folder)")
    parser.add_argument("--stage", choices=["official"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage == "official":
        args.size = args.size[0]
        official_stage(args)
        return 0
    if not (Path(args.official_src) / "patchguard.py").is_file():
        parser.error(f"--official-src {args.official_src}: no patchguard.py there (expected a checkout of "
                     f"rohban-lab/PatchGuard)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.size:
            directory = Path(tmp) / size
            subprocess.run([args.official_python, str(Path(__file__).resolve()), "--stage", "official",
                            "--official-src", args.official_src, "--size", size, "--seed", str(args.seed),
                            "--n-test", str(args.n_test), "--out", str(directory)], check=True)
            results.append(compare(directory))
            if size == "tiny" and args.fixture:
                write_fixture(directory, Path(args.fixture))
    print(json.dumps({"official_src": str(Path(args.official_src).resolve()), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
