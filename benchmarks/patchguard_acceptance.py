"""Acceptance measurement (not a test): PatchGuard on one `textures` category, adversarial vs clean training.

python benchmarks/patchguard_acceptance.py --category brick --device cpu [--set key=value ...] [--variants adv,clean]
    [--steps 20,100] [--train-check] [--save-dir DIR | --checkpoint FILE] [--train-images N] [--profile long|paper]
    [--pseudo-anomalies test-defects|mixed] [--top-k 1,5,16,64] [--image-by-kind] [--attacks autoattack-20,...]
    [--curve-every N [--curve-figure FILE.png]]
The `quick` profile (default) fits the ~10 minutes of a 2-core CPU; `--profile long` (width 192, 900
epochs) about an hour there; `--profile paper` (ViT-S, 224 px, PGD-10 training, 300 epochs) needs a
GPU (`--device cuda`).
Prints one JSON line per variant: clean / PGD-N (localization) image+pixel AUROC and PGD-N
(detection objective) image AUROC for each N of --steps. --train-check adds the patch AUROC,
clean and under PGD-N (localization), on 48 training images and their pseudo anomalies: a low
figure there means the adversarial training under-fits; a high one with a low test figure means
the robustness does not carry over to the test set. The same on the test set's normal images and
their pseudo anomalies ("heldout") says which part does not: unseen normal images, or real defects;
"test" gives it on the real defects, by group and by defect kind. --top-k re-scores the same model
with S(x) = mean of the top k patch logits for each k and gives image AUROC clean and under PGD-N,
detection and localization objective: is the image score's k what an attack on it exploits?
--image-by-kind gives image AUROC per defect kind, clean and under PGD-N on the image score.
--attacks evaluates the same model under other attacks of the suite too (localization objective,
as `bench run --attack NAME`): PGD alone can overstate robustness where the gradient is masked.
--curve-every N measures the model every N epochs of its fit (and at the last): test image/pixel
AUROC clean and under PGD-N (localization) for each N of --steps, and the patch AUROC on pseudo
anomalies of the test set's normal images under the first (no real defect: what a validation set
could see). Does robustness rise with training to the end, or peak and fall (robust overfitting)?
With `ema_decay` the points measure the running weights, not their average (the final model).
--curve-figure draws it (pixel AUROC against epochs, every variant) with matplotlib.
"""
import argparse
import json
import sys
import time
from pathlib import Path

try:
    import robustad  # noqa: F401
except ImportError:  # device machine: map the repo folders onto the robustad namespace without installing
    import types

    package = types.ModuleType("robustad")
    package.__path__ = [str(Path(__file__).resolve().parents[1])]
    sys.modules["robustad"] = package
