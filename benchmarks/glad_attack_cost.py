"""What one PGD step through GLAD's DDIM chain costs, and what PGD-1000 would (a benchmark, not a test).

python benchmarks/glad_attack_cost.py [--images 4] [--rounds 3] [--eot 1] [--set KEY=VALUE ...] [--json]

Builds GLAD at the quick profile (tiny random diffusers models: `docs/methods/glad.md`) with `--set`
overrides, and times `AttackObjective.loss_and_grad` (one forward through encode -> DDIM with the
adaptive step -> decode -> DINO distances, and one backward to the pixels; what every PGD step does)
on `--images` random images, the median of `--rounds` after one untimed warm-up. Prints the seconds
per step and per image·step, the network evaluations per forward (UNet calls, VAE decodes, DINO
passes) and the extrapolation to PGD-1000 on `--test-images` images with EOT `--eot-target`.

`--paper-flops` instead counts (torch's FLOP counter, on the meta device: nothing is computed or
downloaded) the forward+backward FLOPs of the paper-sized networks with random weights: the SD v1-4
UNet at 64×64 latents (batch 2: classifier-free guidance), the SD VAE decoder and encoder at 512 px
and DINO ViT-B/8 at 512 px, and from them one PGD step's FLOPs per image for a class's settings
(`--denoise-step`, `--inference-steps`, `--min-step`) when the adaptive step fires at once (fewest
networks) and when it fires only at `min_step` (most).
"""
import argparse
import json
import statistics
import time

import torch

from robustad.attacks.objectives import AttackObjective
from robustad.attacks.attack import frozen
from robustad.methods import create_method


def count_calls(module: torch.nn.Module) -> list[int]:
    counter = [0]
    module.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    return counter


def paper_flops(denoise_step: int, inference_steps: int, min_step: int) -> dict:
    """TFLOP (forward+backward) of the paper-sized networks and of one PGD step per image (see the docstring)."""
    import diffusers
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    from robustad.methods.glad.reconstruction import ddim_timesteps

    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # SD v1-4's UNet config
        vae = diffusers.AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                                      down_block_types=("DownEncoderBlock2D",) * 4,
                                      up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
        vit = timm.create_model("vit_base_patch8_224", pretrained=False, num_classes=0, img_size=512)
        latents = torch.empty(1, 4, 64, 64, requires_grad=True)
        image = torch.empty(1, 3, 512, 512, requires_grad=True)
        guided = torch.empty(2, 4, 64, 64, requires_grad=True)
        context = torch.empty(2, 77, 768)

    def tflop(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn().sum().backward()
        return counter.get_total_flops() / 1e12

    parts = {
        "unet_guided": tflop(lambda: unet(guided, 500, encoder_hidden_states=context).sample),
        "vae_decode": tflop(lambda: vae.decode(latents).sample),
        "vae_encode": tflop(lambda: vae.encode(image).latent_dist.mean),
        "dino": tflop(lambda: vit.forward_features(image)),
    }
    steps, _ = ddim_timesteps(denoise_step, inference_steps)
    latest = next(i for i, t in enumerate(steps) if t < min_step) + 1  # steps until min_step forces the fire
    base = parts["vae_encode"] + inference_steps * parts["unet_guided"] + parts["vae_decode"] + 2 * parts["dino"]
    adaptive = 2 * parts["vae_decode"] + 2 * parts["dino"]
    return {"tflop": parts, "adaptive_steps_max": latest, "step_tflop_min": base + adaptive,
            "step_tflop_max": base + latest * adaptive}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eot", type=int, default=1, help="EOT passes of the timed step")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="GLAD config overrides")
    parser.add_argument("--test-images", type=int, default=100, help="for the PGD-1000 extrapolation")
    parser.add_argument("--eot-target", type=int, default=20, help="EOT of the extrapolated PGD-1000")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--paper-flops", action="store_true", help="count the paper-sized networks' FLOPs instead")
    parser.add_argument("--denoise-step", type=int, default=750)
    parser.add_argument("--inference-steps", type=int, default=25)
    parser.add_argument("--min-step", type=int, default=350)
    args = parser.parse_args(argv)
    if args.paper_flops:
        result = paper_flops(args.denoise_step, args.inference_steps, args.min_step)
        print(json.dumps(result, indent=2))
        return result
    overrides = dict(item.split("=", 1) for item in args.set)
    detector = create_method("glad", profile="quick", seed=0, **overrides).eval()
    size = detector.image_size
    images = torch.rand(args.images, 3, size, size, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(args.images, 1, size, size)
    unet, decoder, dino = count_calls(detector.unet), count_calls(detector.vae.decoder), count_calls(detector.dino)
    times = []
    with frozen(detector):
        objective = AttackObjective.build(detector, images, masks, eot=args.eot)
        for round_ in range(args.rounds + 1):
            unet[0] = decoder[0] = dino[0] = 0
            start = time.perf_counter()
            objective.loss_and_grad(images)
            if round_:
                times.append(time.perf_counter() - start)
    step = statistics.median(times)
    per_image_step = step / (args.images * args.eot)
    result = {
        "image_size": size, "inference_steps": detector.config.inference_steps, "images": args.images,
        "eot": args.eot, "threads": torch.get_num_threads(), "step_s": step, "image_step_s": per_image_step,
        "unet_calls_per_forward": unet[0] // args.eot, "vae_decodes_per_forward": decoder[0] // args.eot,
        "dino_passes_per_forward": dino[0] // args.eot,
        "pgd1000_hours": per_image_step * 1000 * args.eot_target * args.test_images / 3600,
        "test_images": args.test_images, "eot_target": args.eot_target,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"GLAD quick, {size} px, {result['inference_steps']} DDIM steps, {args.images} images, EOT {args.eot}, "
              f"{result['threads']} thread(s): {step:.2f} s per PGD step, {per_image_step:.3f} s per image·pass; "
              f"per forward {result['unet_calls_per_forward']} UNet calls (batched ×2 for guidance), "
              f"{result['vae_decodes_per_forward']} VAE decodes, {result['dino_passes_per_forward']} DINO passes")
        print(f"PGD-1000 with EOT {args.eot_target} on {args.test_images} images: "
              f"{result['pgd1000_hours']:.1f} h at this speed")
    return result


if __name__ == "__main__":
    main()
