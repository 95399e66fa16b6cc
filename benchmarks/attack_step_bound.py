"""How far our PGD step can get ahead of the official loop on this CPU: its measured ceiling.

`attack_throughput.py` measures the ratio of our PGD to the official PatchGuard loop; this script
says how high that ratio can go on this machine, for one PGD step of a PatchGuard (default the
`paper` one, ViT-S/14 at 224 px) on a batch (default 4, the official loop's), all on the CPU:

- `official_s`, `ours_s`: process CPU time of one step of each (the official loop computes every
  parameter gradient, ours the input gradient only), fastest of `--rounds` interleaved rounds;
- `flops`: torch's FLOP count of each step (`attack_throughput.flops_by_op`, CPU attention
  included), split into linear layers, attention and convolution; `equal_efficiency_ceiling` =
  official FLOPs / ours: the ratio if both steps ran at the same FLOP/s;
- `ours_profile_s`: where a step of ours goes: `ours_s` split by the torch profiler's shares of
  self time into linear-layer matmuls, attention kernels and everything else (norms, GELU,
  copies, the patch embedding);
- `linear_matmuls_alone_s`: the same linear-layer matmuls (forward x·Wᵀ and input gradient dy·W at
  the step's own shapes) timed alone, and `square_matmul_gflops`, a large square matmul: the
  machine's matmul peak;
- `floor_s` = linear matmuls alone + attention FLOPs at the square-matmul peak: ours if nothing
  else cost anything; `peak_ceiling` = official_s / floor_s; `rest_budget_s` = official_s / 1.5 −
  floor_s: what all other work of a step may take for ours to be 1.5× the official loop, against
  `ours_profile_s.other` measured.

`--levers` also times candidate speed-ups of our step (ratio to `official_s`, and the fraction of
gradient signs equal to eager's): `compiled` (`PGD(compile=True)`'s forward through
`torch.compile`), `func_frozen` (the loss's input gradient as one `torch.compile`d
`torch.func.grad` graph, without autograd, parameters frozen into it by inductor's `freezing`),
`math_attention` (SDPA's math backend instead of the CPU flash-attention kernels).

Times are process CPU times at `--threads 1` (default): the ceiling is per core.

    python benchmarks/attack_step_bound.py --rounds 7 --levers all      # paper PatchGuard, ~2 min
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_throughput import (
    flops_by_op,
    input_gradient_only,
    official_pgd,
    test_images,
)
from robustad.attacks.objectives import AttackObjective
from robustad.methods import create_method

LEVERS = ("compiled", "func_frozen", "math_attention")
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def cpu_seconds(step) -> float:
    start = time.process_time()
    step()
    return time.process_time() - start


def linear_shapes(detector, images) -> Counter:
    """(rows, in, out) of every nn.Linear call of one forward, with how often each occurs."""
    shapes: Counter = Counter()

    def hook(module, args, output):
        shapes[(args[0].numel() // module.in_features, module.in_features, module.out_features)] += 1

    handles = [m.register_forward_hook(hook) for m in detector.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            detector(images)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def best_time(function, repeats: int) -> float:
    function()
    return min(cpu_seconds(function) for _ in range(repeats))


def linear_matmuls_alone(shapes: Counter, repeats: int) -> float:
    """CPU seconds of the step's linear-layer matmuls run alone: x·Wᵀ + b forward, dy·W backward."""
    total = 0.0
    for (rows, n_in, n_out), count in shapes.items():
        x, dy = torch.randn(rows, n_in), torch.randn(rows, n_out)
        weight, bias = torch.randn(n_out, n_in), torch.randn(n_out)
        forward = best_time(lambda x=x, weight=weight, bias=bias: F.linear(x, weight, bias), repeats)
        backward = best_time(lambda dy=dy, weight=weight: dy @ weight, repeats)
        total += count * (forward + backward)
    return total


