"""Cost curves of robustad's PGD: attack time and peak memory as images, steps and image size grow.

PGD-1000 on every test image is the suite's main cost; this script measures how that cost scales,
so that a grid's time and memory can be predicted. Around a base point (images n₀, steps s₀, image
side p₀) it sweeps one factor at a time, times `robustad.attacks.pgd.PGD` (L∞, ε = 8/255, last
iterate) on an untrained PatchGuard of the chosen profile built at each image size, and records
the peak memory of each attack call:

- CUDA: `torch.cuda.max_memory_allocated` above what was allocated before the call;
- CPU: the process's resident memory (Linux /proc/self/statm, sampled every 2 ms by a thread)
  above its value before the call (torch's CPU allocator has no statistics; tracemalloc does not
  see tensors). So that freed tensors leave the resident set at once (glibc would otherwise keep
  them for reuse and hide later peaks), the script re-executes itself with
  `MALLOC_MMAP_THRESHOLD_=65536` (allocations of 64 KiB or more are mapped and unmapped on free).

It fits, by least squares in log-log space over all points, time ∝ images^a · steps^b · pixels^c
(pixels = side²) and the same form for peak memory, and reports local slopes along each sweep
(where the curve departs from a power law). It writes `attack_scaling.json` and
`attack_scaling.png` (log-log time and memory against each factor, with the fitted lines) to OUTDIR
and prints the JSON.

    python benchmarks/attack_scaling.py OUTDIR                       # CPU, quick profile, a few minutes
    python benchmarks/attack_scaling.py OUTDIR --device cuda --profile paper \\
        --images 8,16,32,64,128 --steps 5,10,20,40 --sizes 112,224,336,448 --base 32,10,224
    python benchmarks/attack_scaling.py OUTDIR --tiny                # seconds: a smoke run (tests)

Each point is timed `--repeats` times after one untimed PGD-1 on the same shapes (allocator warm-up,
and compilation with `--compile`). On CUDA the median wall time is fitted; on the CPU the smallest
CPU time of this process (`time.process_time`; with `OMP_NUM_THREADS=1` the compute of one core),
which other jobs on a shared machine disturb far less than wall time (`fit_wall_time` fits the
median wall time too).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from robustad.attacks import create_attack
from robustad.core.files import write_text_atomic

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# -- memory ---------------------------------------------------------------------------------------
def resident_bytes() -> int | None:
    """This process's resident memory (Linux), None where /proc is missing."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_BYTES
    except OSError:
        return None


class PeakMemory:
    """Context manager: `.peak_mib`, the peak memory of the block above its start (see the module doc)."""

    def __init__(self, device: torch.device, interval_s: float = 0.002):
        self.device = device
        self.interval_s = interval_s
        self.peak_mib: float | None = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self.start = resident_bytes()
        self.peak = self.start
        self.stop_event = threading.Event()
        if self.start is not None:
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            self.peak = max(self.peak, resident_bytes())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self.start) / 2**20
            return False
        if self.start is not None:
            self.stop_event.set()
            self.thread.join()
            self.peak = max(self.peak, resident_bytes())
            self.peak_mib = (self.peak - self.start) / 2**20
        return False


# -- the sweep ------------------------------------------------------------------------------------
def sweep_points(images: list[int], steps: list[int], sizes: list[int], base: tuple[int, int, int]):
    """(images, steps, side) points: each factor swept with the other two at the base; no duplicates."""
    n0, s0, p0 = base
    points = [(n, s0, p0) for n in images] + [(n0, s, p0) for s in steps] + [(n0, s0, p) for p in sizes]
    return list(dict.fromkeys(points))


