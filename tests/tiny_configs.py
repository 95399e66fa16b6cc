"""Tiny from-scratch configs of every built-in method, shared by the tests (32 px, seconds to fit)."""
from __future__ import annotations

import dataclasses

SIZE = 32

PATCHGUARD = dict(image_size=SIZE, patch_size=8, vit_embed_dim=32, vit_depth=2, vit_heads=2, disc_heads=2,
                  disc_mlp_dim=64, epochs=2, batch_size=4, train_steps=2, train_precision="fp32")

# Per baseline family; the variant `<m>-adv` uses the same.
BASELINES = {
    "patchcore": dict(backbone="resnet18", pretrain_dim=64, target_dim=64),
    "simplenet": dict(backbone="resnet18", pretrain_dim=64, target_dim=64, hidden_dim=32, epochs=2,
                      adv_steps=2),
    "draem": dict(recon_width=4, disc_width=4, epochs=1, batch_size=6, adv_steps=1),
    "glass": dict(backbone="resnet18", pretrain_dim=64, target_dim=64, hidden_dim=32, epochs=2,
                  gas_steps=2, adv_steps=1),
    "recontrast": dict(backbone="resnet18", bottleneck_blocks=1, decoder_blocks=(1, 1, 1), iterations=2,
                       batch_size=6, adv_steps=1),
    "glad": dict(train_steps=2, batch_size=2),  # quick is already tiny (random diffusers models, 32 px)
    "generalad": dict(backbone="vit_tiny_patch16_224", vit_depth=2, vit_patch_size=8, blocks=(2,), hidden_dim=32,
                      heads=2, epochs=2, top_k=3, adv_steps=2),
}

# The detection-only robust methods (methods/robust_detection).
ROBUST_DETECTION = {
    "zarnd": dict(backbone="resnet18"),
    "principals": dict(width=4, depth=2, spatial_components=4, epochs=1, batch_size=6, adv_steps=1),
    "rodeo": dict(width=4, epochs=1, batch_size=8, adv_steps=1),
}

# The localization methods of Table 2 (methods/localization).
LOCALIZATION = {
    "musc": dict(backbone="tiny", vit_patch_size=8, vit_embed_dim=32, vit_depth=2, vit_heads=2, feature_layers=(0, 1),
                 aggregation_degrees=(1, 3)),
    "reconpatch": dict(backbone="resnet18", pretrain_dim=64, target_dim=64, projection_dim=16, epochs=1,
                       patches_per_step=64, coreset_ratio=0.5),
    "realnet": dict(backbone="resnet18", block_channels=(8, 8, 8, 8), afs_batches=1, num_res_blocks=1,
                    channel_mult=(1,), attention_mult=(), num_head_channels=4, norm_groups=2, rrs_channels=(4, 4),
                    rrs_residual_layers=1, epochs=1, batch_size=6, texture_source="train", score_pool=4),
}


def tiny_overrides(name: str) -> dict:
    """Config overrides that make method `name` tiny and independent of pretrained weights."""
    from robustad.methods import METHODS

    if name == "patchguard":
        return {**PATCHGUARD, "foreground": "full"}
    family = name.removesuffix("-adv")
    fields = {f.name for f in dataclasses.fields(METHODS.get(name).config_class)}
    scratch = {"backbone_init": "scratch"} if "backbone_init" in fields else {}
    return {"image_size": SIZE, **scratch, **{**BASELINES, **ROBUST_DETECTION, **LOCALIZATION}[family]}
