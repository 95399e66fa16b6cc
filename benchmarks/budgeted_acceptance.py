"""The acceptance measurement inside a wall-clock budget (a benchmark driver, not a test).

python benchmarks/budgeted_acceptance.py --budget-s 540 --out DIR [--profile paper] [--device cuda]
    [--variants adv,clean] [--steps 20,100] [--seeds 0,1,2] [--max-epochs N] [--set KEY=VALUE ...]
    [--attacks autoattack-20 --reserve-s S]

For a lent GPU (a few minutes, one try): times a few optimizer steps of the profile's fit
(`fit_time.py`), picks the most epochs (at most the profile's, or `--max-epochs`) that let every
variant train and be evaluated inside `--budget-s`, then runs `patchguard_acceptance.py` once per
variant and seed with that `epochs`. Writes DIR/timing.json, DIR/plan.json and one JSON line per
finished run to DIR/results.jsonl, each as soon as it is known, so a run cut short keeps what it
finished. All runs get the same epochs: the clean-trained model is the same model trained clean.
`--attacks` passes on to `patchguard_acceptance.py` (each model under those attacks too); the plan
cannot time them, so `--reserve-s` keeps that many seconds per run for them.
"""
import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS_PER_EPOCH = 4  # textures: 64 training images, batch 16
# A clean step costs about the update of an adversarial one (a forward and backward on the batch);
# the evaluation does 2 objectives × (clean + PGD-N) on the test images at the evaluation precision.
EVAL_FP32_OVER_BF16 = 4.0  # the evaluation runs fp32: a bf16-timed image-step costs up to this much more
TEST_IMAGES = 49


def plan_epochs(timing: dict, budget_s: float, variants: list[str], eval_steps: list[int], max_epochs: int,
                train_steps: int, batch_size: int = 16, seeds: int = 1, reserve_s: float = 0.0) -> dict:
    """The most epochs (≤ `max_epochs`) whose fits and evaluations of all `variants` fit in `budget_s`.

    `timing` is one `fit_time.py` mode result (seconds per optimizer step). Every variant runs once
    per seed, and each run keeps `reserve_s` more for evaluations the plan does not time. Returns
    the plan with its estimates; `epochs` 0 means not even one epoch fits.
    """
    per_step = {"adv": timing["pseudo_s"] + timing["step_s"], "clean": timing["pseudo_s"] + timing["update_s"]}
    per_epoch = seeds * sum(per_step.get(v, per_step["adv"]) for v in variants) * STEPS_PER_EPOCH
    image_step_s = timing["attack_s"] / (2 * batch_size * train_steps)  # the training attack: 2 batches
    eval_s = 2 * sum(eval_steps) * TEST_IMAGES * image_step_s * EVAL_FP32_OVER_BF16 + 20.0  # + setup
    left = budget_s - (eval_s + reserve_s) * len(variants) * seeds
    epochs = max(0, min(max_epochs, math.floor(left / per_epoch))) if per_epoch > 0 else max_epochs
    return {"epochs": epochs, "epoch_s": per_epoch, "eval_s_per_variant": eval_s, "reserve_s": reserve_s,
            "runs": len(variants) * seeds, "budget_s": budget_s, "fit_s_estimate": epochs * per_epoch}


