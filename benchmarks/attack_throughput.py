"""Attack and adversarial-training throughput of robustad's engine against the published loop.

PGD-1000 on every test image is this benchmark suite's main cost (PatchGuard, CVPR 2025,
https://arxiv.org/abs/2506.09237, §6: ε = 8/255 L∞, step 2.5·ε/steps, no random start). In ONE
run, on the same model (the `paper` PatchGuard: ViT-S/14 at 224 px + attention discriminator,
untrained weights: throughput does not depend on them), the same images (textures/brick test set,
exact defect masks) and the same seed, this script measures images·steps per second of

- `official`: the loop of github.com/rohban-lab/PatchGuard `attack.py` as published, re-implemented
  here: parameters requiring gradients, `loss.backward()` (parameter gradients computed and
  accumulated), batches of 4 (`--test_batch_size` default), no autocast;
- `ours_fp32`: `robustad.attacks.pgd.PGD` (gradient w.r.t. the input only, parameters frozen), at
  the official batch size and at the engine's own batch size (`attacks/batching.py`: the whole
  set on CUDA, 16 on the CPU), plus a CUDA-graph variant on CUDA (`cuda_graph=True`);
- `ours_bf16`: the same under `torch.autocast(bfloat16)` (the runner's `--precision bf16`);
- `torchattacks`: torchattacks' PGD on the detector wrapped as a two-class classifier whose
  cross-entropy is a monotone function of our margin loss (same sign steps, same result).

It prints the ratios, the fraction of this machine's measured matmul throughput (fp32 and bf16,
a timed large matmul) the attack achieves, peak memory, the memory left allocated after each batch
(leaked graphs would grow it), the adversarial image and pixel AUROC of each variant (which must
agree) and the fraction of pixels whose adversarial value differs from the official loop's. It
also times one adversarial training step (PGD-10 + update) of `adversarial_training.training_step`
against a straightforward implementation of the official `train_step`. `--json` prints one JSON
object (keys include speedup_fp32, speedup_bf16, auroc_delta_bf16, train_speedup).

    python benchmarks/attack_throughput.py --quick              # 2-core CPU, a few minutes
    python benchmarks/attack_throughput.py --device cuda --json # GPU, ~1-3 minutes

On a shared CPU, `--rounds 3` interleaves the variants and keeps each one's fastest round, and the
`*_cpu_time` ratios use this process's CPU time, which other processes disturb less than wall time.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time

import torch

from robustad.attacks import create_attack
from robustad.attacks.batching import ChunkedAttack, default_max_batch
from robustad.attacks.objectives import AttackObjective
from robustad.attacks.threat_model import parse_eps
from robustad.bench.evaluation.metrics import image_auroc, pixel_auroc
from robustad.datasets import create_dataset
from robustad.methods import create_method

OFFICIAL_BATCH = 4  # rohban-lab/PatchGuard main.py --test_batch_size


# -- measuring ------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: peak allocated memory since the last reset; CPU: the process's peak RSS (monotone)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def allocated_mib(device: torch.device) -> float | None:
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """Measured TFLOP/s of a (size × size) @ (size × size) product on `device` in `dtype`."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def flops_by_op(function) -> dict[str, int]:
    """FLOPs of the matmuls, convolutions and attention inside `function()`, per aten op (torch's counter).

    torch's counter knows the CUDA attention kernels only; the CPU flash-attention kernels get the
    same formulas here, so that a CPU count includes attention (the backward's recomputation
    counted as the CUDA kernels' is: 2.5× the forward)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def forward(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    cpu_attention = {aten._scaled_dot_product_flash_attention_for_cpu: forward,
                     aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        function()
    return {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}


def count_flops(function) -> int:
    """Total FLOPs of `function()` (`flops_by_op`)."""
    return sum(flops_by_op(function).values())


def input_gradient_only(objective, images):
    """What `loss_and_grad` computes, through `.backward(inputs=...)` (countable by FlopCounterMode)."""
    x = images.detach().requires_grad_(True)
    objective.loss(x).sum().backward(inputs=[x])
    return x.grad


# -- data ---------------------------------------------------------------------------------------
def test_images(n_images: int, image_size: int, device: torch.device):
    """n_images of textures/brick (both classes, evenly spread): images, masks, labels on device."""
    dataset = create_dataset("textures", category="brick", split="test", image_size=image_size)
    step = max(1, len(dataset) // n_images)
    indices = [(i * step) % len(dataset) for i in range(n_images)]
    items = [dataset[i] for i in indices]
    images = torch.stack([item["image"] for item in items]).to(device)
    masks = torch.stack([item["mask"] for item in items]).to(device)
    labels = torch.tensor([float(item["label"]) for item in items], device=device)
    return images, masks, labels


def precision_context(device: torch.device, precision: str):
    """The runner's `--precision`: fp32 (nothing) or bf16 autocast."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# -- the three attack loops ------------------------------------------------------------------------
