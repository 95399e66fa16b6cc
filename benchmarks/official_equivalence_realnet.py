"""robustad's RealNet forward against the official RealNet modules (cnulab/RealNet) on the same weights.

    python benchmarks/official_equivalence_realnet.py --official-src DIR [--images 4] [--json]

DIR is a checkout of cnulab/RealNet (nothing of it is copied here). The script builds robustad's
`realnet` with a WideResNet-50 (seeded random weights: the check needs no download), at 64 px with
structure A (128 AFS channels per stage, a two-level UNet with attention at ×2, 64 channels per head,
GroupNorm 32, RRS 64 + 64), gives it random AFS indices, perturbs its zero-initialized output
convolutions and sets RRS's BatchNorm statistics to those of the residuals so that every block
contributes channels (`rrs_channels_per_block` in the output), then:

- official: timm's `wide_resnet50_2(features_only=True, out_indices=[1, 2, 3, 4])` (what its `Backbone`
  builds) with the same backbone weights on the ImageNet-normalized images, then its `AFS`,
  `ReconstructionLayer` and `RRS` modules (`models/afs`, `models/recon`, `models/rrs`) built from the
  config values and loaded with robustad's state dict (the module names are the official ones), in eval
  mode; M = logit₁ − logit₀ of its `logit`;
- robustad: `forward(images)`.

It prints the largest absolute differences of the backbone stages and of M. The official backbone and
AFS run under `no_grad` (no gradient reaches the pixels there); robustad's path is differentiable,
which this check does not change: it compares values.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CONFIG = dict(image_size=64, backbone="wide_resnet50_2", backbone_init="scratch", block_channels=(128, 128, 128, 128),
              num_res_blocks=1, channel_mult=(1, 2), attention_mult=(2,), num_head_channels=64, norm_groups=32,
              rrs_channels=(64, 64), rrs_residual_layers=1)
STAGES = ("layer1", "layer2", "layer3", "layer4")


def build_robustad(seed: int, images):
    import torch
    import torch.nn.functional as F
    from robustad.methods import create_method

    detector = create_method("realnet", seed=seed, **CONFIG)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        channels = detector._stage_channels()
        for i, (count, have) in enumerate(zip(CONFIG["block_channels"], channels)):
            getattr(detector, f"afs_index_{i}").copy_(torch.randperm(have, generator=gen)[:count].sort().values)
        for name, p in detector.named_parameters():  # the zero-initialized convs (UNet outputs, attention)
            if name.startswith("recon.") and not p.abs().sum():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        # RRS ranks channels after bn_idx: give it the residuals' own statistics (as training would), so that
        # every block's channels compete for selection and every UNet counts in the comparison
        blocks = detector.selected_features(images)
        residual = torch.cat([F.interpolate((block - detector.recon[f"block{i + 1}_recon"](block)).pow(2),
                                            size=blocks[0].shape[-2:], mode="bilinear", align_corners=True)
                              for i, block in enumerate(blocks)], dim=1)
        detector.rrs.bn_idx.running_mean.copy_(residual.mean(dim=(0, 2, 3)))
        detector.rrs.bn_idx.running_var.copy_(residual.var(dim=(0, 2, 3)) + 1e-3)
    return detector.eval()


def selected_blocks(detector, images) -> list[int]:
    """How many RRS channels each block contributes (summed over images), to show every block is used."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        blocks = detector.selected_features(images)
        residual = torch.cat([F.interpolate((block - detector.recon[f"block{i + 1}_recon"](block)).pow(2),
                                            size=blocks[0].shape[-2:], mode="bilinear", align_corners=True)
                              for i, block in enumerate(blocks)], dim=1)
        ranked = detector.rrs.bn_idx(residual).flatten(2)
        chosen = torch.cat([ranked.amax(-1).topk(CONFIG["rrs_channels"][0], dim=1).indices,
                            ranked.mean(-1).topk(CONFIG["rrs_channels"][1], dim=1).indices], dim=1)
    edges = torch.tensor(CONFIG["block_channels"]).cumsum(0)
    return torch.bincount(torch.bucketize(chosen.flatten(), edges, right=True), minlength=4).tolist()


def official_logits(src: Path, detector, images):
    import timm
    import torch

    sys.path.insert(0, str(src))
    from models.afs import AFS  # noqa: E402 - from --official-src
    from models.recon import ReconstructionLayer
    from models.rrs import RRS

    strides = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
    planes = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
    structure = [{"name": f"block{i + 1}", "layers": [{"idx": stage, "planes": count}], "stride": strides[stage]}
                 for i, (stage, count) in enumerate(zip(STAGES, CONFIG["block_channels"]))]
    afs = AFS(inplanes=planes, instrides=strides, structure=structure, init_bsn=1)
    for i, stage in enumerate(STAGES):
        afs.indexes[f"block{i + 1}_{stage}"].data.copy_(getattr(detector, f"afs_index_{i}"))
    recon = ReconstructionLayer(inplanes=afs.get_outplanes(), instrides=afs.get_outstrides(),
                                num_res_blocks=CONFIG["num_res_blocks"], hide_channels_ratio=0.5,
                                channel_mult=list(CONFIG["channel_mult"]), attention_mult=list(CONFIG["attention_mult"]))
    rrs = RRS(inplanes=recon.get_outplanes(), instrides=recon.get_outstrides(), modes=["max", "mean"],
              mode_numbers=list(CONFIG["rrs_channels"]), num_residual_layers=CONFIG["rrs_residual_layers"],
              stop_grad=False)
    missing = recon.load_state_dict(detector.recon.state_dict(), strict=True)
    missing = rrs.load_state_dict(detector.rrs.state_dict(), strict=True)
    del missing
    backbone = timm.create_model("wide_resnet50_2", features_only=True, pretrained=False, out_indices=[1, 2, 3, 4])
    wanted = backbone.state_dict()
    source = {**{f"conv1.{k}": v for k, v in detector.extractor.stem[0].state_dict().items()},
              **{f"bn1.{k}": v for k, v in detector.extractor.stem[1].state_dict().items()},
              **{f"{stage}.{k}": v for stage, module in detector.extractor.stages.items()
                 for k, v in module.state_dict().items()}}
    backbone.load_state_dict({k: source[k] for k in wanted}, strict=True)
    for module in (afs, recon, rrs, backbone):
        module.eval()
    with torch.no_grad():
        normalized = detector.extractor.normalize(images)  # the official dataset's pixel_mean / pixel_std
        feats = backbone(normalized)
        inputs = {"image": normalized, "feats": {stage: {"feat": f} for stage, f in zip(STAGES, feats)}}
        inputs.update(afs(inputs))
        inputs.update(recon(inputs))
        logits = rrs(inputs)["logit"]
    return feats, logits[:, 1] - logits[:, 0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-src", required=True, help="a checkout of cnulab/RealNet")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    images = torch.rand(args.images, 3, CONFIG["image_size"], CONFIG["image_size"],
                        generator=torch.Generator().manual_seed(args.seed + 2))
    detector = build_robustad(args.seed, images)
    with torch.no_grad():
        ours = detector(images)
        our_stages = detector.extractor(images)
    official_stages, official = official_logits(Path(args.official_src).resolve(), detector, images)
    result = {
        "images": args.images,
        "max_abs_diff_backbone": max(float((our_stages[s] - f).abs().max()) for s, f in zip(STAGES, official_stages)),
        "max_abs_diff_margin": float((ours - official).abs().max()),
        "max_abs_margin": float(official.abs().max()),
        "rrs_channels_per_block": selected_blocks(detector, images),
    }
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