import numpy as np
import torch
from robustad.attacks import create_attack
from robustad.bench.profiles import Profile
from robustad.bench.runner import evaluate
from robustad.datasets import create_dataset
from robustad.methods import create_method


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--category", default="brick")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", default="adv,clean", help="adv (the preset), clean (adv_train=false), noreg (alpha=0)")
    ap.add_argument("--steps", default="20", help="PGD steps of the evaluation attack, comma-separated")
    ap.add_argument("--train-check", action="store_true", help="also attack the training distribution")
    ap.add_argument("--label", default="", help="a name printed with the results")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE, as bench's --config")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default=Profile.QUICK.value, choices=[p.value for p in Profile],
                    help="PatchGuard's preset (methods/patchguard/config.py)")
    ap.add_argument("--save-dir", type=Path, help="write each trained model to DIR/<label>-<variant>-seed<N>.pt")
    ap.add_argument("--checkpoint", type=Path, help="evaluate this saved model (same --set) instead of training")
    ap.add_argument("--train-images", type=int, default=0, help="fit on the first N training images only (0: all)")
    ap.add_argument("--pseudo-anomalies", default="config", choices=["config", "test-defects", "mixed"],
                    help="config: the generator the config names; test-defects: the textures test set's own defect "
                         "process (a diagnostic, textures_defect_generator.py); mixed: each image one or the other")
    ap.add_argument("--top-k", default="", help="comma list of k: image AUROC with S = mean of the top-k patch "
                                                "logits, clean and under PGD-N, for each k (the model is not retrained)")
    ap.add_argument("--image-by-kind", action="store_true",
                    help="image AUROC of each defect kind's images against the normal ones, clean and under "
                         "PGD-N on the image score (detection objective)")
    ap.add_argument("--attacks", default="",
                    help="comma list of the suite's attacks (as bench run's --attack, e.g. autoattack-20,square-5000)"
                         ": clean and adversarial image/pixel AUROC under each, localization objective; a name "
                         "without -STEPS takes the attack's own default, not the profile's 20")
    ap.add_argument("--curve-every", type=int, default=0,
                    help="every N epochs of the fit (and at its end), measure the model under --steps: a learning "
                         "curve, written as \"curve\" (0: none)")
    ap.add_argument("--curve-figure", type=Path, help="with --curve-every: draw the curve into this image file")
    args = ap.parse_args()
    attack_names = parse_attack_names(args.attacks)
    if args.curve_figure and not args.curve_every:
        raise SystemExit(f"--curve-figure {args.curve_figure}: draws the learning curve; give --curve-every N too")
    if args.curve_every < 0:
        raise SystemExit(f"--curve-every {args.curve_every}: expected a number of epochs >= 1 (0: no curve)")
    if args.curve_every and args.checkpoint:
        raise SystemExit("--curve-every measures a fit as it trains; it cannot follow --checkpoint, which does not train")
    step_counts = [int(s) for s in args.steps.split(",")]
    curves = {}
    overrides = dict(kv.split("=", 1) for kv in args.set)
    top_ks = parse_top_ks(args.top_k)
    if args.pseudo_anomalies != "config":
        train_on_test_defects(args.category, mixed=args.pseudo_anomalies == "mixed")
    device = torch.device(args.device)
    for variant in args.variants.split(","):
        extra = {"clean": {"adv_train": "false"}, "noreg": {"alpha": "0"}}.get(variant, {})
        det = create_method("patchguard", profile=args.profile, seed=args.seed, **{**overrides, **extra})
        train = create_dataset("textures", category=args.category, split="train", image_size=det.image_size)
        if args.train_images:
            train = FirstImages(train, args.train_images)
        test = create_dataset("textures", category=args.category, split="test", image_size=det.image_size)
        det.to(device)
        t0 = time.perf_counter()
        curve = []
        if args.checkpoint:
            det.load_checkpoint(args.checkpoint)  # refused, naming the fields, if --set differs
        elif args.curve_every:
            def after_epoch(epoch):
                if epoch % args.curve_every == 0 or epoch == det.config.epochs:
                    curve.append({"epoch": epoch, **learning_curve_point(det, test, step_counts, device)})
                    print(json.dumps({"variant": variant, "curve_point": curve[-1]}), file=sys.stderr, flush=True)

            det.fit(train, after_epoch=after_epoch)
        else:
            det.fit(train)
        fit_s = time.perf_counter() - t0
        if args.save_dir and not args.checkpoint:
            args.save_dir.mkdir(parents=True, exist_ok=True)
            det.save_checkpoint(args.save_dir / f"{args.label or 'run'}-{variant}-seed{args.seed}.pt")
        res = {"label": args.label, "variant": variant, "profile": args.profile, "seed": args.seed,
               "overrides": {**overrides, **extra},
               "pseudo_anomalies": args.pseudo_anomalies,
               "fit_s": round(fit_s, 1), "n_train": len(train)}
        if curve:
            res["curve"] = curves[variant] = curve
        for steps in step_counts:
            for objective in ("localization", "detection"):
                attack = create_attack(f"pgd-{steps}", objective=objective)
                t0 = time.perf_counter()
                ev = evaluate(det, test, attack, batch_size=16, device=device, progress=False)
                res[f"{objective}_pgd{steps}"] = {"clean": ev["clean"], "adv": ev["adversarial"],
                                                  "eval_s": round(time.perf_counter() - t0, 1)}
            if args.train_check:
                res[f"train_patch_auroc_pgd{steps}"] = training_distribution_auroc(det, train, steps, device)
                res[f"heldout_patch_auroc_pgd{steps}"] = training_distribution_auroc(det, test, steps, device)
                res[f"test_patch_auroc_pgd{steps}"] = test_set_auroc(det, test, steps, device)
            if top_ks:
                res[f"image_auroc_by_top_k_pgd{steps}"] = image_auroc_by_top_k(det, test, steps, device, top_ks)
            if args.image_by_kind:
                res[f"image_auroc_by_kind_pgd{steps}"] = image_auroc_by_kind(det, test, steps, device)
        for name in attack_names:
            t0 = time.perf_counter()
            ev = evaluate(det, test, create_attack(name, seed=args.seed), batch_size=16, device=device, progress=False)
            res[f"localization_{name}"] = {"clean": ev["clean"], "adv": ev["adversarial"],
                                           "eval_s": round(time.perf_counter() - t0, 1)}
        res["n_test"] = ev["n_test"]
        print(json.dumps(res), flush=True)
    if args.curve_figure:
        plot_learning_curves(curves, args.curve_figure, title=f"{args.profile}, {args.category}, seed {args.seed}")


