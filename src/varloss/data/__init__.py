"""The one input layer of varloss: readers by suffix, one converter, the data-set catalogue.

    from varloss.data import load, read_images, to_images
    train = load("mnist", "train")          # ImageSet: float32 N x 1 x 28 x 28 in [0, 1]
    images = read_images("samples.npz:x")   # any input `varloss measure` accepts, float64
    batch = to_images(array)                # N x H x W x C uint8 -> float32 N x C x H x W

Data-set names: mnist, fashion-mnist, cifar10, celeba, digits, folder:PATH, npz:PATH[:KEY].
"""

from varloss.data.cache import data_dir
from varloss.data.convert import to_images
from varloss.data.download import ChecksumError, DownloadError, download_url
from varloss.data.imageset import ImageSet
from varloss.data.inputs import CheckedStream, Stream, open_source, read_images
from varloss.data.loading import (
    DATASETS,
    available_names,
    ensure,
    fetch,
    info,
    load,
    resolve_dataset_spec,
)
from varloss.data.readers import IMAGE_SUFFIXES, register_reader

__all__ = [
    "DATASETS",
    "IMAGE_SUFFIXES",
    "CheckedStream",
    "ChecksumError",
    "DownloadError",
    "ImageSet",
    "Stream",
    "available_names",
    "data_dir",
    "download_url",
    "ensure",
    "fetch",
    "info",
    "load",
    "open_source",
    "read_images",
    "register_reader",
    "resolve_dataset_spec",
    "to_images",
]