def run_json(command: list[str], log) -> list[dict]:
    """Runs `command`, its stderr to `log`; returns the JSON objects it printed, one per line."""
    print("$", " ".join(command), file=log, flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True)
    if done.returncode:
        print(f"exit status {done.returncode}", file=log, flush=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, required=True, help="wall-clock seconds for everything")
    ap.add_argument("--out", type=Path, required=True, help="folder for timing.json, plan.json, results.jsonl, log")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--variants", default="adv,clean")
    ap.add_argument("--steps", default="20,100", help="PGD steps of the evaluation attack")
    ap.add_argument("--seeds", "--seed", default="0", help="comma list: every variant trains once per seed")
    ap.add_argument("--attacks", default="", help="passed to patchguard_acceptance.py: each model under these "
                                                  "attacks of the suite too (e.g. autoattack-20)")
    ap.add_argument("--reserve-s", type=float, default=0.0,
                    help="seconds kept per run (variant × seed) for --attacks, which the plan does not time")
    ap.add_argument("--set", nargs="*", default=[], help="PatchGuard config overrides KEY=VALUE (not epochs)")
    ap.add_argument("--max-epochs", type=int, default=0,
                    help="the most epochs to plan (default: the profile's); more for a small training set, e.g. "
                         "1500 for textures' 64 images to get the optimizer steps of 300 MVTec AD epochs")
    args = ap.parse_args()
    start = time.perf_counter()
    if any(item.startswith("epochs=") for item in args.set):
        ap.error("--set epochs=...: the driver chooses the epochs from --budget-s (cap them with --max-epochs)")
    if args.max_epochs < 0:
        ap.error(f"--max-epochs {args.max_epochs}: expected a positive number of epochs (0: the profile's)")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds {args.seeds}: expected whole numbers separated by commas, e.g. 0,1,2")
    if args.reserve_s < 0:
        ap.error(f"--reserve-s {args.reserve_s:g}: expected seconds >= 0")
    args.out.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    from_profile = preset(args.profile, args.set)
    check_attacks(args.attacks)
    with open(args.out / "log", "a") as log:
        timing = run_json([sys.executable, str(HERE / "fit_time.py"), "--profile", args.profile, "--device",
                           args.device, "--steps", "4", "--warmup", "2", "--compile", "none", "--json",
                           "--seed", str(seeds[0]), "--set", *args.set], log)
        if not timing:
            raise SystemExit(f"fit_time.py failed: see {args.out / 'log'}")
        (args.out / "timing.json").write_text(json.dumps(timing[0]))
        left = args.budget_s - (time.perf_counter() - start)
        plan = plan_epochs(timing[0]["modes"]["none"], left, variants, [int(s) for s in args.steps.split(",")],
                           args.max_epochs or from_profile["epochs"], from_profile["train_steps"],
                           from_profile["batch_size"], seeds=len(seeds), reserve_s=args.reserve_s)
        (args.out / "plan.json").write_text(json.dumps(plan))
        print(json.dumps({"timing": timing[0]["modes"]["none"], "plan": plan}), flush=True)
        if plan["epochs"] < 1:
            raise SystemExit(f"not one epoch fits in {left:.0f} s: see {args.out / 'plan.json'}")
        for seed, variant in [(seed, variant) for seed in seeds for variant in variants]:
            t0 = time.perf_counter()
            attacks = ["--attacks", args.attacks] if args.attacks else []
            results = run_json([sys.executable, str(HERE / "patchguard_acceptance.py"), "--profile", args.profile,
                                "--device", args.device, "--variants", variant, "--steps", args.steps,
                                "--seed", str(seed), *attacks, "--set", *args.set, f"epochs={plan['epochs']}"],
                               log)
            for result in results:
                result["wall_s"] = round(time.perf_counter() - t0, 1)
                with open(args.out / "results.jsonl", "a") as out:
                    out.write(json.dumps(result) + "\n")
                print(json.dumps(result), flush=True)


def acceptance_script():
    """patchguard_acceptance.py as a module (its import maps a bare checkout onto `robustad`)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import patchguard_acceptance

    return patchguard_acceptance


def check_attacks(names: str) -> None:
    """Refuses a misspelt --attacks now, not after the timing run (patchguard_acceptance.py's check)."""
    acceptance_script().parse_attack_names(names)


def preset(profile: str, overrides: list[str]) -> dict:
    """The profile's epochs, training PGD steps and batch size, after `overrides`."""
    create_method = acceptance_script().create_method
    config = create_method("patchguard", profile=profile, **dict(kv.split("=", 1) for kv in overrides)).config
    return {"epochs": config.epochs, "train_steps": config.train_steps, "batch_size": config.batch_size}


if __name__ == "__main__":
    main()