def plot_learning_curves(curves: dict, path: Path, title: str = "") -> None:
    """Pixel AUROC against epochs for each variant's `--curve-every` points: clean, under each PGD-N,
    and the patch AUROC on the held-out pseudo anomalies under attack (dashed)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for variant, points in curves.items():
        epochs = [point["epoch"] for point in points]
        for key in [k for k in points[0] if k != "epoch"]:
            if key.startswith("heldout_"):
                values = [point[key]["adv"] for point in points]
                label, style = f"{variant}: patch, held-out pseudo anomalies, {key.removeprefix('heldout_')}", "--"
            else:
                values, label, style = [point[key]["pixel_auroc"] for point in points], f"{variant}: pixel, {key}", "-"
            ax.plot(epochs, values, style, marker="o", markersize=3, label=label)
    ax.axhline(50, color="grey", linewidth=0.8)  # chance
    ax.set_xlabel("epoch")
    ax.set_ylabel("AUROC (%)")
    ax.set_ylim(0, 100)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def learning_curve_point(det, test, step_counts: list[int], device) -> dict:
    """One point of `--curve-every`'s curve: the model as it stands, on the test set.

    "clean" and "pgdN" hold image and pixel AUROC (localization attack, each N of `step_counts`);
    "heldout_pgdN" the patch AUROC, clean and under the first N, on pseudo anomalies of the test
    set's normal images (`training_distribution_auroc`), which uses no real defect.
    """
    point = {}
    for steps in step_counts:
        ev = evaluate(det, test, create_attack(f"pgd-{steps}"), batch_size=16, device=device, progress=False)
        point["clean"] = {k: ev["clean"][k] for k in ("image_auroc", "pixel_auroc")}
        point[f"pgd{steps}"] = {k: ev["adversarial"][k] for k in ("image_auroc", "pixel_auroc")}
    heldout = training_distribution_auroc(det, test, step_counts[0], device)
    point[f"heldout_pgd{step_counts[0]}"] = {"clean": heldout["clean"], "adv": heldout["adv"]}
    return point


def parse_attack_names(text: str) -> list[str]:
    """Checks each name of --attacks before any training: a typo found after an hour's fit loses the fit."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        try:
            create_attack(name)
        except (KeyError, ValueError) as err:
            raise SystemExit(f"--attacks {name!r}: {err}") from None
    return names


def parse_top_ks(text: str) -> list[int]:
    """`--top-k 1,5,16` as [1, 5, 16]; anything but positive integers is an error naming the option."""
    try:
        ks = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise SystemExit(f"--top-k {text!r}: expected a comma list of positive integers, e.g. 1,5,16,64") from None
    if any(k < 1 for k in ks):
        raise SystemExit(f"--top-k {text!r}: expected a comma list of positive integers, e.g. 1,5,16,64")
    return ks