def official_pgd(model, images, cell_targets, eps: float, steps: int):
    """rohban-lab/PatchGuard attack.py `pgd_attack`, re-implemented: parameters keep requires_grad."""
    alpha = 2.5 * eps / steps
    original = images.clone().detach()
    x = original.clone()
    for _ in range(steps):
        x.requires_grad = True
        scores = model(x).flatten(1)
        normal_count = (cell_targets == 0).sum(dim=1)
        anomalous_count = (cell_targets != 0).sum(dim=1)
        anomalous = (cell_targets * scores).sum(dim=1) / (anomalous_count + 1e-8)
        normal = ((1 - cell_targets) * scores).sum(dim=1) / (normal_count + 1e-8)
        loss = normal.sum() - anomalous.sum()
        loss.backward()
        delta = torch.clamp(x + alpha * x.grad.sign() - original, min=-eps, max=eps)
        x = torch.clamp(original + delta, min=0, max=1).detach_()
    return x


class TwoClassMargin(torch.nn.Module):
    """The detector as a 2-class classifier: logits [0, margin]; CE(·, 0) = softplus(margin)."""

    def __init__(self, detector, targets: torch.Tensor):
        super().__init__()
        self.detector = detector
        self.targets = targets
        self.offset = 0

    def forward(self, images):
        from robustad.attacks.objectives import flip_loss

        targets = self.targets[self.offset:self.offset + images.shape[0]]
        margin = flip_loss(self.detector(images).flatten(1), targets)
        return torch.stack([torch.zeros_like(margin), margin], dim=1)


def run_batches(images, batch: int, attack_batch, device: torch.device):
    """Runs `attack_batch(start, stop)` over the images; returns (adv, seconds, MiB left allocated after
    each batch besides the results kept: constant unless graphs leak; None on the CPU)."""
    pieces, allocated = [], []
    synchronize(device)
    start_time, start_cpu = time.perf_counter(), time.process_time()
    for start in range(0, images.shape[0], batch):
        pieces.append(attack_batch(start, min(start + batch, images.shape[0])))
        synchronize(device)
        if device.type == "cuda":  # what stays allocated besides the adversarial images kept so far
            kept = sum(piece.numel() * piece.element_size() for piece in pieces) / 2**20
            allocated.append(allocated_mib(device) - kept)
        else:
            allocated.append(None)
    cpu_seconds = time.process_time() - start_cpu
    return torch.cat(pieces), time.perf_counter() - start_time, allocated, cpu_seconds


def run_official(detector, images, targets, eps, steps, batch, device):
    detector.eval()
    detector.requires_grad_(True)
    try:
        return run_batches(images, batch, lambda a, b: official_pgd(detector, images[a:b], targets[a:b], eps, steps),
                           device)
    finally:
        detector.zero_grad(set_to_none=True)


def run_ours(detector, images, masks, labels, eps, steps, batch, device, precision, cuda_graph=False,
             compile=False):
    options = {**({"cuda_graph": True} if cuda_graph else {}), **({"compile": True} if compile else {})}
    attack = create_attack("pgd", norm="linf", eps=eps, steps=steps, keep_best=False, **options)
    chunked = ChunkedAttack(attack, max_batch=batch)
    with precision_context(device, precision):
        out = run_batches(images, batch or images.shape[0],
                          lambda a, b: chunked(detector, images[a:b], masks[a:b], labels[a:b]), device)
    return (*out, chunked.max_batch or images.shape[0])


