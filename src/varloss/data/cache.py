"""The on-disk cache: decoded uint8 arrays as .npy (memory-mapped on load), verified by SHA-256.

Layout: `data_dir()/<entry>/{split}-images.npy`, `{split}-labels.npy` and `manifest.json`, which is
written last and records the SHA-256 of every array, so an entry without a manifest is incomplete.
Writers hold a file lock on the entry, so concurrent processes never interleave their writes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from platformdirs import user_cache_dir

from varloss._hashing import sha256_arrays
from varloss._io import atomic_path, atomic_write_json
from varloss.errors import InputError

ENV_DATA_DIR = "VARLOSS_DATA_DIR"
MANIFEST = "manifest.json"
LOCK_TIMEOUT_S = 1800.0


def data_dir() -> Path:
    """The cache root: $VARLOSS_DATA_DIR, else the user cache directory of varloss."""
    configured = os.environ.get(ENV_DATA_DIR)
    if configured:
        return _checked_data_dir(Path(configured).expanduser())
    return Path(user_cache_dir("varloss"))


def _checked_data_dir(folder: Path) -> Path:
    """$VARLOSS_DATA_DIR if it is (or can become) a folder varloss may read and write."""
    problem = None
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        problem = f"{existing} is a file"
    elif not os.access(existing, os.R_OK | os.W_OK | os.X_OK):
        problem = f"{existing} cannot be read and written by this user"
    if problem is not None:
        raise InputError(
            f"{ENV_DATA_DIR}={folder} cannot hold the data cache: {problem}; point it at a "
            "folder you can write, or unset it to use the user cache directory."
        )
    return folder


def say(message: str) -> None:
    """Progress and fallback messages go to stderr so --json output on stdout stays clean."""
    print(f"varloss.data: {message}", file=sys.stderr, flush=True)


def entry_lock(entry: Path) -> Any:
    """A FileLock on one cache entry (created beside it so `entry` itself can be replaced)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(entry.parent / f".{entry.name}.lock"), timeout=LOCK_TIMEOUT_S)


def read_manifest(entry: Path) -> dict[str, Any] | None:
    try:
        return json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def store(
    entry: Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    source: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write verified arrays into `entry` atomically, manifest last; the caller holds the lock.

    Splits already cached from the same source are kept, so a set can be filled split by split.
    """
    entry.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(entry)
    kept = previous["splits"] if previous and previous.get("source") == source else {}
    (entry / MANIFEST).unlink(missing_ok=True)
    manifest: dict[str, Any] = {
        "format": 1,
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "splits": {k: v for k, v in kept.items() if k not in splits},
        **(extra or {}),
    }
    for split, (images, labels) in splits.items():
        images = np.ascontiguousarray(images, dtype=np.uint8)
        with atomic_path(entry / f"{split}-images.npy") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, images, allow_pickle=False)
        record: dict[str, Any] = {
            "count": int(images.shape[0]),
            "shape": [int(s) for s in images.shape[1:]],
            "images_sha256": sha256_arrays(images),
            "labels_sha256": None,
        }
        if labels is not None:
            labels = np.ascontiguousarray(labels)
            with atomic_path(entry / f"{split}-labels.npy") as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, labels, allow_pickle=False)
            record["labels_sha256"] = sha256_arrays(labels)
        manifest["splits"][split] = record
    atomic_write_json(entry / MANIFEST, manifest)
    return manifest


def discard(entry: Path, reason: str) -> None:
    """Remove a cache entry's files after a failed verification (the caller holds the lock)."""
    say(f"discarding cached {entry}: {reason}")
    if entry.is_dir():
        for file in entry.iterdir():
            if file.is_file():
                file.unlink(missing_ok=True)


def load_split(
    entry: Path,
    split: str,
    *,
    pins: dict[str, str | None] | None = None,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]] | None:
    """Memory-map one split of a cache entry, verifying its SHA-256; None when absent or bad.

    `pins` ({"images": sha, "labels": sha}) are the values fixed in the code for canonical sets;
    otherwise the manifest's own hashes are checked. A bad entry is discarded (under its lock).
    """
    manifest = read_manifest(entry)
    if manifest is None or split not in manifest.get("splits", {}):
        return None
    record = manifest["splits"][split]
    try:
        images = np.load(entry / f"{split}-images.npy", mmap_mode="r", allow_pickle=False)
        labels = None
        if record.get("labels_sha256"):
            labels = np.load(entry / f"{split}-labels.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        problem = f"cannot read {split} arrays ({error})"
    else:
        problem = None
        if list(images.shape[1:]) != record["shape"] or images.shape[0] != record["count"]:
            problem = f"{split} images have shape {images.shape}, manifest says otherwise"
        elif verify:
            expected_images = (pins or {}).get("images") or record["images_sha256"]
            expected_labels = (pins or {}).get("labels") or record.get("labels_sha256")
            if sha256_arrays(images) != expected_images:
                problem = f"{split} images fail their SHA-256 check"
            elif labels is not None and sha256_arrays(labels) != expected_labels:
                problem = f"{split} labels fail their SHA-256 check"
        if problem is None:
            return images, labels, manifest
    with entry_lock(entry):
        if read_manifest(entry) == manifest:  # nobody repaired it meanwhile
            discard(entry, problem)
    return None
