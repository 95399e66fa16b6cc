"""Attention degree and the vulnerability-versus-attention-degree report (PatchGuard paper §1, Fig. 2).

The attention degree of a layer under an image is the average number of input tokens each output
token attends to (§1); appendix C.2 counts a token as attended when its coefficient is at least the
uniform value 1/N. So uniform attention has degree N (the maximum) and identity attention degree 1.
We average over heads and output tokens.

A sparse layer (BigBird, Table 11) is measured over its pattern's nonzero entries: row j of a
pattern with n_j allowed entries counts the entries of the pattern at or above 1/n_j (the row's
uniform value), so uniform attention over the pattern has degree mean_j n_j, and identity attention
still 1. `image_attention_degrees` (and so `bench attention-degree`) takes the pattern from the model.

Figure 2 groups images into five clusters by their last-layer attention degree and plots each
cluster's vulnerability: |pixel AUROC clean − pixel AUROC under PGD| (in %).
`attention_degree_report` computes the per-image degrees and the per-cluster table;
`plot_vulnerability` draws the figure with matplotlib.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from robustad.methods.patchguard.model import DISCRIMINATOR

RELATIVE_TOLERANCE = 1e-4  # softmax rounding: a uniform row must count as attended everywhere


def attention_degree(attention: torch.Tensor, threshold: float | None = None,
                     pattern: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image attention degree (B,) of attention (B, heads, N, N); threshold defaults to 1/N.

    With a sparse `pattern` (bool, (heads, N, N) or (N, N)) only its entries count, and the default
    threshold of row j is 1/n_j, n_j its pattern entries."""
    if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"attention must have shape (B, heads, N, N), got {tuple(attention.shape)}")
    if pattern is None:
        threshold = 1.0 / attention.shape[-1] if threshold is None else float(threshold)
        attended = attention.float() >= threshold * (1 - RELATIVE_TOLERANCE)
    else:
        if pattern.dtype != torch.bool or tuple(pattern.shape[-2:]) != tuple(attention.shape[-2:]):
            raise ValueError(f"pattern must be a bool (heads, N, N) or (N, N) matching the attention "
                             f"{tuple(attention.shape)}, got {pattern.dtype} {tuple(pattern.shape)}")
        pattern = pattern.to(attention.device)
        if threshold is None:
            threshold = 1.0 / pattern.sum(dim=-1, keepdim=True).clamp_min(1).float()
        attended = (attention.float() >= threshold * (1 - RELATIVE_TOLERANCE)) & pattern
    return attended.sum(dim=-1).float().mean(dim=(1, 2))


def layer_key(detector, layer: int | str):
    """`layer` (1-based ViT block, negative from the end, or "discriminator") as the model's key."""
    if layer == DISCRIMINATOR:
        return DISCRIMINATOR
    depth = detector.config.vit_depth
    layer = int(layer)
    if layer == 0 or abs(layer) > depth:
        raise ValueError(f"attention layer {layer}: expected 1..{depth}, -1..-{depth} or 'discriminator'")
    return layer - 1 if layer > 0 else depth + layer


@torch.no_grad()
def image_attention_degrees(detector, images: torch.Tensor, layer: int | str = -1) -> torch.Tensor:
    """Attention degree (B,) of `layer` (default: the last ViT block) for images (B, 3, H, W)."""
    key = layer_key(detector, layer)
    _, attention = detector.forward_with_attention(images, (key,))
    pattern_of = getattr(detector.net, "attention_pattern", None)
    return attention_degree(attention[key], pattern=pattern_of(key) if pattern_of else None)


def _pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    truth = masks.reshape(-1) > 0.5
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, maps.reshape(-1)))


