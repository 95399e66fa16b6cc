"""Attention degree against vulnerability: the data and figure of the paper's Figure 2 for any detector
that declares `exposes_attention` (its `attention_degrees(images, layer)` hook).

Images are grouped into clusters by their clean attention degree at a layer; each cluster's
vulnerability is |pixel AUROC clean − pixel AUROC under the attack| (in %).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch


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
        with torch.no_grad():
            degrees = detector.attention_degrees(images, layer)
            adv_degrees = detector.attention_degrees(adversarial, layer)
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