def square_matmul_gflops(size: int, repeats: int) -> float:
    """GFLOP per CPU second of a (size × size) product: the peak, timed like the steps (not
    `attack_throughput.matmul_tflops`'s wall time, which load from other processes would lower)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / best_time(lambda: a @ b, repeats) / 1e9


def split_flops(function) -> dict:
    """GFLOPs of `function()` split into linear layers, attention and convolution."""
    by_op = {op: flops / 1e9 for op, flops in flops_by_op(function).items()}
    attention = sum(v for op, v in by_op.items() if "scaled_dot_product" in op)
    convolution = sum(v for op, v in by_op.items() if "convolution" in op)
    total = sum(by_op.values())
    return {"linear": total - attention - convolution, "attention": attention, "convolution": convolution,
            "total": total, "by_op": by_op}


def profile_shares(step) -> dict:
    """Shares of one step's self time (torch profiler): matmuls, attention kernels, everything else."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    split = {"linear_matmuls": 0.0, "attention": 0.0, "other": 0.0}
    for event in prof.key_averages():
        if "scaled_dot_product" in event.key:
            split["attention"] += event.self_cpu_time_total
        elif event.key in MATMUL_OPS:
            split["linear_matmuls"] += event.self_cpu_time_total
        else:
            split["other"] += event.self_cpu_time_total
    total = sum(split.values())
    return {kind: value / total for kind, value in split.items()}


def lever_steps(detector, objective, images, levers) -> dict:
    """name -> a function computing our step's input gradient through that lever."""
    steps = {}
    if "compiled" in levers:
        from robustad.attacks.compiled_step import compiled_forward

        compiled = objective.with_forward(compiled_forward())
        steps["compiled"] = lambda: compiled.loss_and_grad(images)[1]
    if "func_frozen" in levers:
        import torch._inductor.config as inductor_config

        def loss(x):
            return objective.loss_from_logits(objective.calibration.apply(detector(x).flatten(1))).sum()

        graph = torch.compile(torch.func.grad(loss), dynamic=False)

        def frozen():
            with inductor_config.patch(freezing=True), torch.no_grad():
                return graph(images)

        steps["func_frozen"] = frozen
    if "math_attention" in levers:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def math_attention():
            with sdpa_kernel(SDPBackend.MATH):
                return objective.loss_and_grad(images)[1]

        steps["math_attention"] = math_attention
    return steps


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper", help="PatchGuard profile (default: paper)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (default: 1: the ceiling is per core, and CPU time then equals busy "
                             "time; with more, CPU time also counts threads waiting at barriers)")
    parser.add_argument("--batch", type=int, default=4, help="images per step (default: 4, the official loop's)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default: 3)")
    parser.add_argument("--matmul-repeats", type=int, default=5, help="timings of each matmul alone (default: 5)")
    parser.add_argument("--levers", default="none", help=f"comma-separated, 'all' or 'none': {','.join(LEVERS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args = parser.parse_args(argv)
    levers = LEVERS if args.levers == "all" else tuple(s for s in args.levers.split(",") if s and s != "none")
    unknown = set(levers) - set(LEVERS)
    if unknown:
        parser.error(f"--levers: unknown {sorted(unknown)}; expected a comma-separated list of {', '.join(LEVERS)}, "
                     "'all' or 'none'")
    if min(args.threads, args.batch, args.rounds, args.matmul_repeats) < 1:
        parser.error("--threads, --batch, --rounds and --matmul-repeats must be at least 1")
    args.levers = levers
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        summary = measure(args, log)
    finally:
        torch.set_num_threads(threads)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print_report(summary)
    return summary


def measure(args, log) -> dict:
    detector = create_method("patchguard", profile=args.profile, seed=args.seed).eval()
    images, masks, labels = test_images(args.batch, detector.config.image_size, torch.device("cpu"))
    objective = AttackObjective.build(detector, images, masks, labels)
    targets = objective.targets

    def official():
        detector.requires_grad_(True)
        official_pgd(detector, images, targets, 8 / 255, 1)
        detector.zero_grad(set_to_none=True)

    def ours():
        detector.requires_grad_(False)
        return objective.loss_and_grad(images)[1]

    steps = {"official": official, "ours": ours}
    reference = ours()
    levers = lever_steps(detector, objective, images, args.levers)
    agreement = {}
    for name, step in levers.items():
        start = time.perf_counter()
        detector.requires_grad_(False)
        agreement[name] = (step().sign() == reference.sign()).float().mean().item()
        log(f"{name}: first call {time.perf_counter() - start:.1f} s, gradient signs equal to eager: "
            f"{agreement[name]:.6f}")
    steps.update(levers)
    for step in steps.values():  # warm-up: kernels, allocator, oneDNN caches
        step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(cpu_seconds(step))
    best = {name: min(values) for name, values in times.items()}
    per_round = [o / u for o, u in zip(times["official"], times["ours"])]

    detector.requires_grad_(True)
    flops_official = split_flops(official)
    detector.requires_grad_(False)
    flops_ours = split_flops(lambda: input_gradient_only(objective, images))
    shares = profile_shares(ours)
    ours_profile = {kind: share * best["ours"] for kind, share in shares.items()}
    shapes = linear_shapes(detector, images)
    alone = linear_matmuls_alone(shapes, args.matmul_repeats)
    peak = square_matmul_gflops(2048, args.matmul_repeats)
    attention_at_peak = flops_ours["attention"] / peak
    floor = alone + attention_at_peak
    summary = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "profile": args.profile,
        "batch": args.batch,
        "official_s": best["official"],
        "ours_s": best["ours"],
        "ratio": best["official"] / best["ours"],
        "ratio_per_round": {"values": per_round, "min": min(per_round), "median": statistics.median(per_round)},
        "flops_gflop": {"official": flops_official, "ours": flops_ours},
        "equal_efficiency_ceiling": flops_official["total"] / flops_ours["total"],
        "ours_profile_s": ours_profile,
        "ours_profile_shares": shares,
        "linear_shapes": [{"rows": r, "in": i, "out": o, "count": c} for (r, i, o), c in sorted(shapes.items())],
        "linear_matmuls_alone_s": alone,
        "linear_matmul_gflops": flops_ours["linear"] / alone,
        "square_matmul_gflops": peak,
        "attention_at_peak_s": attention_at_peak,
        "floor_s": floor,
        "peak_ceiling": best["official"] / floor,
        "rest_budget_s": best["official"] / 1.5 - floor,
        "levers": {name: {"s": best[name], "ratio": best["official"] / best[name],
                          "gradient_signs_equal": agreement[name]} for name in levers},
    }
    return summary