def attention_degree_report(detector, dataset, attack, *, layer: int | str = -1, groups: int = 5, batch_size: int = 16):
    """Figure 2's data: (per-image DataFrame, per-cluster DataFrame).

    `dataset` yields items {"image", "mask", "label", "path"} at the detector's image size; `attack`
    is a callable `attack(detector, images, masks, labels)` (e.g. `create_attack("pgd-20")`).
    Per image: path, label, clean and adversarial attention degree, pixel AUROC clean/adversarial
    (NaN without both normal and anomalous pixels). Per cluster (`groups` quantile bins of the clean
    degree): image count, mean degree, pooled pixel AUROC clean/adversarial (%) and vulnerability
    = |clean − adversarial|.
    """
    detector.eval()
    rows, clean_maps, adv_maps, all_masks = [], [], [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([it["image"] for it in items]).float()
        masks = torch.stack([it["mask"] for it in items]).float()
        labels = torch.tensor([int(it["label"]) for it in items])
        adversarial = attack(detector, images, masks, labels)
        degrees = image_attention_degrees(detector, images, layer)
        adv_degrees = image_attention_degrees(detector, adversarial, layer)
        with torch.no_grad():
            size = images.shape[-1]
            clean = detector.anomaly_map(detector(images), size).numpy()
            adv = detector.anomaly_map(detector(adversarial), size).numpy()
        for j, item in enumerate(items):
            mask = masks[j, 0].numpy()
            rows.append({
                "path": str(item.get("path", "")),
                "label": int(labels[j]),
                "attention_degree": float(degrees[j]),
                "attention_degree_adv": float(adv_degrees[j]),
                "pixel_auroc_clean": _pixel_auroc(clean[j], mask),
                "pixel_auroc_adv": _pixel_auroc(adv[j], mask),
            })
        clean_maps.append(clean)
        adv_maps.append(adv)
        all_masks.append(masks[:, 0].numpy())
    per_image = pd.DataFrame(rows)
    clean_maps, adv_maps, all_masks = map(np.concatenate, (clean_maps, adv_maps, all_masks))
    bins = pd.qcut(per_image["attention_degree"].rank(method="first"), q=min(groups, len(per_image)), labels=False)
    per_image["cluster"] = bins.astype(int)
    clusters = []
    for cluster, members in per_image.groupby("cluster"):
        index = members.index.to_numpy()
        clean_auroc = _pixel_auroc(clean_maps[index], all_masks[index]) * 100
        adv_auroc = _pixel_auroc(adv_maps[index], all_masks[index]) * 100
        clusters.append({
            "cluster": int(cluster),
            "images": len(index),
            "attention_degree": float(members["attention_degree"].mean()),
            "pixel_auroc_clean": clean_auroc,
            "pixel_auroc_adv": adv_auroc,
            "vulnerability": abs(clean_auroc - adv_auroc),
        })
    return per_image, pd.DataFrame(clusters)


def plot_vulnerability(per_cluster: pd.DataFrame, path, title: str = "") -> None:
    """Figure 2: vulnerability (|ΔAUROC|, %) against mean attention degree per cluster, saved to `path`."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.bar(per_cluster["attention_degree"].round(1).astype(str), per_cluster["vulnerability"])
    ax.set_xlabel("attention degree (cluster mean)")
    ax.set_ylabel("vulnerability (|Δ pixel AUROC|, %)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)


def save_attention_degree_report(per_image: pd.DataFrame, per_cluster: pd.DataFrame, out_dir, title: str = "") -> dict:
    """Writes attention_degree_images.csv, attention_degree_clusters.csv and attention_degree.png
    (Figure 2, and attention_degree.pdf) into `out_dir`; returns {kind: path}."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "images": out / "attention_degree_images.csv",
        "clusters": out / "attention_degree_clusters.csv",
        "figure": out / "attention_degree.png",
        "figure_pdf": out / "attention_degree.pdf",
    }
    per_image.to_csv(paths["images"], index=False)
    per_cluster.to_csv(paths["clusters"], index=False)
    plot_vulnerability(per_cluster, paths["figure"], title)
    plot_vulnerability(per_cluster, paths["figure_pdf"], title)
    return paths
