"""The manifest of a folder varloss writes (`manifest.json`): the SHA-256 and size of every file
it vouches for, and the one rule by which a file is checked against it.

    {"format": 1, "algorithm": "sha256",
     "files": {"model.safetensors": {"sha256": "...", "bytes": 140352}, ...}}

An entry may also name the digest it replaces (`previous`: a digest, or null for a file that did
not exist): `RunFolder.replace_together` announces a replacement so before renaming files into
place, so that a kill between the writes of a pair (a checkpoint and its history) leaves every
file matching one of the two digests. `RunFolder` (varloss.runs) reads and writes it.

Ground layer: imports only errors, _io and _hashing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from varloss._hashing import sha256_file
from varloss._io import atomic_write_json
from varloss.errors import InputError

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1


def short_error(error: BaseException) -> str:
    """The first line of an error's text, at most 120 characters, for one-sentence messages."""
    lines = str(error).strip().splitlines()
    text = lines[0].rstrip(".") if lines else type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def read_manifest(path: Path, advice: str) -> dict[str, dict[str, Any]] | None:
    """The recorded files ({name: entry}) of the manifest at `path`, or None when there is none;
    a damaged manifest is one InputError ending with `advice`."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            for entry in files.values()
        ):
            raise TypeError("files is not a table of digests")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(f"{path} is damaged ({short_error(error)}); {advice}.") from None
    return files


def write_manifest(path: Path, files: Mapping[str, Any]) -> Path:
    """Write the manifest at `path` atomically, entries sorted by name."""
    atomic_write_json(
        path,
        {
            "format": MANIFEST_FORMAT,
            "algorithm": "sha256",
            "files": {name: files[name] for name in sorted(files)},
        },
    )
    return path


def file_entry(path: Path) -> dict[str, Any]:
    """The digest of a file as a manifest records it."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def replacing_entry(new_file: Path, listed: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entry of `new_file` about to replace a file whose entry is `listed` (None: no file)."""
    previous = (
        None if listed is None else {k: listed[k] for k in ("sha256", "bytes") if k in listed}
    )
    return {**file_entry(new_file), "previous": previous}


def _matches(found: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    size_ok = "bytes" not in entry or entry["bytes"] == found["bytes"]
    return size_ok and entry.get("sha256") == found["sha256"]


def check_entry(path: Path, entry: Mapping[str, Any], what_to_do: str) -> bool:
    """Check a listed file against its entry: True when it matches (or matches the digest an
    interrupted replacement announced as `previous`); False when a first version a kill kept
    from arriving is absent (as if unlisted); else InputError naming the file, ending with
    `what_to_do`."""
    replacing = "previous" in entry
    previous = entry.get("previous")
    if not path.is_file():
        if replacing and previous is None:
            return False
        raise InputError(f"{path} is missing (it is listed in {MANIFEST_FILE}); {what_to_do}.")
    found = file_entry(path)
    if _matches(found, entry) or (isinstance(previous, dict) and _matches(found, previous)):
        return True
    raise InputError(
        f"{path} is damaged (its SHA-256 does not match {MANIFEST_FILE}); {what_to_do}."
    )