def batch_of(n: int, side: int, seed: int, device: torch.device):
    """n images (uniform noise, deterministic) with a square defect mask on every other image."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, side, side, generator=generator)
    masks = torch.zeros(n, 1, side, side)
    masks[1::2, :, side // 4:side // 2, side // 4:side // 2] = 1.0
    return images.to(device), masks.to(device)


def precision_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_point(detector, n: int, steps: int, side: int, args, device: torch.device) -> dict:
    images, masks = batch_of(n, side, args.seed, device)
    options = {"compile": True} if args.compile else {}
    with precision_context(device, args.precision):
        create_attack("pgd", eps=8 / 255, steps=1, keep_best=False, **options)(detector, images, masks)  # warm-up
        attack = create_attack("pgd", eps=8 / 255, steps=steps, keep_best=False, **options)
        seconds, cpu_seconds, peaks = [], [], []
        for _ in range(args.repeats):
            synchronize(device)
            with PeakMemory(device) as memory:
                start, start_cpu = time.perf_counter(), time.process_time()
                attack(detector, images, masks)
                synchronize(device)
                seconds.append(time.perf_counter() - start)
                cpu_seconds.append(time.process_time() - start_cpu)
            peaks.append(memory.peak_mib)
    median = statistics.median(seconds)
    return {"images": n, "steps": steps, "side": side, "pixels": side * side,
            "seconds": median, "seconds_min": min(seconds), "seconds_all": seconds,
            "cpu_seconds": min(cpu_seconds), "cpu_seconds_all": cpu_seconds,
            "images_steps_per_s": n * steps / median,
            "peak_memory_mib": max(p for p in peaks) if all(p is not None for p in peaks) else None}


# -- fitting --------------------------------------------------------------------------------------
def fit_exponents(points: list[dict], key: str) -> dict | None:
    """Least squares of log(key) = k + a·log(images) + b·log(steps) + c·log(pixels) over the points.

    Returns {"a", "b", "c", "log_constant", "r2"}; None when fewer usable points than unknowns.
    An exponent whose factor never varies is reported as None (not identifiable)."""
    usable = [p for p in points if p.get(key) is not None and p[key] > 0]
    if len(usable) < 2:
        return None
    columns = {"a": "images", "b": "steps", "c": "pixels"}
    varying = [name for name, field in columns.items() if len({p[field] for p in usable}) > 1]
    design = np.column_stack([np.ones(len(usable))] + [np.log([p[columns[name]] for p in usable]) for name in varying])
    target = np.log([p[key] for p in usable])
    if design.shape[0] < design.shape[1]:
        return None
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    predicted = design @ solution
    total = float(((target - target.mean()) ** 2).sum())
    result = {"log_constant": float(solution[0]), "r2": 1 - float(((target - predicted) ** 2).sum()) / total
              if total > 0 else 1.0}
    for name in columns:
        result[name] = float(solution[1 + varying.index(name)]) if name in varying else None
    return result


def local_slopes(points: list[dict], factor: str, base: dict, key: str) -> list[dict]:
    """d log(key) / d log(factor) between consecutive points of the sweep of `factor`."""
    others = [f for f in ("images", "steps", "pixels") if f != factor]
    line = sorted((p for p in points if all(p[o] == base[o] for o in others) and p.get(key)),
                  key=lambda p: p[factor])
    return [{"from": a[factor], "to": b[factor],
             "slope": float(np.log(b[key] / a[key]) / np.log(b[factor] / a[factor]))}
            for a, b in zip(line, line[1:]) if a[key] > 0 and b[key] > 0]


# -- plotting -------------------------------------------------------------------------------------
def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    points, base = result["points"], result["base"]
    factors = [("images", "images per attack", "a"), ("steps", "PGD steps", "b"), ("pixels", "pixels per image", "c")]
    time_label = "CPU time (s)" if result["time_key"] == "cpu_seconds" else "time (s)"
    rows = [(result["time_key"], time_label, result["fit_time"]), ("peak_memory_mib", "peak memory (MiB)", result["fit_memory"])]
    figure, axes = plt.subplots(2, 3, figsize=(12, 7), squeeze=False)
    for row, (key, label, fit) in enumerate(rows):
        for column, (factor, xlabel, exponent) in enumerate(factors):
            ax = axes[row][column]
            others = [f for f in ("images", "steps", "pixels") if f != factor]
            line = sorted((p for p in points if all(p[o] == base[o] for o in others) and p.get(key)),
                          key=lambda p: p[factor])
            if not line:
                ax.set_visible(False)
                continue
            xs = np.array([p[factor] for p in line], dtype=float)
            ys = np.array([p[key] for p in line], dtype=float)
            ax.loglog(xs, ys, "o-", label="measured")
            if fit and fit.get(exponent) is not None and ys.min() > 0:
                anchor = np.exp(np.mean(np.log(ys) - fit[exponent] * np.log(xs)))
                ax.loglog(xs, anchor * xs ** fit[exponent], "--", label=f"fit: ∝ {factor}^{fit[exponent]:.2f}")
            ax.set_xticks(xs)
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.tick_params(axis="x", labelrotation=45 if factor == "pixels" else 0, labelsize=8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    held = f"base: {base['images']} images, {base['steps']} steps, {base['side']} px"
    figure.suptitle(f"PGD cost on {result['device']} ({result['profile']} PatchGuard, {result['precision']}"
                    f"{', compiled' if result['compile'] else ''}); {held}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- main -----------------------------------------------------------------------------------------
TINY = {"profile": "quick", "images": [1, 2, 4], "steps": [1, 2, 4], "sizes": [16, 32], "base": (2, 2, 16),
        "repeats": 1}
CPU_DEFAULT = {"profile": "quick", "images": [1, 2, 4, 8, 16, 32, 64], "steps": [2, 4, 8, 16, 32],
               "sizes": [32, 64, 128, 192, 256, 384], "base": (4, 4, 64), "repeats": 3}
CUDA_DEFAULT = {"profile": "paper", "images": [8, 16, 32, 64, 128], "steps": [5, 10, 20, 40],
                "sizes": [112, 224, 336, 448], "base": (32, 10, 224), "repeats": 3}


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", help="folder for attack_scaling.json and attack_scaling.png (created)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--profile", help="PatchGuard profile (default: quick on the CPU, paper on CUDA)")
    parser.add_argument("--images", type=int_list, help="images per attack, swept (e.g. 1,2,4,8,16)")
    parser.add_argument("--steps", type=int_list, help="PGD steps, swept (e.g. 2,4,8,16)")
    parser.add_argument("--sizes", type=int_list, help="image sides in px, swept (multiples of the patch size)")
    parser.add_argument("--base", type=int_list, help="images,steps,side held while another factor is swept")
    parser.add_argument("--repeats", type=int, help="timed attacks per point (default: 2 on the CPU, 3 on CUDA)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="autocast (default: fp32)")
    parser.add_argument("--compile", action="store_true", help="PGD(compile=True): torch.compile'd attack step")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, seconds on the CPU (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    defaults = TINY if args.tiny else CUDA_DEFAULT if device.type == "cuda" else CPU_DEFAULT
    for key in ("profile", "images", "steps", "sizes", "base", "repeats"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    if len(args.base) != 3:
        parser.error(f"--base {args.base}: expected three integers images,steps,side")
    args.base = tuple(args.base)
    return args


def main(argv=None) -> dict:
    from robustad.methods import create_method

    args = parse_args(argv)
    device = torch.device(args.device)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True))
    points = sweep_points(args.images, args.steps, args.sizes, args.base)
    detectors = {}
    measured = []
    started = time.perf_counter()
    for n, steps, side in points:
        if side not in detectors:
            detectors[side] = create_method("patchguard", profile=args.profile, seed=args.seed,
                                            image_size=side).to(device).eval()
        point = measure_point(detectors[side], n, steps, side, args, device)
        measured.append(point)
        log(f"{n:4d} images × PGD-{steps:<4d} at {side:4d} px: {point['seconds']:8.3f} s "
            f"(CPU {point['cpu_seconds']:.3f} s; {point['images_steps_per_s']:.1f} images·steps/s), "
            f"peak {point['peak_memory_mib']} MiB")
    # the CPU: this process's CPU time (other jobs on a shared machine inflate wall time far more);
    # CUDA: wall time (the host thread mostly waits for the device)
    time_key = "seconds" if device.type == "cuda" else "cpu_seconds"
    n0, s0, p0 = args.base
    base = {"images": n0, "steps": s0, "side": p0, "pixels": p0 * p0}
    config = detectors[p0 if p0 in detectors else next(iter(detectors))].config
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "profile": args.profile,
        "model": {"vit_embed_dim": config.vit_embed_dim, "vit_depth": config.vit_depth, "patch_size": config.patch_size},
        "precision": args.precision,
        "compile": args.compile,
        "repeats": args.repeats,
        "base": base,
        "points": measured,
        "time_key": time_key,
        "fit_time": fit_exponents(measured, time_key),
        "fit_wall_time": fit_exponents(measured, "seconds"),
        "fit_memory": fit_exponents(measured, "peak_memory_mib"),
        "local_slopes_time": {f: local_slopes(measured, f, base, time_key) for f in ("images", "steps", "pixels")},
        "local_slopes_memory": {f: local_slopes(measured, f, base, "peak_memory_mib")
                                for f in ("images", "steps", "pixels")},
        "memory_method": "cuda max_memory_allocated" if device.type == "cuda" else "resident memory (/proc/self/statm)",
        "wall_seconds": time.perf_counter() - started,
    }
    write_text_atomic(outdir / "attack_scaling.json", json.dumps(result, indent=1))
    plot(result, outdir / "attack_scaling.png")
    print(json.dumps(result, indent=1))
    return result


MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


if __name__ == "__main__":
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()) and sys.platform.startswith("linux"):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    main()