def image_auroc_by_top_k(det, dataset, steps: int, device, ks: list[int]) -> dict:
    """{k: {objective: [clean, PGD-`steps`] image AUROC}} with the detector's S = mean of its top-k patch logits.

    The same trained model, re-scored: only `config.top_k` changes (restored afterwards). The
    detection objective attacks S itself, so it answers whether a larger or smaller k resists it.
    """
    original = det.config.top_k
    result = {}
    try:
        for k in ks:
            det.config.top_k = k
            result[k] = {}
            for objective in ("detection", "localization"):
                ev = evaluate(det, dataset, create_attack(f"pgd-{steps}", objective=objective), batch_size=16,
                              device=device, progress=False)
                result[k][objective] = [ev["clean"]["image_auroc"], ev["adversarial"]["image_auroc"]]
    finally:
        det.config.top_k = original
    return result


def train_on_test_defects(category: str, mixed: bool = False) -> None:
    """Makes PatchGuard's fit, and --train-check, draw the textures test set's defects (`TestDefectGenerator`)
    instead of the pseudo anomalies its config names, or (`mixed`) each image one or the other at even odds:
    trained on what it is tested on, a diagnostic no real detector can use."""
    import importlib.util

    from robustad.methods.patchguard import detector

    spec = importlib.util.spec_from_file_location("textures_defect_generator",
                                                  Path(__file__).with_name("textures_defect_generator.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    configured = detector.build_pseudo_anomaly_generator

    def build(config):
        defects = module.TestDefectGenerator(category)
        return module.MixedGenerator(defects, configured(config)) if mixed else defects

    detector.build_pseudo_anomaly_generator = build


class FirstImages(torch.utils.data.Subset):
    """The first `count` items of a dataset, keeping its `format` (textures: whole-image foreground)."""

    def __init__(self, dataset, count: int):
        if not 0 < count <= len(dataset):
            raise SystemExit(f"--train-images {count}: expected 1..{len(dataset)} (the training set's size)")
        super().__init__(dataset, list(range(count)))
        self.format = dataset.format


def training_distribution_auroc(det, dataset, steps: int, device) -> dict:
    """Patch AUROC (clean, PGD-`steps`) on up to 48 normal images of `dataset` plus one pseudo anomaly of each.

    On the training set it says whether the adversarial training fits; on the test set's normal
    images ("heldout") whether that carries over to unseen normal images, before real defects.
    "adv_by_group" splits the PGD figure (`patch_auroc_breakdown`): which patches the attack wins on.
    """
    from robustad.methods.patchguard.detector import build_pseudo_anomaly_generator, generator_config, training_images

    images = training_images(dataset, det.image_size, det.config.patch_size)[:48]
    generator = build_pseudo_anomaly_generator(generator_config(det.config, dataset))
    generator.prepare(images)
    anomalous, masks = generator(images, torch.arange(len(images)), torch.Generator().manual_seed(1))
    x = torch.cat([images, anomalous.float()]).to(device)
    m = torch.cat([torch.zeros_like(masks), masks]).float().to(device)
    labels = torch.cat([torch.zeros(len(images)), torch.ones(len(images))]).to(device)
    adv = create_attack(f"pgd-{steps}")(det, x, m, labels)
    with torch.no_grad():
        clean_logits, adv_logits = det(x).cpu(), det(adv).cpu()
    clean = patch_auroc_breakdown(clean_logits, m.cpu(), labels.cpu())
    by_group = patch_auroc_breakdown(adv_logits, m.cpu(), labels.cpu())
    return {"clean": clean["all"], "adv": by_group["all"], "adv_by_group": by_group}


def test_set_auroc(det, dataset, steps: int, device) -> dict:
    """Patch AUROC (clean, PGD-`steps` localization) on the test set's real defects, by group and by kind.

    The groups are `patch_auroc_breakdown`'s; "by_kind" compares the normal patches of the normal
    images and of one defect kind's images (the folder name under test/) with that kind's anomalous ones.
    """
    x, m, labels, kinds = load_test_set(dataset, device)
    adv = create_attack(f"pgd-{steps}")(det, x, m, labels)
    result = {}
    for name, images in (("clean", x), ("adv", adv)):
        with torch.no_grad():
            logits = det(images).cpu()
        breakdown = patch_auroc_breakdown(logits, m.cpu(), labels.cpu())
        breakdown["by_kind"] = {}
        for kind in sorted(set(kinds) - {"good"}):
            keep = torch.as_tensor((kinds == kind) | (kinds == "good"))
            breakdown["by_kind"][kind] = patch_auroc_breakdown(logits[keep], m.cpu()[keep], labels.cpu()[keep])["all"]
        result[name] = breakdown
    return result


def load_test_set(dataset, device) -> tuple:
    """The test set as images (B, 3, H, W), masks (B, 1, H, W), labels (B,) on `device`, and each
    image's kind (the folder name under test/, "good" for normal images) as a numpy array."""
    items = [dataset[i] for i in range(len(dataset))]
    x = torch.stack([item["image"].float() for item in items]).to(device)
    m = torch.stack([item["mask"].float() for item in items]).to(device)
    labels = torch.tensor([float(item["label"]) for item in items], device=device)
    return x, m, labels, np.array([Path(item["path"]).parent.name for item in items])


def image_auroc_by_kind(det, dataset, steps: int, device) -> dict:
    """{kind: [clean, PGD-`steps`] image AUROC} of one defect kind's images against the normal ones.

    The attack is the detection objective on S (each image attacked once, all kinds together), so
    it says which defects the image score stops telling from normal images. "all" is every kind;
    "median_score" gives the median S of the normal and of the anomalous images, clean and attacked.
    """
    from sklearn.metrics import roc_auc_score

    x, m, labels, kinds = load_test_set(dataset, device)
    adv = create_attack(f"pgd-{steps}", objective="detection")(det, x, m, labels)
    scores = {}
    for name, images in (("clean", x), ("adv", adv)):
        with torch.no_grad():
            scores[name] = det.score(det(images)).float().cpu().numpy()
    result = {}
    for kind in ["all"] + sorted(set(kinds) - {"good"}):
        keep = (kinds == "good") | ((kinds != "good") if kind == "all" else (kinds == kind))
        truth = labels.cpu().numpy()[keep]
        result[kind] = [100 * roc_auc_score(truth, scores[name][keep]) for name in ("clean", "adv")]
    anomalous = labels.cpu().numpy() > 0.5
    result["median_score"] = {group: [float(np.median(scores[name][keep])) for name in ("clean", "adv")]
                              for group, keep in (("normal", ~anomalous), ("anomalous", anomalous))}
    return result


def patch_auroc_breakdown(logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> dict:
    """Patch AUROC (%) of `logits` (B, g, g) against pixel `masks` (B, 1, H, W), overall and by group.

    A patch is anomalous when more than 5% of its pixels are (the training rule), normal when none
    are; "all" compares every anomalous patch with every other one. The groups keep one side whole
    and narrow the other: "core" / "fringe" take as positives only the anomalous patches more than
    75% / at most 25% anomalous; "normal_images" / "anomalous_images" take as negatives only the
    normal patches of normal / of anomalous images (`labels` (B,), 1 = anomalous image). None where
    a group is empty.
    """
    from sklearn.metrics import roc_auc_score

    from robustad.attacks.objectives import patch_targets

    grid = logits.shape[-1]
    positive = patch_targets(masks, (grid, grid)).flatten().numpy() > 0
    fraction = torch.nn.functional.adaptive_avg_pool2d(masks.float(), grid)[:, 0].flatten().numpy()
    scores = logits.float().flatten().numpy()
    image_label = labels.float()[:, None].expand(-1, grid * grid).flatten().numpy()
    clean = fraction == 0

    def auroc(negatives, positives) -> float | None:
        if not negatives.any() or not positives.any():
            return None
        targets = np.concatenate([np.zeros(negatives.sum()), np.ones(positives.sum())])
        return 100 * roc_auc_score(targets, np.concatenate([scores[negatives], scores[positives]]))

    return {
        "all": auroc(~positive, positive),
        "core": auroc(~positive, fraction > 0.75),
        "fringe": auroc(~positive, positive & (fraction <= 0.25)),
        "normal_images": auroc(clean & (image_label == 0), positive),
        "anomalous_images": auroc(clean & (image_label == 1), positive),
    }


if __name__ == "__main__":
    main()