def print_report(s: dict) -> None:
    f = s["flops_gflop"]
    p = s["ours_profile_s"]
    print(f"{s['profile']} PatchGuard, batch {s['batch']}, {s['threads']} thread(s), {s['cpu_capability']}, "
          f"torch {s['torch']}")
    print(f"one step, CPU s: official {s['official_s']:.3f}, ours {s['ours_s']:.3f}: {s['ratio']:.2f}× "
          f"(per round {s['ratio_per_round']['min']:.2f}–{max(s['ratio_per_round']['values']):.2f})")
    print(f"GFLOP: official {f['official']['total']:.1f}, ours {f['ours']['total']:.1f} "
          f"(linear {f['ours']['linear']:.1f}, attention {f['ours']['attention']:.1f}): "
          f"equal-efficiency ceiling {s['equal_efficiency_ceiling']:.2f}×")
    print(f"ours by kind, s: linear matmuls {p['linear_matmuls']:.3f}, attention {p['attention']:.3f}, "
          f"other {p['other']:.3f}")
    print(f"linear matmuls alone {s['linear_matmuls_alone_s']:.3f} s ({s['linear_matmul_gflops']:.1f} GFLOP/s; "
          f"square matmul {s['square_matmul_gflops']:.1f}); attention at that peak {s['attention_at_peak_s']:.3f} s")
    print(f"floor {s['floor_s']:.3f} s: peak ceiling {s['peak_ceiling']:.2f}×; for 1.5× all other work must "
          f"fit in {s['rest_budget_s']:.3f} s (measured: attention beyond peak "
          f"{p['attention'] - s['attention_at_peak_s']:.3f} + other {p['other']:.3f})")
    for name, lever in s["levers"].items():
        print(f"lever {name}: {lever['s']:.3f} s, {lever['ratio']:.2f}× official, "
              f"gradient signs equal {lever['gradient_signs_equal']:.6f}")


if __name__ == "__main__":
    main()
