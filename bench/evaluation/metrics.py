"""Detection and localization metrics, in percent: image AUROC, pixel AUROC, pixel AUPRO.

PatchGuard (Nafez et al., CVPR 2025, https://arxiv.org/abs/2506.09237) reports image-level AUROC for
anomaly detection (AD, Table 1) and pixel-level AUROC for anomaly localization (AL, Table 2), as
"clean / adversarial" in percent. AUPRO (Bergmann et al., "The MVTec Anomaly Detection Dataset",
IJCV 2021) is the per-region overlap metric most AL papers add; it is computed here as the MVTec AD
evaluation code and anomalib compute it (see `pixel_aupro`).

Every function accepts numpy arrays or torch tensors and returns a Python float in [0, 100]. When
the ground truth holds a single class (only normal images, only normal pixels, or no normal pixel)
the metric is undefined: the function returns `float("nan")` and raises nothing, so a runner can
store it as null. Result records store NaN as JSON null (see `robustad.bench.results.records`).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

# 8-connectivity, as the MVTec AD evaluation code and anomalib (OpenCV connectedComponents) use.
_REGION_CONNECTIVITY = np.ones((3, 3), dtype=bool)


def _as_numpy(value, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"{name}: expected a numeric numpy array or torch tensor, got {type(value).__name__}")
    return array


def _check_finite(array: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values ({int((~np.isfinite(array)).sum())} of them)")


def _binary(array: np.ndarray, name: str) -> np.ndarray:
    """Ground truth in {0, 1} as bool; values in [0, 1] are thresholded at 0.5 (e.g. resized masks)."""
    if array.dtype == bool:
        return array
    _check_finite(array, name)
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"{name}: expected values in {{0, 1}}, got range [{array.min()}, {array.max()}]")
    return array > 0.5


def _masks_and_maps(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool masks and (N, H, W) float maps; masks may come as (N, 1, H, W)."""
    masks = _as_numpy(masks, "masks")
    maps = _as_numpy(maps, "maps")
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if masks.ndim != 3 or maps.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) or (N, 1, H, W) and maps (N, H, W); "
                         f"got masks {masks.shape} and maps {maps.shape}")
    if masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} must have the same shape")
    _check_finite(maps, "maps")
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float64)
    return _binary(masks, "masks"), maps


def _auroc_percent(truth: np.ndarray, scores: np.ndarray) -> float:
    if truth.all() or not truth.any():
        return float("nan")
    return 100.0 * float(roc_auc_score(truth, scores))


def image_auroc(labels, scores) -> float:
    """Image-level AUROC in percent (AD; PatchGuard Table 1).

    labels: (N,) in {0, 1}, 1 = anomalous. scores: (N,) anomaly scores, higher = more anomalous.
    Returns NaN when all labels are equal.
    """
    labels = _as_numpy(labels, "labels").reshape(-1)
    scores = _as_numpy(scores, "scores").reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"labels ({labels.size}) and scores ({scores.size}) must have the same length")
    _check_finite(scores, "scores")
    return _auroc_percent(_binary(labels, "labels"), scores)


def pixel_auroc(masks, maps) -> float:
    """Pixel-level AUROC in percent over all pixels of all images (AL; PatchGuard Table 2).

    masks: (N, H, W) or (N, 1, H, W) in {0, 1} (values in [0, 1] are thresholded at 0.5).
    maps: (N, H, W) anomaly maps at the masks' resolution. Returns NaN when no pixel, or every
    pixel, is anomalous.
    """
    masks, maps = _masks_and_maps(masks, maps)
    return _auroc_percent(masks.reshape(-1), maps.reshape(-1))


def pro_curve(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap curve: (fpr, pro), both increasing, starting at (0, 0).

    One point per distinct map value t (descending): fpr(t) is the fraction of normal pixels
    (mask 0, over all images) with map >= t; pro(t) is the mean over the ground-truth regions
    (8-connected components of each image's mask) of the fraction of the region's pixels with
    map >= t. Computed with one sort and two weighted cumulative sums, so its cost is that of
    sorting N·H·W values, whatever the number of thresholds. Shapes as in `pixel_auroc`.
    """
    masks, maps = _masks_and_maps(masks, maps)
    regions = np.zeros(masks.shape, dtype=np.int32)
    n_regions = 0
    for index, mask in enumerate(masks):  # components of one image never join another image's
        labelled, count = ndimage.label(mask, structure=_REGION_CONNECTIVITY)
        regions[index] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += count
    regions = regions.reshape(-1)
    n_normal = int((regions == 0).sum())
    if n_regions == 0 or n_normal == 0:
        return np.zeros(1), np.zeros(1)

    # Passing a pixel of region r adds 1/(|r| · n_regions) to the PRO; passing a normal pixel
    # adds 1/n_normal to the FPR (counted exactly as integers, divided at the end).
    region_sizes = np.bincount(regions, minlength=n_regions + 1).astype(np.float64)
    pro_step = np.zeros(n_regions + 1)
    pro_step[1:] = 1.0 / (region_sizes[1:] * n_regions)

    values = maps.reshape(-1)
    order = np.argsort(values)[::-1]  # descending; the order among ties does not matter
    values = values[order]
    regions = regions[order]
    del order
    normal_passed = np.cumsum(regions == 0)
    pro = np.cumsum(pro_step[regions])
    del regions
    # Tied values share one threshold: keep the last position of each run of equal values.
    last_of_run = np.r_[values[1:] != values[:-1], True]
    fpr = np.r_[0.0, normal_passed[last_of_run] / n_normal]
    pro = np.r_[0.0, pro[last_of_run]]
    pro[-1] = 1.0  # every pixel passed: exactly 1, whatever the rounding of the sums
    return fpr, np.minimum(pro, 1.0)


def pixel_aupro(masks, maps, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to FPR `fpr_limit` (default 0.3), normalized by it, in percent.

    The MVTec AD protocol, as anomalib's AUPRO computes it: ground-truth regions are the
    8-connected components of each image's mask; the PRO-vs-FPR curve of `pro_curve` is
    integrated with the trapezoid rule from FPR 0 to `fpr_limit` (linearly interpolated at the
    limit) and divided by `fpr_limit`, so a perfect map scores 100 and a map that ranks every
    normal pixel above every anomalous one scores 0. Shapes as in `pixel_auroc`. Returns NaN when
    there is no anomalous region or no normal pixel.
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit: expected a value in (0, 1], got {fpr_limit}")
    masks, maps = _masks_and_maps(masks, maps)
    if not masks.any() or masks.all():
        return float("nan")
    fpr, pro = pro_curve(masks, maps)
    inside = fpr <= fpr_limit
    x = fpr[inside]
    y = pro[inside]
    if x[-1] < fpr_limit:  # the curve passes the limit between two points: interpolate there
        after = int(np.argmax(fpr > fpr_limit))
        before = after - 1
        share = (fpr_limit - fpr[before]) / (fpr[after] - fpr[before])
        x = np.r_[x, fpr_limit]
        y = np.r_[y, pro[before] + share * (pro[after] - pro[before])]
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return 100.0 * area / fpr_limit
