"""Loading data sets by name: `load`, `fetch`, `info`, `resolve_dataset_spec`.

    load("mnist", "test")              # canonical sets: cached, verified, memory-mapped
    load("digits"); load("folder:PATH"); load("npz:PATH[:KEY]")   # read directly

Every set comes back as an `ImageSet`, float32 N x C x H x W in [0, 1], converted by
`varloss.data.to_images`. The catalogue of names is in `catalogue.py`, fetching into the cache in
`acquire.py` (from the sources of `sources.py`), file readers in `readers.py`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varloss._hashing import sha256_arrays
from varloss._progress import say
from varloss.data.acquire import ensure, variant_key
from varloss.data.cache import data_dir, read_record
from varloss.data.catalogue import (
    DATASETS,
    PREFIXES,
    Dataset,
    available_names,
    check_limit,
    check_split,
    parse_name,
)
from varloss.data.convert import shape_text, to_images
from varloss.data.imageset import ImageSet, uint8_to_imageset
from varloss.data.patches import missing_packages
from varloss.data.readers import (
    npz_keys,
    npz_member,
    pick_key,
    read_array_file,
    read_image_folder,
    split_key,
)
from varloss.data.sources import sources_for
from varloss.errors import InputError

__all__ = [
    "DATASETS",
    "available_names",
    "check_split_shapes",
    "dataset_status",
    "ensure",
    "fetch",
    "info",
    "load",
    "parse_name",
    "resolve_dataset_spec",
]

# ---- folders, npz ----


NPZ_SPLIT_KEYS = ("train", "test")
"""Split names of an .npz's arrays and of a folder's subfolders. An .npz with arrays named
`train` and `test` holds the two splits (labels: `train_labels`, `test_labels`); any other .npz
(or .npy) is one set, served as both splits, said on stderr."""


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
            labels = npz_member(archive, labels_key, path, what) if labels_key in keys else None
            return npz_member(archive, split, path, what), labels, f"array {split!r}"
    chosen = pick_key(keys, key, path, what)
    with np.load(path, allow_pickle=False) as archive:
        images = npz_member(archive, chosen, path, what)
        labels = (
            npz_member(archive, "labels", path, what)
            if "labels" in keys and chosen != "labels"
            else None
        )
    if labels is not None and labels.shape[:1] != images.shape[:1]:
        labels = None
    return images, labels, f"array {chosen!r}, the whole file"


def _load_npz(name: str, argument: str, split: str, limit: int | None) -> ImageSet:
    path, key = split_key(argument)
    what = f"data set {name}"
    if not path.is_file():
        raise InputError(f"Array file {path} of {what} does not exist.")
    images, labels, part = _npz_split_arrays(path, key, split, what)
    if part.endswith("the whole file") and split != "train":  # the test split is the train data
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


def _load_folder(name: str, argument: str, split: str, limit: int | None) -> ImageSet:
    """`folder:PATH` uses PATH/train and PATH/test when present, else the whole folder for both
    splits (said on stderr); a folder with only one of the two subfolders is refused."""
    root = Path(argument).expanduser()
    if not root.is_dir():
        raise InputError(f"Image folder {root} does not exist or is not a folder.")
    subfolders = [s for s in NPZ_SPLIT_KEYS if (root / s).is_dir()]
    if subfolders and split not in subfolders:
        raise InputError(
            f"Image folder {root} has a {subfolders[0]}/ subfolder but no {split}/ subfolder; "
            f"add one, or use folder:{root / subfolders[0]} for both splits."
        )
    folder = root / split if subfolders else root
    if not subfolders and split != "train":  # a test split that is the training data is said
        say(f"{name} has no {split}/ subfolder: its {split} split is the whole folder.")
    pixels = read_image_folder(folder, f"data set {name}")
    loaded = uint8_to_imageset(
        pixels, None, name=name, split=split, source=str(folder), limit=limit
    )
    if not subfolders:
        loaded.extra["split_source"] = "the whole folder"
    return loaded


def _separate_splits(kind: str, argument: str) -> bool:
    """Whether user data (`npz:`, `folder:`) holds train and test splits of its own (else its
    one set serves as both, and the splits cannot differ)."""
    if kind == "folder":
        root = Path(argument).expanduser()
        return all((root / split).is_dir() for split in NPZ_SPLIT_KEYS)
    path, key = split_key(argument)
    if key is not None or path.suffix.lower() != ".npz" or not path.is_file():
        return False
    return all(split in npz_keys(path, f"data set {kind}:{argument}") for split in NPZ_SPLIT_KEYS)


def check_split_shapes(
    name: str, loaded: dict[str, ImageSet] | None = None, *, data_path: Any = None
) -> None:
    """Refuse, up front, a data set whose train and test images differ in shape (an .npz with
    8 x 8 train and 10 x 10 test arrays), in one sentence: a model trained on one split could
    not be measured on the other. Canonical sets have one shape by construction; `loaded` are
    splits already in hand (`info`), the others are read here."""
    kind, argument = parse_name(name)
    if kind not in ("folder", "npz") or argument is None or not _separate_splits(kind, argument):
        return
    loaded = dict(loaded or {})
    for split in NPZ_SPLIT_KEYS:
        if split not in loaded:
            loaded[split] = load(name, split, data_path=data_path, limit=1)
    train, test = (tuple(loaded[split].image_shape) for split in NPZ_SPLIT_KEYS)
    if train != test:
        raise InputError(
            f"data set {name} has train images of {shape_text(train)} but test images of "
            f"{shape_text(test)}; both splits must have one shape."
        )


# ---- public API ----


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
    check_limit(limit)
    kind, argument = parse_name(name)
    if kind == "folder":
        assert argument is not None
        return _load_folder(name, argument, split, limit)
    if kind == "npz":
        assert argument is not None
        return _load_npz(name, argument, split, limit)
    dataset = DATASETS[kind]
    check_split(dataset, split)
    if dataset.bundled is not None:  # ships with a library: read directly, never cached
        images, labels = dataset.bundled(dataset, split)
        return uint8_to_imageset(  # the one converter: floats as they are, uint8 as k/255
            images, labels, name=kind, split=split, source=dataset.bundled_source, limit=limit
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
    if kind in ("folder", "npz") or not DATASETS[kind].cached:
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
        check_split_shapes(name, loaded)
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
    if not dataset.cached:
        result.update(cached=False, source=dataset.bundled_source)
        return _bundled_info(dataset, result, fetch)
    key, variant = variant_key(dataset, crop, size)
    entry = data_dir() / key
    result["cache_dir"] = str(entry)
    if variant:
        result["shape"] = [dataset.shape[0], variant["size"], variant["size"]]
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
    manifest = read_record(entry)
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


def _bundled_info(dataset: Dataset, result: dict[str, Any], fetch: bool) -> dict[str, Any]:
    """`info` of a set that ships with a library: with `fetch`, each split is read, so its count
    and SHA-256 (of the images as the library gives them: uint8 for `patches`) are the real ones,
    or `available` is false and `reason` says why; a set cut from photographs also lists them
    (file, pinned SHA-256) and its seed."""
    if dataset.photographs:
        result["seed"] = dataset.seed
        result["photographs"] = {
            split: [p.describe() for p in dataset.photographs if p.split == split]
            for split in dataset.counts
        }
    result["available"] = True
    if not fetch:
        return result
    for split in dataset.counts:
        assert dataset.bundled is not None
        try:
            images, _ = dataset.bundled(dataset, split)
        except InputError as error:
            result.update(available=False, reason=str(error))
            return result
        result["splits"][split].update(count=len(images), sha256=sha256_arrays(images))
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
        rows.append(
            {
                "name": name,
                "shape": list(dataset.shape),
                "splits": dict(dataset.counts),
                "offline": _offline_status(dataset),
                "offline_source": dataset.offline,
                "description": dataset.description,
            }
        )
    return rows


def _offline_status(dataset: Dataset) -> str:
    """How a set is had here without the web (see `dataset_status`), from its catalogue entry,
    the cache manifest and the sources registered for it in `sources.SOURCES`."""
    if not dataset.cached:
        return "no" if missing_packages(dataset.photographs) else "bundled"
    key, _ = variant_key(dataset, None, None)
    manifest = read_record(data_dir() / key) or {}
    if all(s in manifest.get("splits", {}) for s in dataset.counts):
        return "cached"
    if dataset.system_folder and Path(dataset.system_folder).is_dir():
        return "system"
    return "registry" if sources_for("registry", dataset.name) else "no"
