"""Small file helpers shared by every writer: nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varloss.errors import InputError


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


FAULT_ENV = "VARLOSS_FAULT"
"""Testing hook: `VARLOSS_FAULT=POINT[@N]` makes the process die (os._exit, no cleanup, as a
kill would) the Nth time (default: the first) it passes `fault_point(POINT)`."""
FAULT_EXIT_CODE = 86
_FAULT_HITS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """A place between two writes that must agree; under `VARLOSS_FAULT` the process dies here
    so that tests can prove every such place survives a kill (`--resume` continues)."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition("@")
    if point != name:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if _FAULT_HITS[name] == int(count or 1):
        os._exit(FAULT_EXIT_CODE)


def temporary_beside(path: str | os.PathLike[str]) -> Path:
    """A new empty file beside `path` (hidden, `.NAME.*.tmp`), with the permissions an ordinary
    open() would give; the caller renames it over `path` or deletes it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    # mkstemp creates 0600; give the result the permissions an ordinary open() would.
    os.chmod(name, 0o666 & ~_UMASK)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, else delete it.

    Use for writers that want a file name (np.save, matplotlib, safetensors):
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    """
    target = Path(path)
    tmp = temporary_beside(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_torch_save(path: str | os.PathLike[str], state: Any) -> None:
    """`torch.save(state)` written atomically (checkpoints: tensors, numbers, lists, dicts)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """`obj` as indented JSON, atomically; a NaN or infinity (which JSON cannot hold and no
    varloss result may be) is one InputError naming the file, which is not written."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
    except ValueError as error:
        raise InputError(
            f"{path} was not written: a result is not a finite number ({error}); check the "
            "inputs' value ranges."
        ) from None
    atomic_write_text(path, text + "\n")


def check_output_path(path: str | os.PathLike[str], what: str, *, folder: bool = False) -> Path:
    """Refuse, before any work is done, an output that cannot be written: InputError naming
    `what` (e.g. "--json") when `path` is a folder given as a file (or a file given as a
    folder), lies under a regular file, is a device or /proc entry, or its folder refuses
    new files. Nothing is created: the probe file is deleted at once."""
    shown = f"{what} {str(path)!r}"
    if not str(path).strip():  # Path("") is the current folder: never written into by accident
        raise InputError(f"{shown} is empty; expected a {'folder' if folder else 'file'} name.")
    target = Path(path).expanduser()
    if target.exists() or target.is_symlink():
        if folder and not target.is_dir():
            raise InputError(f"{shown} is a file; expected a folder (or a new folder's name).")
        if not folder and target.is_dir():
            raise InputError(f"{shown} is a folder; expected a file name, e.g. {target}/out.")
        if not folder and not target.is_file():
            raise InputError(f"{shown} exists and is not a regular file; expected a file name.")
    elif not folder and str(path).endswith(("/", os.sep)):
        raise InputError(f"{shown} ends with a path separator; expected a file name.")
    existing = target if folder and target.is_dir() else target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{shown} lies under {str(existing)!r}, which is a file, not a folder.")
    try:  # the only reliable test: permissions, read-only mounts, /proc, root or not
        with tempfile.TemporaryFile(dir=existing, prefix=".varloss-probe-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(
            f"{shown} cannot be written: folder {str(existing)!r} refuses new files ({reason})."
        ) from None
    return target


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows (dicts) as CSV text under a header of `columns`; missing values are empty."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: row.get(column) for column in columns})
    return text.getvalue()


def parse_csv_cell(value: str | None) -> Any:
    """A CSV cell as a number where it is one (int when integral text, else float); empty is
    None; other text stays text."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def json_safe(value: Any) -> Any:
    """`value` as JSON would give it back (tuples become lists, numpy scalars numbers): what a
    saved settings file holds, so a fresh value compares equal to a saved one."""

    def default(item: Any) -> Any:
        if isinstance(item, np.generic):
            return item.item()
        raise TypeError(f"not JSON serialisable: {type(item).__name__}")

    return json.loads(json.dumps(value, default=default))
