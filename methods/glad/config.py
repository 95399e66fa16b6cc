"""GLAD's configuration and the official code's per-class values.

GLAD (Yao et al., ECCV 2024, https://arxiv.org/abs/2406.07487; code https://github.com/hyao1/GLAD, MIT).
The official test script (`main.py`, `CLSNAMES`) sets five values per class: the denoising step
(the timestep the input's latent is noised to), the adaptive step's threshold on the DINO
anomaly score, the weight `v` of the pixel distance in the map, the minimum step below which the
adaptive step always fires, and the training checkpoint evaluated. They were chosen on the test
set (the script prints test AUROC for each): robustad selects nothing on test images and ships
them, unchanged, as the `paper` profile's values (`OFFICIAL_CLASS_VALUES`), applied per cell by
`GLAD.cell_overrides`. The README's `train.sh` gives the training settings (lr 5e-6, constant
schedule, 8-bit AdamW, fp16, gradient clipping 1.0, prompt "a photo of sks", 512 px) and
`main.py` the test ones (25 DDIM steps on MVTec AD and MPDD, 15 on VisA, guidance scale 9,
top-250 image score, Gaussian blur σ = 6). `docs/methods/glad.md` lists every value and its source.
"""
from __future__ import annotations

import dataclasses

from robustad.core.profiles import Profile
from robustad.methods.config_fields import in_range, one_of
from robustad.methods.detector import DetectorConfig

OFFICIAL = "official"
AUTO = -1  # a per-class field left to the official table (the `paper` profile)

# (denoise_step, input_threshold, v, min_step, checkpoint_step): hyao1/GLAD main.py, CLSNAMES.
OFFICIAL_CLASS_VALUES: dict[str, dict[str, tuple[int, float, float, int, int]]] = {
    "mvtec": {
        "carpet": (750, 0.32, 0, 350, 2000), "grid": (750, 0.47, 0, 350, 3000),
        "leather": (750, 0.35, 0, 350, 2500), "tile": (750, 0.35, 0, 350, 500),
        "wood": (750, 0.37, 0, 350, 1000), "bottle": (750, 0.32, 0, 350, 2500),
        "cable": (750, 0.4, 0, 350, 1500), "capsule": (600, 0.4, 0, 350, 2000),
        "hazelnut": (750, 0.5, 0, 350, 3500), "metal_nut": (750, 0.4, 0, 350, 2500),
        "pill": (750, 0.35, 0, 350, 1500), "screw": (750, 0.32, 0, 350, 3000),
        "toothbrush": (750, 0.5, 0, 350, 500), "transistor": (850, 0.5, 0, 350, 2500),
        "zipper": (750, 0.35, 0, 350, 1000),
    },
    "mpdd": {
        "bracket_black": (500, 0.35, 0, 350, 2500), "bracket_brown": (500, 0.35, 0, 350, 7000),
        "bracket_white": (450, 0.35, 0, 200, 1000), "connector": (500, 0.35, 0, 350, 1000),
        "metal_plate": (500, 0.35, 0, 350, 2500), "tubes": (500, 0.1, 0, 350, 500),
    },
    "visa": {
        "candle": (450, 0.45, 7, 200, 4000), "capsules": (450, 0.4, 7, 200, 4000),
        "cashew": (450, 0.4, 1, 200, 4000), "chewinggum": (450, 0.45, 1, 200, 4000),
        "fryum": (450, 0.35, 2, 200, 4000), "macaroni1": (450, 0.45, 7, 200, 4000),
        "macaroni2": (450, 0.45, 7, 200, 4000), "pcb1": (450, 0.3, 1, 200, 4000),
        "pcb2": (450, 0.3, 2, 200, 4000), "pcb3": (450, 0.3, 2, 200, 4000),
        "pcb4": (450, 0.3, 2, 200, 4000), "pipe_fryum": (450, 0.45, 2, 200, 4000),
    },
}
# A class the official code has no values for: MVTec AD's most common values and the end of
# training (`train.sh`: 4000 steps).
FALLBACK_CLASS_VALUES = (750, 0.35, 0, 350, 4000)
# DDIM steps per dataset (main.py: 25 on MVTec AD and MPDD, 15 on VisA and PCB-Bank).
OFFICIAL_INFERENCE_STEPS = {"visa": 15}
# Classes whose map also takes the reverse nearest-neighbour direction (main.py).
BIDIRECTIONAL_CLASSES = {("mvtec", "transistor"), ("visa", "pcb1"), ("visa", "pcb4")}
# Otsu foreground (dataset.py `generate_target_foreground_mask`): 1 = dark object on a light
# background (foreground below the Otsu threshold), 2 = light object on a dark background;
# every other class uses the whole image.
FOREGROUND_MODES = {("mvtec", "screw"): "dark", ("mvtec", "capsule"): "dark", ("mpdd", "bracket_black"): "dark",
                    ("mpdd", "bracket_brown"): "dark", ("mpdd", "bracket_white"): "light"}

