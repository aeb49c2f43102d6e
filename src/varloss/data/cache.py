"""The on-disk cache: decoded uint8 arrays as .npy (memory-mapped on load), verified by SHA-256.

A cache entry is a run-folder-layer folder (`varloss.runs.RunFolder`):
`data_dir()/<entry>/{split}-images.npy`, `{split}-labels.npy`, the entry's record `cache.json`
(source, and per split its count, shape and the SHA-256 of the decoded arrays) and `manifest.json`
(the SHA-256 of every file). The record is recorded last, so an entry whose record is not in the
manifest is incomplete. Every read checks the file against the manifest, and canonical sets also
against the SHA-256 pins of the catalogue, fixed in the code (a forged manifest cannot pass those).
Writers hold the entry's lock, so concurrent processes never interleave their writes; a second
process waits for the first. Entries of the older layout (the record in `manifest.json`) are
checked against their own record and moved to this layout on first use, with one sentence.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from platformdirs import user_cache_dir

from varloss._hashing import sha256_arrays
from varloss._progress import say
from varloss.errors import InputError
from varloss.runs import MANIFEST_FILE, RunFolder

ENV_DATA_DIR = "VARLOSS_DATA_DIR"
RECORD_FILE = "cache.json"
RECORD_FORMAT = 2  # 1: the record was manifest.json itself (before the run-folder layer)
LOCK_TIMEOUT_S = 1800.0
# What a damaged entry's sentence ends with: nothing for the user to do.
_REBUILT = "it is discarded and obtained again"


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


def entry_lock(entry: Path) -> Any:
    """The lock of one cache entry: a second process waits (up to LOCK_TIMEOUT_S) for the first;
    the same thread may take it again (a read that repairs inside a fill)."""
    return RunFolder(entry).lock(wait=LOCK_TIMEOUT_S, reentrant=True)


def read_record(entry: Path) -> dict[str, Any] | None:
    """The record of a complete entry (source, splits, ...), or None when the entry is absent,
    incomplete, damaged (`load_split` names and discards it) or of the older layout (`upgrade`)."""
    folder = RunFolder(entry)
    try:
        if not folder.verify(RECORD_FILE):  # no manifest, or the record not in it: incomplete
            return None
        return folder.read_json(RECORD_FILE)
    except InputError:
        return None


def _old_record(entry: Path) -> dict[str, Any] | None:
    """The record of an entry of the older layout (`manifest.json` held it), else None."""
    try:
        old = json.loads((entry / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) and "splits" in old and "files" not in old else None


def upgrade(entry: Path) -> None:
    """Move an entry of the older layout to this one (the caller holds the lock): its arrays are
    checked against the hashes its own record holds, then recorded in a manifest, the record
    last; arrays that fail are discarded. One sentence says so; other entries are left alone."""
    old = _old_record(entry)
    if old is None:
        return
    folder, splits = RunFolder(entry), {}
    for split, record in old["splits"].items():
        try:
            arrays = [np.load(entry / f"{split}-images.npy", mmap_mode="r", allow_pickle=False)]
            if record.get("labels_sha256"):
                arrays.append(np.load(entry / f"{split}-labels.npy", allow_pickle=False))
        except (OSError, ValueError):
            continue
        hashes = [record["images_sha256"], record.get("labels_sha256")]
        if all(sha256_arrays(a) == h for a, h in zip(arrays, hashes, strict=False)):
            splits[split] = record
    files = [f"{split}-{kind}.npy" for split in splits for kind in ("images", "labels")]
    (entry / MANIFEST_FILE).unlink()
    for name in folder.files():  # the arrays that failed: nothing may use them
        if name not in files:
            (entry / name).unlink()
    folder.seal([name for name in files if (entry / name).is_file()])
    if splits:
        folder.write_json(RECORD_FILE, {**old, "format": RECORD_FORMAT, "splits": splits})
    kept = ", ".join(splits) or "nothing (its arrays fail their SHA-256 check)"
    say(f"moved the cache entry {entry} of an older varloss to the current layout; kept {kept}")


def store(
    entry: Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    source: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write verified arrays into `entry` atomically, the record last; the caller holds the lock.

    Splits already cached from the same source are kept, so a set can be filled split by split.
    """
    folder = RunFolder(entry).create()
    upgrade(entry)
    previous = read_record(entry)
    if previous is None or previous.get("source") != source:
        folder.clear()  # another source, or an incomplete entry: nothing in it is kept
    else:
        folder.forget(RECORD_FILE)  # incomplete until the record is written again, last
    kept = previous["splits"] if previous and previous.get("source") == source else {}
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "splits": {k: v for k, v in kept.items() if k not in splits},
        **(extra or {}),
    }
    for split, (images, labels) in splits.items():
        images = np.ascontiguousarray(images, dtype=np.uint8)
        folder.write_array(f"{split}-images.npy", images)
        record["splits"][split] = {
            "count": int(images.shape[0]),
            "shape": [int(s) for s in images.shape[1:]],
            "images_sha256": sha256_arrays(images),
            "labels_sha256": None,
        }
        if labels is not None:
            labels = np.ascontiguousarray(labels)
            folder.write_array(f"{split}-labels.npy", labels)
            record["splits"][split]["labels_sha256"] = sha256_arrays(labels)
        else:
            folder.unlink(f"{split}-labels.npy")
    folder.write_json(RECORD_FILE, record)
    return record


def discard(entry: Path, reason: str) -> None:
    """Remove a cache entry's files after a failed verification (the caller holds the lock)."""
    say(f"discarding cached {entry}: {reason}")
    RunFolder(entry).clear()


def load_split(
    entry: Path,
    split: str,
    *,
    pins: dict[str, str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]] | None:
    """Memory-map one split of a cache entry, verifying it; None when absent or bad.

    Every file is checked against the manifest (and must be listed in it), and against `pins`
    ({"images": sha, "labels": sha}: the values fixed in the code for canonical sets) when given.
    A bad entry is discarded (under its lock) with one sentence naming the damaged file.
    """
    record = read_record(entry)
    if record is None or split not in record.get("splits", {}):
        return None
    problem = _problem(entry, split, record["splits"][split], pins)
    if isinstance(problem, tuple):
        return (*problem, record)
    with entry_lock(entry):
        if read_record(entry) == record:  # nobody repaired it meanwhile
            discard(entry, problem)
    return None


def _problem(
    entry: Path,
    split: str,
    record: dict[str, Any],
    pins: dict[str, str | None] | None,
) -> tuple[np.ndarray, np.ndarray | None] | str:
    """The split's (images, labels), memory-mapped and checked, or a sentence naming what is
    wrong with which file."""
    folder = RunFolder(entry)
    arrays: dict[str, np.ndarray | None] = {"images": None, "labels": None}
    for kind in ("images", "labels") if record.get("labels_sha256") else ("images",):
        name = f"{split}-{kind}.npy"
        try:
            if name not in (folder.manifest() or {}):
                return f"{entry / name} is not listed in its {MANIFEST_FILE}"
            arrays[kind] = folder.read_array(name, advice=_REBUILT)  # checked against it
        except InputError as error:
            return str(error).rstrip(".")
        pinned = (pins or {}).get(kind)
        if pinned and sha256_arrays(arrays[kind]) != pinned:
            return f"{split} {kind} ({entry / name}) fail their SHA-256 check (the catalogue's pin)"
    images = arrays["images"]
    assert images is not None
    if list(images.shape[1:]) != record["shape"] or images.shape[0] != record["count"]:
        return f"{entry / split}-images.npy has shape {images.shape}, its record says otherwise"
    return images, arrays["labels"]