def run_torchattacks(detector, images, targets, eps, steps, batch, device):
    import torchattacks

    wrapped = TwoClassMargin(detector, targets).eval()
    attack = torchattacks.PGD(wrapped, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=False)
    zeros = torch.zeros(images.shape[0], dtype=torch.long, device=device)

    def attack_batch(a, b):
        wrapped.offset = a
        return attack(images[a:b], zeros[a:b])

    detector.requires_grad_(True)
    return run_batches(images, batch, attack_batch, device)


# -- adversarial training: one step, ours vs the official structure ------------------------------
def official_training_step(detector, optimizer, normal, anomalous, anomaly_masks, eps, steps):
    """rohban-lab/PatchGuard train_model.py `train_step` for one batch, on our model and loss.

    The model stays in train mode, the training PGD runs with parameter gradients and
    `loss.backward()`, and each of the four batches (x, x_adv, x', x'_adv) has its own forward
    with attention maps for the regularizer; one backward of their sum, one optimizer step.
    """
    from robustad.methods.patchguard.adversarial_training import patch_labels, patchguard_loss

    config = detector.config
    grid = config.grid_size
    detector.train()
    detector.requires_grad_(True)
    normal_targets = torch.zeros(normal.shape[0], grid, grid, device=normal.device)
    anomaly_targets = patch_labels(anomaly_masks, grid, config.patch_label_rule)
    batches = [(normal, normal_targets), (anomalous, anomaly_targets)]
    batches += [(official_pgd(detector, x, t.flatten(1), eps, steps), t) for x, t in batches]
    loss = sum(patchguard_loss(detector.net, x, t, config).mean() for x, t in batches)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def time_training(detector, normal, anomalous, masks, repeats, device, official: bool, precision="fp32"):
    from robustad.methods.patchguard.adversarial_training import training_step

    config = detector.config
    config.train_precision = precision
    optimizer = torch.optim.AdamW(detector.net.parameters(), lr=1e-6, weight_decay=config.weight_decay)

    def step():
        if official:
            return official_training_step(detector, optimizer, normal, anomalous, masks, config.train_eps,
                                          config.train_steps)
        return training_step(detector, optimizer, normal, anomalous, masks)

    step()  # warm-up (allocator, cuBLAS handles, optimizer state)
    reset_peak_memory(device)
    times, cpu_times = [], []
    for _ in range(repeats):  # the fastest step (a shared machine's load varies)
        synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    seconds = min(times)
    config.train_precision = "fp32"
    detector.eval()
    return seconds, min(cpu_times), peak_memory_mib(device)


# -- the benchmark ------------------------------------------------------------------------------
def adversarial_auroc(detector, adv, masks, labels, precision, device):
    with torch.no_grad(), precision_context(device, precision):
        logits = detector(adv).float()
        scores = detector.score(logits).cpu().numpy()
        maps = detector.anomaly_map(logits, adv.shape[-1]).cpu().numpy()
    return image_auroc(labels.cpu().numpy(), scores), pixel_auroc(masks[:, 0].cpu().numpy(), maps)


