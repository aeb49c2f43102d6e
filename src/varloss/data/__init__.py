"""Data sets for varloss: a registry of names, verified sources, and a memory-mapped cache.

    from varloss.data import load
    train = load("mnist", "train")          # ImageSet: float32 N x 1 x 28 x 28 in [0, 1]
    faces = load("celeba", "test", data_path="~/data/celeba")

Names: mnist, fashion-mnist, cifar10, celeba, digits, folder:PATH, npz:PATH[:KEY].
"""

from varloss.data.cache import data_dir
from varloss.data.download import ChecksumError, DownloadError, download_url
from varloss.data.imageset import ImageSet
from varloss.data.registry import (
    DATASETS,
    available_names,
    ensure,
    fetch,
    info,
    load,
    resolve_dataset_spec,
)

__all__ = [
    "DATASETS",
    "ChecksumError",
    "DownloadError",
    "ImageSet",
    "available_names",
    "data_dir",
    "download_url",
    "ensure",
    "fetch",
    "info",
    "load",
    "resolve_dataset_spec",
]
