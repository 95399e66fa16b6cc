"""AUROC of a detector on a batch, as fractions (0–1): the quantity the attack tests check."""
import torch
from sklearn.metrics import roc_auc_score


def pixel_auroc(detector, images, masks):
    with torch.no_grad():
        maps = detector.anomaly_map(detector(images), images.shape[-1])
    return roc_auc_score(masks.flatten().numpy() > 0.5, maps.flatten().numpy())


def image_auroc(detector, images, labels):
    with torch.no_grad():
        scores = detector.score(detector(images))
    return roc_auc_score(labels.numpy(), scores.numpy())
