"""robustad's MuSc forward against the official MuSc code (xrli-U/MuSc) on the same weights and images.

    python benchmarks/official_equivalence_musc.py --official-src DIR [--images 8] [--json]

DIR is a checkout of xrli-U/MuSc (nothing of it is copied here). The script registers a small
open_clip model config (12 blocks — the official tower reads the attention of block 12 —, width 32,
patch 8, 32 px) in both the official copy of open_clip (`models/backbone/open_clip`) and the
installed one, builds it with seeded random weights and saves them; then on `--images` synthetic
images at 48 px (the official `create_model(..., img_size)` resizes the position embeddings, as
robustad's loader does):

- official: its `encode_image(image, feature_layers + 1)` for the patch tokens and class embedding,
  its `LNAMD._embed` for r ∈ {1, 3, 5}, per-patch L2 normalization, its `MSM` per layer (the whole
  set, each image against all others), the mean over layers and r, the maximum per image, its `RsCIN`
  with k = [1, 2, 3] — the steps of its `models/musc.py`, in fp32 on the CPU;
- robustad: `create_method("musc", backbone=<that config>, backbone_weights=<that file>)`,
  `set_test_references(images)`, then M = `forward(images)` and S = `score(M)`, batch by batch.

It prints the largest absolute differences of M (patch maps) and S (image scores) and the score
scales; agreement to float tolerance means robustad's forward is the official computation on clean
images. The official tower is built with nn.GELU (its model config has no `quick_gelu`), as in MuSc's
518 px runs; robustad's `quick_gelu=False` matches that.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

CONFIG_NAME = "MuSc-Equivalence-Tiny"
MODEL_CONFIG = {"embed_dim": 16,
                "vision_cfg": {"image_size": 32, "layers": 12, "width": 32, "head_width": 16, "patch_size": 8},
                "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
FEATURE_LAYERS = (2, 5, 8, 11)
IMAGE_SIZE = 48
R_LIST = (1, 3, 5)
K_LIST = (1, 2, 3)


def synthetic_images(count: int, seed: int):
    """Smooth random colour textures, a few with a bright square (N, 3, S, S) in [0, 1]."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(count, 3, 6, 6, generator=gen), size=IMAGE_SIZE, mode="bilinear",
                         align_corners=False)
    images = (0.3 + 0.4 * base + 0.05 * torch.rand(count, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)).clamp(0, 1)
    for i in range(0, count, 3):
        y, x = (int(v) for v in torch.randint(0, IMAGE_SIZE - 12, (2,), generator=gen))
        images[i, :, y:y + 12, x:x + 12] = 0.95
    return images


def official_scores(src: Path, weights: Path, images, config_dir: Path):
    """(maps (N, P), scores (N,)) from the official modules, as `models/musc.py` computes them."""
    import numpy as np
    import torch

    sys.path.insert(0, str(src))
    import models.backbone.open_clip as official_open_clip  # noqa: E402 - from --official-src
    from models.modules._LNAMD import LNAMD
    from models.modules._MSM import MSM
    from models.modules._RsCIN import RsCIN

    official_open_clip.add_model_config(config_dir)
    model = official_open_clip.create_model(CONFIG_NAME, IMAGE_SIZE, pretrained=None)
    from models.backbone.open_clip.model import resize_pos_embed

    state = torch.load(weights, map_location="cpu", weights_only=True)
    resize_pos_embed(state, model)  # what its openai branch does for img_size != the config's size
    incompatible = model.load_state_dict(state, strict=False)
    if incompatible.missing_keys or any(k.startswith("visual.") for k in incompatible.unexpected_keys):
        raise SystemExit(f"the official model does not take these weights: {incompatible}")
    model.eval()
    from robustad.methods.localization.vit_tokens import ClipNormalizer

    with torch.no_grad():
        features, tokens = model.encode_image(ClipNormalizer()(images), [layer + 1 for layer in FEATURE_LAYERS])
        features = features / features.norm(dim=-1, keepdim=True)
        maps_r = []
        for r in R_LIST:
            lnamd = LNAMD(device="cpu", r=r, feature_dim=tokens[0].shape[-1],
                          feature_layer=[layer + 1 for layer in FEATURE_LAYERS])
            z = lnamd._embed(list(tokens))
            z = z / z.norm(dim=-1, keepdim=True)
            maps_r.append(torch.stack([MSM(Z=z[:, :, layer, :], device="cpu", topmin_min=0, topmin_max=0.3)
                                       for layer in range(len(FEATURE_LAYERS))]).mean(0))
        maps = torch.stack(maps_r).mean(0).float()
    ac_score = maps.numpy().max(-1)
    scores = RsCIN(ac_score, [f.numpy() for f in features], k_list=list(K_LIST))
    return maps, torch.as_tensor(np.asarray(scores)).float()


def robustad_scores(weights: Path, images, batch: int):
    import open_clip
    import torch
    from robustad.methods import create_method

    detector = create_method("musc", image_size=IMAGE_SIZE, backbone=CONFIG_NAME, backbone_weights=str(weights),
                             feature_layers=FEATURE_LAYERS, aggregation_degrees=R_LIST, rscin_k=K_LIST)
    detector.eval()
    detector.set_test_references(images)
    maps, scores = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            logits = detector(images[start:start + batch])
            maps.append(logits.flatten(1))
            scores.append(detector.score(logits))
    del open_clip
    return torch.cat(maps), torch.cat(scores)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-src", required=True, help="a checkout of xrli-U/MuSc")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=3, help="robustad's batch size (the official code scores all at once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import open_clip
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp) / "configs"
        config_dir.mkdir()
        (config_dir / f"{CONFIG_NAME}.json").write_text(json.dumps(MODEL_CONFIG))
        open_clip.add_model_config(config_dir)
        torch.manual_seed(args.seed)
        model = open_clip.create_model(CONFIG_NAME, pretrained=None)
        weights = Path(tmp) / "weights.pt"
        torch.save(model.state_dict(), weights)
        images = synthetic_images(args.images, args.seed)
        ours_maps, ours_scores = robustad_scores(weights, images, args.batch)
        official_maps, official_scores_ = official_scores(Path(args.official_src).resolve(), weights, images, config_dir)
    result = {
        "images": args.images,
        "patches": int(ours_maps.shape[1]),
        "max_abs_diff_maps": float((ours_maps - official_maps).abs().max()),
        "max_abs_maps": float(official_maps.abs().max()),
        "max_abs_diff_scores": float((ours_scores - official_scores_).abs().max()),
        "scores_official": [round(float(v), 6) for v in official_scores_],
        "scores_robustad": [round(float(v), 6) for v in ours_scores],
    }
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