def profile_ours(detector, images, masks, labels, eps, batch, device, precision, rows=15) -> str:
    """torch.profiler table (top ops by self time) of 3 steps of our PGD on one batch."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    attack = create_attack("pgd", norm="linf", eps=eps, steps=3, keep_best=False)
    x, m, y = images[:batch], masks[:batch], labels[:batch]
    with precision_context(device, precision):
        attack(detector, x, m, y)
        with profile(activities=activities) as prof:
            attack(detector, x, m, y)
            synchronize(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="CPU-sized: 4 images, 3 steps, 1 training step of PGD-2 on 2+2 images")
    parser.add_argument("--images", type=int, help="test images (default: 64 on cuda, 8 on cpu; quick: 4)")
    parser.add_argument("--steps", type=int, help="PGD steps (default: 50 on cuda, 5 on cpu; quick: 3)")
    parser.add_argument("--eps", type=parse_eps, default=8 / 255, help="L∞ budget, e.g. 8/255 (default: 8/255)")
    parser.add_argument("--checkpoint", help="a trained `paper` PatchGuard checkpoint (default: untrained weights; "
                        "throughput does not depend on them, adversarial AUROC does)")
    parser.add_argument("--engine-batch", type=int,
                        help="our engine's batch (default: automatic, attacks/batching.py)")
    parser.add_argument("--train-batch", type=int, help="normal (and anomalous) images per training step "
                        "(default: 16, the paper's; quick: 2)")
    parser.add_argument("--train-steps", type=int, help="training PGD steps (default: 10; quick: 2)")
    parser.add_argument("--train-repeats", type=int, help="timed training steps (default: 3; quick: 1)")
    parser.add_argument("--skip", default="", help="comma-separated variants to skip: torchattacks,train,bf16,graph,compile")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of our PGD")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved timing rounds, the fastest of each variant kept (default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    cuda = device.type == "cuda"
    n_images = args.images or (4 if args.quick else 64 if cuda else 8)
    steps = args.steps or (3 if args.quick else 50 if cuda else 5)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    log = (lambda *a: print(*a, file=sys.stderr, flush=True))

    detector = create_method("patchguard", profile="paper", seed=args.seed)
    if args.checkpoint:
        detector.load_checkpoint(args.checkpoint)
    detector.to(device).eval()
    config = detector.config
    if args.quick or args.train_steps:
        config.train_steps = args.train_steps or 2
    images, masks, labels = test_images(n_images, config.image_size, device)
    clean = adversarial_auroc(detector, images, masks, labels, "fp32", device)
    log(f"clean image AUROC {clean[0]:.2f}, pixel AUROC {clean[1]:.2f} ({n_images} images, PGD-{steps}, "
        f"eps {args.eps:.5f}, {device})")
    objective = AttackObjective.build(detector, images, masks, labels)
    targets = objective.targets
    engine_batch = args.engine_batch or default_max_batch(device)  # None: the whole set (CUDA)

    def timed(name, run, precision="fp32", per_batch=None):
        reset_peak_memory(device)
        adv, seconds, allocated, cpu_seconds, *rest = run()
        result = {
            "images_steps_per_s": n_images * steps / seconds,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "peak_memory_mib": peak_memory_mib(device),
            "allocated_after_batches_mib": allocated,
            "batch": rest[0] if rest else per_batch,
            "precision": precision,
        }
        log(f"{name:>26}: {result['images_steps_per_s']:8.2f} image·steps/s, batch {result['batch']}, "
            f"peak {result['peak_memory_mib']:.0f} MiB")
        return result, adv

    # warm-up: one short attack of each kind (kernels, allocator, cuBLAS/oneDNN caches)
    warm = images[:2]
    official_pgd(detector.requires_grad_(True), warm, targets[:2], args.eps, 1)
    detector.zero_grad(set_to_none=True)
    create_attack("pgd", eps=args.eps, steps=1)(detector, warm, masks[:2], labels[:2])

    def ours(batch, precision, cuda_graph=False, compile=False, steps=steps):
        return lambda: run_ours(detector, images, masks, labels, args.eps, steps, batch, device, precision, cuda_graph,
                                compile)

    if "compile" not in skip:  # compile every batch shape the timed runs will see (one PGD-1 each), untimed
        start_compile = time.perf_counter()
        for batch in (OFFICIAL_BATCH, engine_batch):
            ours(batch, "fp32", compile=True, steps=1)()
        if cuda and "bf16" not in skip:
            ours(engine_batch, "bf16", compile=True, steps=1)()
        compile_seconds = time.perf_counter() - start_compile
        log(f"torch.compile warm-up: {compile_seconds:.0f} s")

    # (key, label, run, precision)
    plan = [
        ("official", "official loop (batch 4)",
         lambda: (*run_official(detector, images, targets, args.eps, steps, OFFICIAL_BATCH, device), OFFICIAL_BATCH),
         "fp32"),
        ("ours_fp32", "ours fp32 (batch 4)", ours(OFFICIAL_BATCH, "fp32"), "fp32"),
        ("ours_fp32_engine", "ours fp32 (engine batch)", ours(engine_batch, "fp32"), "fp32"),
    ]
    if "compile" not in skip:
        plan += [("ours_fp32_compiled", "ours fp32 compiled (batch 4)", ours(OFFICIAL_BATCH, "fp32", compile=True),
                  "fp32"),
                 ("ours_fp32_compiled_engine", "ours fp32 compiled (engine)", ours(engine_batch, "fp32", compile=True),
                  "fp32")]
    if cuda and "graph" not in skip:
        plan += [("ours_fp32_graph", "ours fp32 graph (batch 4)", ours(OFFICIAL_BATCH, "fp32", True), "fp32"),
                 ("ours_fp32_graph_engine", "ours fp32 graph (engine)", ours(engine_batch, "fp32", True), "fp32")]
    if "bf16" not in skip:
        plan += [("ours_bf16_engine", "ours bf16 (engine batch)", ours(engine_batch, "bf16"), "bf16")]
        if cuda and "compile" not in skip:
            plan += [("ours_bf16_compiled_engine", "ours bf16 compiled (engine)", ours(engine_batch, "bf16", compile=True),
                      "bf16")]
        if cuda and "graph" not in skip:
            plan += [("ours_bf16_graph_engine", "ours bf16 graph (engine)", ours(engine_batch, "bf16", True), "bf16")]
    if "torchattacks" not in skip:
        try:
            import torchattacks  # noqa: F401

            plan += [("torchattacks", "torchattacks PGD (batch 4)",
                      lambda: (*run_torchattacks(detector, images, targets, args.eps, steps, OFFICIAL_BATCH, device),
                               OFFICIAL_BATCH), "fp32")]
        except ImportError:
            log("torchattacks is not installed: skipped (pip install torchattacks)")

    # Interleaved rounds; each variant keeps its fastest round (a shared machine's load varies).
    variants, advs, round_seconds = {}, {}, {}
    for round_index in range(args.rounds):
        log(f"round {round_index + 1}/{args.rounds}")
        for key, label, run, precision in plan:
            result, adv = timed(label, run, precision)
            round_seconds.setdefault(key, []).append(result["seconds"])
            if key not in variants or result["seconds"] < variants[key]["seconds"]:
                variants[key] = {**result, "cpu_seconds": min(result["cpu_seconds"],
                                                             variants.get(key, result)["cpu_seconds"])}
            else:
                variants[key]["cpu_seconds"] = min(variants[key]["cpu_seconds"], result["cpu_seconds"])
            advs[key] = adv
    for key, result in variants.items():
        result["image_auroc"], result["pixel_auroc"] = adversarial_auroc(
            detector, advs[key], masks, labels, result["precision"], device)
    detector.requires_grad_(True)

    # matmul throughput of this device, and the FLOPs of one image·step
    size = 8192 if cuda else 2048
    peak = {"fp32": matmul_tflops(device, torch.float32, size, 10 if cuda else 3),
            "bf16": matmul_tflops(device, torch.bfloat16, size, 10 if cuda else 3)}
    one = images[:1]
    with torch.no_grad():
        one_objective = AttackObjective.build(detector, one, masks[:1], labels[:1])
    detector.requires_grad_(False)
    flops_ours = count_flops(lambda: input_gradient_only(one_objective, one))
    detector.requires_grad_(True)
    flops_official = count_flops(lambda: official_pgd(detector, one, targets[:1], args.eps, 1))
    detector.zero_grad(set_to_none=True)
    for name, result in variants.items():
        flops = flops_official if name == "official" else flops_ours
        result["tflops"] = result["images_steps_per_s"] * flops / 1e12
        result["fraction_of_matmul_peak"] = result["tflops"] / peak[result["precision"]]

    base = variants["official"]

    def ratio(name):
        return variants[name]["images_steps_per_s"] / base["images_steps_per_s"] if name in variants else None

    def cpu_ratio(name):
        if name not in variants or cuda:
            return None
        return base["cpu_seconds"] / variants[name]["cpu_seconds"]

    def round_ratios(name):
        """Ratio to `official` in each round (the same load), with their min and median."""
        if name not in round_seconds:
            return None
        ratios = [o / v for o, v in zip(round_seconds["official"], round_seconds[name])]
        return {"per_round": ratios, "min": min(ratios), "median": statistics.median(ratios)}

    def differing(name, reference="official"):
        return float((advs[name] != advs[reference]).float().mean()) if name in advs else None

    summary = {
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
        "images": n_images,
        "steps": steps,
        "eps": args.eps,
        "checkpoint": args.checkpoint,
        "clean_image_auroc": clean[0],
        "clean_pixel_auroc": clean[1],
        "engine_batch": variants["ours_fp32_engine"]["batch"],
        "matmul_tflops_fp32": peak["fp32"],
        "matmul_tflops_bf16": peak["bf16"],
        "gflop_per_image_step_ours": flops_ours / 1e9,
        "gflop_per_image_step_official": flops_official / 1e9,
        "speedup_fp32": ratio("ours_fp32"),
        "speedup_fp32_engine_batch": ratio("ours_fp32_engine"),
        "speedup_fp32_graph": ratio("ours_fp32_graph"),
        "speedup_fp32_compiled": ratio("ours_fp32_compiled"),
        "speedup_fp32_compiled_engine_batch": ratio("ours_fp32_compiled_engine"),
        "speedup_fp32_rounds": round_ratios("ours_fp32"),
        "speedup_fp32_compiled_rounds": round_ratios("ours_fp32_compiled"),
        "compile_warmup_s": compile_seconds if "compile" not in skip else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "speedup_fp32_graph_engine_batch": ratio("ours_fp32_graph_engine"),
        "speedup_bf16": max((r for r in (ratio("ours_bf16_engine"), ratio("ours_bf16_graph_engine"),
                                         ratio("ours_bf16_compiled_engine")) if r),
                            default=None),
        "speedup_torchattacks": ratio("torchattacks"),
        # CPU time of this process: steadier than wall time on a shared CPU (not meaningful on CUDA)
        "speedup_fp32_cpu_time": cpu_ratio("ours_fp32"),
        "speedup_fp32_engine_batch_cpu_time": cpu_ratio("ours_fp32_engine"),
        "speedup_bf16_cpu_time": cpu_ratio("ours_bf16_engine"),
        "speedup_torchattacks_cpu_time": cpu_ratio("torchattacks"),
        "pixel_auroc_delta_fp32": variants["ours_fp32"]["pixel_auroc"] - base["pixel_auroc"],
        "image_auroc_delta_fp32": variants["ours_fp32"]["image_auroc"] - base["image_auroc"],
        "differing_pixels_fp32": differing("ours_fp32"),
        "differing_pixels_fp32_engine_batch": differing("ours_fp32_engine"),
        "differing_pixels_fp32_graph": differing("ours_fp32_graph"),
        "differing_pixels_fp32_compiled": differing("ours_fp32_compiled"),
        "differing_pixels_compiled_vs_eager": differing("ours_fp32_compiled", "ours_fp32"),
        "differing_pixels_graph_vs_eager": differing("ours_fp32_graph", "ours_fp32"),
        "differing_pixels_torchattacks": differing("torchattacks"),
        "differing_pixels_bf16": differing("ours_bf16_engine"),
    }
    if "ours_bf16_engine" in variants:
        bf16, fp32 = variants["ours_bf16_engine"], variants["ours_fp32_engine"]
        summary["auroc_delta_bf16"] = bf16["pixel_auroc"] - fp32["pixel_auroc"]
        summary["image_auroc_delta_bf16"] = bf16["image_auroc"] - fp32["image_auroc"]
    grown = [r["allocated_after_batches_mib"] for r in variants.values() if r["allocated_after_batches_mib"][0] is not None]
    summary["memory_growth_across_batches_mib"] = max((max(a) - min(a) for a in grown), default=None)

    if "train" not in skip:
        train_batch = args.train_batch or (2 if args.quick else 16)
        repeats = args.train_repeats or (1 if args.quick else 3)
        order = torch.argsort(labels, stable=True)
        normal_index = order[labels[order] == 0]
        anomalous_index = order[labels[order] == 1]
        pick = lambda index: index[torch.arange(train_batch, device=device) % len(index)]  # noqa: E731
        normal = images[pick(normal_index)]
        anomalous, anomaly_masks = images[pick(anomalous_index)], masks[pick(anomalous_index)]
        state = {k: v.clone() for k, v in detector.state_dict().items()}
        train = {}
        for name, official, precision in (("official", True, "fp32"), ("ours_fp32", False, "fp32"),
                                          ("ours_bf16", False, "bf16")):
            if precision == "bf16" and "bf16" in skip:
                continue
            detector.load_state_dict(state)
            seconds, cpu_seconds, memory = time_training(detector, normal, anomalous, anomaly_masks, repeats, device, official,
                                            precision)
            train[name] = {"seconds_per_step": seconds, "cpu_seconds_per_step": cpu_seconds, "peak_memory_mib": memory}
            log(f"{'train step ' + name:>26}: {seconds:8.3f} s/step (PGD-{config.train_steps}, "
                f"{train_batch}+{train_batch} images), peak {memory:.0f} MiB")
        detector.load_state_dict(state)
        summary["train"] = train
        summary["train_batch"] = train_batch
        summary["train_pgd_steps"] = config.train_steps
        summary["train_speedup"] = train["official"]["seconds_per_step"] / train["ours_fp32"]["seconds_per_step"]
        summary["train_speedup_cpu_time"] = (train["official"]["cpu_seconds_per_step"]
                                             / train["ours_fp32"]["cpu_seconds_per_step"])
        if "ours_bf16" in train:
            summary["train_speedup_bf16"] = train["official"]["seconds_per_step"] / train["ours_bf16"]["seconds_per_step"]
    summary["variants"] = variants
    if args.profile:
        table = profile_ours(detector, images, masks, labels, args.eps, min(n_images, engine_batch or n_images),
                             device, "fp32")
        summary["profile_fp32"] = table
        log(table)

    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print_report(summary)
    return summary


def print_report(summary: dict) -> None:
    from tabulate import tabulate

    rows = []
    for name, r in summary["variants"].items():
        rows.append([name, r["precision"], r["batch"], f"{r['images_steps_per_s']:.2f}",
                     f"{r['images_steps_per_s'] / summary['variants']['official']['images_steps_per_s']:.2f}×",
                     f"{r['tflops']:.2f}", f"{100 * r['fraction_of_matmul_peak']:.1f}%",
                     f"{r['peak_memory_mib']:.0f}", f"{r['image_auroc']:.2f}", f"{r['pixel_auroc']:.2f}"])
    print(f"device {summary['device']}, torch {summary['torch']}, {summary['threads']} threads; "
          f"{summary['images']} images × PGD-{summary['steps']}; matmul peak "
          f"{summary['matmul_tflops_fp32']:.2f} TFLOP/s fp32, {summary['matmul_tflops_bf16']:.2f} bf16; "
          f"{summary['gflop_per_image_step_ours']:.1f} GFLOP per image·step (official "
          f"{summary['gflop_per_image_step_official']:.1f})")
    print(tabulate(rows, headers=["variant", "precision", "batch", "img·steps/s", "vs official", "TFLOP/s",
                                  "of matmul peak", "peak MiB", "adv image AUROC", "adv pixel AUROC"]))
    keys = [k for k in summary if k.startswith(("speedup", "differing", "auroc", "image_auroc", "pixel_auroc",
                                                 "train_speedup", "memory_growth"))]
    def shown(value):
        return f"min {value['min']:.3f}, median {value['median']:.3f}" if isinstance(value, dict) else value

    print(tabulate([[k, shown(summary[k])] for k in keys], headers=["summary", "value"], floatfmt=".4g"))
    if "train" in summary:
        print(tabulate([[k, f"{v['seconds_per_step']:.3f}", f"{v['peak_memory_mib']:.0f}"]
                        for k, v in summary["train"].items()],
                       headers=[f"train step (PGD-{summary['train_pgd_steps']}, batch {summary['train_batch']}+"
                                f"{summary['train_batch']})", "s/step", "peak MiB"]))


if __name__ == "__main__":
    main()