PER_CLASS_FIELDS = ("denoise_step", "input_threshold", "pixel_weight", "min_step", "train_steps")


@dataclasses.dataclass
class GLADConfig(DetectorConfig):
    image_size: int = in_range(512, low=8)  # official: 512 px (resolution and dino_resolution on MVTec AD)
    top_k: int = in_range(250, low=1)  # S(x): mean of the top-250 pixels of the map (main.py)
    models: str = one_of("pretrained", ("pretrained", "tiny"))  # tiny: random diffusers models built in code
    sd_weights: str = ""  # "" (CompVis/stable-diffusion-v1-4 in the Hugging Face cache) | folder of that layout
    unet_weights: str = ""  # a fine-tuned UNet state dict (e.g. the authors' checkpoint-N/pytorch_model.bin)
    dino_weights: str = ""  # "" (dino_vitbase8_pretrain.pth in the torch hub cache / timm's HF cache) | file
    prompt: str = "a photo of sks"  # the training prompt (train.sh `--instance_prompt`)
    guidance_scale: float = in_range(9.0, low=0)  # classifier-free guidance at test time (utilize.py)
    inference_steps: int = in_range(25, low=1)  # DDIM steps over [0, denoise_step)
    denoise_step: int = in_range(AUTO, low=AUTO)  # per class; -1: the official table (`paper`)
    input_threshold: float = in_range(AUTO, low=AUTO)  # adaptive step's threshold; 0 turns it off
    pixel_weight: float = in_range(AUTO, low=AUTO)  # `v`: weight of the pixel distance in the map
    min_step: int = in_range(AUTO, low=AUTO)  # below it the adaptive step always fires
    train_steps: int = in_range(AUTO, low=AUTO)  # training steps (the official checkpoint step per class)
    cell: str = ""  # "dataset/category" whose official values apply (set per cell by GLAD.cell_overrides)
    class_values: str = one_of(OFFICIAL, (OFFICIAL, "given"))  # official: -1 fields from the table
    foreground: str = one_of("auto", ("auto", "whole", "dark", "light"))  # Otsu object mask; auto: per class
    bidirectional: str = one_of("auto", ("auto", "yes", "no"))  # reverse NN direction too; auto: per class
    dino_blocks: tuple = (3, 6, 9, 12)  # DINO blocks whose patch tokens are compared (vision_transformer.py)
    blur_sigma: float = in_range(6.0, low=0)  # Gaussian blur of the map (main.py)
    deterministic: bool = False  # True: VAE sample and noise fixed per image (seeded), not drawn per call
    noise_seed: int = in_range(0, low=0)  # the seed of the fixed draws of the deterministic mode
    batch_size: int = in_range(32, low=1)  # training batch (the official output folder: bs32)
    lr: float = in_range(5e-6, low=0, low_open=True)
    weight_decay: float = in_range(1e-2, low=0)
    texture_source: str = one_of("dtd", ("dtd", "train", "procedural"))  # anomaly textures (DTD officially)
    dtd_root: str = ""
    grad_checkpoint: bool = True  # recompute each DDIM step in the backward pass (memory for PGD at 512 px)
    tiny_width: int = in_range(32, low=8)  # tiny models only: channels of the UNet/VAE, width of the ViT


PROFILES = {
    Profile.PAPER: GLADConfig(),
    Profile.QUICK: GLADConfig(
        image_size=32, top_k=8, models="tiny", inference_steps=3, denoise_step=750, input_threshold=0.35,
        pixel_weight=0.0, min_step=350, train_steps=4, class_values="given", dino_blocks=(1, 2, 3, 4),
        blur_sigma=1.0, batch_size=4, lr=1e-4, texture_source="train", grad_checkpoint=False,
    ),
}


def official_values(cell: str) -> tuple[tuple[int, float, float, int, int], int | None]:
    """The official (denoise_step, input_threshold, v, min_step, checkpoint_step) of `dataset/category`
    and the dataset's DDIM steps (None: the default 25); the fallback for a class without values."""
    dataset, _, category = cell.partition("/")
    values = OFFICIAL_CLASS_VALUES.get(dataset, {}).get(category, FALLBACK_CLASS_VALUES)
    return values, OFFICIAL_INFERENCE_STEPS.get(dataset)


def resolve(config: GLADConfig) -> GLADConfig:
    """`config` with every per-class field left at -1 filled from the official table (`cell`)."""
    unset = [name for name in PER_CLASS_FIELDS if getattr(config, name) == AUTO]
    if config.class_values != OFFICIAL:
        if unset:
            raise ValueError(f"method 'glad': with --config class_values=given, set --config {', '.join(unset)}")
        return config
    values, steps = official_values(config.cell)
    filled = {name: value for name, value in zip(PER_CLASS_FIELDS, values) if name in unset}
    if steps is not None and config.inference_steps == 25:
        filled["inference_steps"] = steps
    return dataclasses.replace(config, **filled)


def class_key(cell: str) -> tuple[str, str]:
    dataset, _, category = cell.partition("/")
    return dataset, category
