"""Loaders for the benchmark datasets and the built-in offline dataset."""
from robustad.datasets.anomaly_dataset import AnomalyDataset, DatasetFormat, Sample
from robustad.datasets.image_io import DatasetError
from robustad.datasets.registry import DATASETS, create_dataset, list_categories, open_format, register_dataset

# Registered datasets (explicit imports fill the registry).
from robustad.datasets import mvtec  # noqa: E402,F401  isort: skip
from robustad.datasets import visa  # noqa: E402,F401  isort: skip
from robustad.datasets import btad  # noqa: E402,F401  isort: skip
from robustad.datasets import mpdd  # noqa: E402,F401  isort: skip
from robustad.datasets import wfdd  # noqa: E402,F401  isort: skip
from robustad.datasets import dtd_synthetic  # noqa: E402,F401  isort: skip
from robustad.datasets import brats2021  # noqa: E402,F401  isort: skip
from robustad.datasets import headct  # noqa: E402,F401  isort: skip
from robustad.datasets import folder  # noqa: E402,F401  isort: skip
from robustad.datasets import textures  # noqa: E402,F401  isort: skip

__all__ = [
    "DATASETS",
    "AnomalyDataset",
    "DatasetError",
    "DatasetFormat",
    "Sample",
    "create_dataset",
    "list_categories",
    "open_format",
    "register_dataset",
]
