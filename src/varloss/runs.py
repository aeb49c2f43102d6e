"""The run-folder layer: the names of the files varloss writes, typed reads and atomic writes, a
SHA-256 manifest that detects damage, and a lock so two processes never write one folder at once.

Every pipeline (train, correct, study) writes its folder through `RunFolder`:

    folder = RunFolder(out)
    with folder.lock():                       # a second process gets InputError at once
        folder.write_json(CONFIG_FILE, {...})  # atomic; its digest goes into manifest.json
        with folder.atomic_path(MODEL_FILE) as tmp:
            save_file(state, tmp)              # any writer that wants a file name
        folder.seal()                          # LAST: the digests of every file in the folder

Typed writers and readers: `write_json`/`read_json`, `write_csv`/`read_csv` (numbers parsed),
`write_tensors`/`read_tensors` (safetensors: weights, sampler state), `write_arrays`/`read_arrays`
(npz: maps), `write_array`/`read_array` (npy, memory-mapped: cached data sets),
`write_torch`/`read_torch` (checkpoints, loaded with weights_only=True). Every
reader checks what it reads against the manifest (`varloss.manifest`) first (and `verify(name)`
does it alone): a truncated or altered file gives one sentence naming the file and what to do,
never a traceback and never a silently wrong number. Folders written before manifests existed
have none; they are read unchecked. Files that must agree (a checkpoint and its history) are
replaced together (`replace_together`), so a kill between them never makes either look damaged;
`varloss.run_removal` deletes only what varloss wrote.

The caches (decoded data sets, domain classifiers, FID statistics) are folders of this kind too:
a cache entry is a folder with a manifest, written under its lock (`lock(wait=...)`: a second
process waits for the first instead of refusing), its record file recorded last, so an entry
whose record is not in the manifest is incomplete; a damaged entry is `clear`ed and built again.

This module is ground layer: it imports only errors, _io, _hashing and third-party libraries.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout
from safetensors.torch import load_file, save_file

from varloss._io import atomic_path as _atomic_path
from varloss._io import (
    atomic_write_json,
    atomic_write_text,
    csv_text,
    fault_point,
    parse_csv_cell,
    temporary_beside,
)
from varloss.errors import InputError
from varloss.manifest import (
    MANIFEST_FILE,
    check_entry,
    file_entry,
    read_manifest,
    replacing_entry,
    write_manifest,
)
from varloss.manifest import short_error as _short

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "CURVE_FILE",
    "CORRECT_DIR",
    "FIGURE_FILE",
    "FIT_FILE",
    "HISTORY_FILE",
    "HTML_FILE",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "MAPS_FILE",
    "MODEL_FILE",
    "REPORT_FILE",
    "RESULTS_FILE",
    "RUNS_DIR",
    "RUN_TIMING_FILE",
    "SAMPLERS_DIR",
    "SAMPLER_STATE_FILE",
    "SAMPLES_FILE",
    "SPEC_FILE",
    "TRAIN_RUN_FILES",
    "RunFolder",
]

# A training run (`varloss train --out RUN`)
CONFIG_FILE = "config.json"  # the model config (+ the train settings): `load_model` reads it
MODEL_FILE = "model.safetensors"  # the weights
REPORT_FILE = "report.json"  # the `varloss measure` keys; written last, so it marks a finished run
HISTORY_FILE = "history.csv"  # one row per epoch
MAPS_FILE = "maps.npz"  # per-pixel variance maps
SAMPLES_FILE = "samples.png"  # real / reconstructed / generated grid
HTML_FILE = "report.html"  # `varloss report`
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = f"{CHECKPOINT_DIR}/last.pt"  # model, optimiser, scheduler after the last epoch
TRAIN_RUN_FILES = (CONFIG_FILE, MODEL_FILE, REPORT_FILE, HISTORY_FILE, SAMPLES_FILE, MAPS_FILE)

# A study (`varloss study --out STUDY`)
SPEC_FILE = "study.yaml"  # the spec as it was run
RESULTS_FILE = "results.csv"  # one row per run
FIT_FILE = "fit.json"  # the fitted variance-loss-vs-MSE line
FIGURE_FILE = "figure.png"
RUN_TIMING_FILE = "study_run.json"
RUNS_DIR = "runs"  # one training run folder per spec row

# Remedies (`varloss correct --model RUN`): RUN/correct/, one folder per fitted sampler
CORRECT_DIR = "correct"
SAMPLERS_DIR = "samplers"
SAMPLER_STATE_FILE = "state.safetensors"  # beside the sampler's CONFIG_FILE
CURVE_FILE = "curve.png"  # `correct --curve`: the distortion-perception curves

# Bookkeeping of every folder
LOCK_FILE = ".varloss.lock"

# What to do about a damaged file, by name (the default: write the folder again).
_ADVICE = {
    MODEL_FILE: "rebuild it from the run's checkpoint with `varloss train --resume` and the "
    "run's settings, or train again with --force",
    CHECKPOINT_FILE: "it cannot be resumed; start the run afresh with --force",
    MANIFEST_FILE: "restore it, or delete it to use the folder without integrity checks",
}
_DEFAULT_ADVICE = (
    "write the folder again (the same command with --force; a training run's files are rebuilt "
    "from its checkpoint by `varloss train --resume`)"
)


class RunFolder:
    """A folder varloss writes: file names are relative to `path` ("checkpoint/last.pt" works)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock: FileLock | None = None
        self._locked_before: bool | None = None  # whether a varloss lock file was here already

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """The path of `name` inside the folder."""
        return self.path / name

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    # ------------------------------------------------------------------------------------------
    # The lock

    def create(self) -> RunFolder:
        """Make the folder (and its parents); an impossible path is an InputError."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"out {self.path} is a file; expected a folder (or a new path).")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(
                f"out {self.path} cannot be created ({error.strerror or error}); choose a "
                "writable folder."
            ) from None
        return self

    @contextlib.contextmanager
    def lock(self, wait: float = 0.0, *, reentrant: bool = False) -> Iterator[RunFolder]:
        """Hold the folder's lock for the block; another process (or another RunFolder of the same
        folder) asking meanwhile gets InputError at once, or after `wait` seconds (caches wait
        for the process filling them). With `reentrant`, a block of the same thread that holds
        the lock may take it again (a cache's read-then-repair paths). The folder is created if
        needed, and removed again if the block fails before writing anything into it."""
        created = not self.path.exists()
        self.create()
        lock_path = self.path / LOCK_FILE
        if self._locked_before is None:  # before this lock made the file: varloss was here
            self._locked_before = lock_path.exists()
        lock = FileLock(str(lock_path), is_singleton=reentrant)
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            held = f"after {wait:g} s " if wait else ""
            raise InputError(
                f"{self.path} is in use by another varloss process {held}(lock {lock_path}); "
                "wait for it or choose another --out."
            ) from None
        except OSError as error:
            raise InputError(
                f"out {self.path} cannot hold a lock file ({error.strerror or error}); choose a "
                "writable folder."
            ) from None
        self._lock = lock
        try:
            yield self
        except BaseException:
            # a lock file this block made, in a folder it wrote nothing varloss vouches for, is
            # removed: it would mark a folder of the user's as varloss's (see remove_written).
            # Not for waiting locks (caches): a waiter may hold the file open.
            only_lock = [p.name for p in self.path.iterdir()] == [LOCK_FILE]
            ours = not wait and not self._locked_before
            if (created and only_lock) or (ours and not (self.path / MANIFEST_FILE).exists()):
                lock.release()
                with contextlib.suppress(OSError):  # someone else's now: leave it to them
                    lock_path.unlink()
                    if created:
                        self.path.rmdir()
            raise
        finally:
            self._lock = None
            lock.release()

    # ------------------------------------------------------------------------------------------
    # Writing (atomic; each written file's digest goes into the manifest)

    # With `record=False` a writer leaves the manifest alone (to record several files at once).

    @contextlib.contextmanager
    def atomic_path(self, name: str, *, record: bool = True) -> Iterator[Path]:
        """Yield a temporary path beside `name`; on success it replaces `name` and its digest is
        recorded in the manifest, on failure it is deleted."""
        with _atomic_path(self.path / name) as tmp:
            yield tmp
        if record:
            self.record(name)

    def write_text(self, name: str, text: str, *, record: bool = True) -> Path:
        atomic_write_text(self.path / name, text)
        if record:
            self.record(name)
        return self.path / name

    def write_json(self, name: str, obj: Any, *, record: bool = True) -> Path:
        """`obj` as indented JSON (NaN refused: JSON has none), atomically."""
        atomic_write_json(self.path / name, obj)
        if record:
            self.record(name)
        return self.path / name

    def write_csv(
        self,
        name: str,
        rows: Iterable[Mapping[str, Any]],
        columns: Sequence[str],
        *,
        record: bool = True,
    ) -> Path:
        """Rows (dicts) under a header of `columns`; missing values are written empty."""
        return self.write_text(name, csv_text(rows, columns), record=record)

    def write_tensors(
        self,
        name: str,
        tensors: Mapping[str, torch.Tensor],
        metadata: Mapping[str, str] | None = None,
        *,
        record: bool = True,
    ) -> Path:
        """Named tensors as safetensors (weights, fitted sampler state): no pickles."""
        # safetensors refuses shared or non-contiguous storage: give it contiguous CPU copies.
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        with self.atomic_path(name, record=record) as tmp:
            save_file(state, str(tmp), metadata=dict(metadata) if metadata else None)
        return self.path / name

    def write_arrays(self, name: str, arrays: Mapping[str, Any], *, record: bool = True) -> Path:
        """Named arrays as an uncompressed .npz (per-pixel maps)."""
        with self.atomic_path(name, record=record) as tmp, tmp.open("wb") as handle:
            np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})
        return self.path / name

    def write_array(self, name: str, array: Any, *, record: bool = True) -> Path:
        """One array as .npy (no pickles): `read_array` can memory-map it (a data cache's sets)."""
        with self.atomic_path(name, record=record) as tmp, tmp.open("wb") as handle:
            np.save(handle, np.asarray(array), allow_pickle=False)
        return self.path / name

    def write_torch(self, name: str, state: Any, *, record: bool = True) -> Path:
        """`torch.save(state)` (checkpoints: tensors, numbers, strings, lists, dicts)."""
        with self.atomic_path(name, record=record) as tmp:
            torch.save(state, tmp)
        return self.path / name

    def replace_together(
        self, writers: Mapping[str, Callable[[Path], Any]], *, fault: str = "replace"
    ) -> None:
        """Replace several files that must agree (a checkpoint and its history) so that a kill
        at any moment leaves a folder `verify` accepts: each writer writes a temporary file
        (`writers[name](tmp)`); the manifest then lists every new digest with the one it
        replaces (`previous`, null for a new file); the files are renamed into place in order
        (put the one that commits the state, the checkpoint, last); the manifest then lists the
        new digests alone. Between the two manifest writes a file matches either digest.
        `fault` names the places `fault_point` can stop at (`FAULT:staged`, `FAULT:announced`,
        `FAULT:replaced` after each rename)."""
        staged: dict[str, Path] = {}
        try:
            for name, write in writers.items():
                staged[name] = temporary_beside(self.path / name)
                write(staged[name])
            fault_point(f"{fault}:staged")
            files = dict(self.manifest() or {})
            for name, tmp in staged.items():
                listed = files.get(name) if (self.path / name).is_file() else None
                files[name] = replacing_entry(tmp, listed)
            self._write_manifest(files)
            fault_point(f"{fault}:announced")
            for name, tmp in staged.items():
                os.replace(tmp, self.path / name)
                fault_point(f"{fault}:replaced")
        except BaseException:
            for tmp in staged.values():
                tmp.unlink(missing_ok=True)
            raise
        self.record(*staged)

    def unlink(self, name: str) -> None:
        """Delete `name` (if present) and its manifest entry."""
        (self.path / name).unlink(missing_ok=True)
        self.forget(name)

    def clear(self) -> None:
        """Delete every file a seal covers, then the manifest (a damaged cache entry, before it is
        built again); hidden files (the lock) and subfolders with a manifest of their own stay."""
        for name in self.files():
            (self.path / name).unlink(missing_ok=True)
        (self.path / MANIFEST_FILE).unlink(missing_ok=True)

    def locked_before(self) -> bool:
        """Whether a varloss lock file was here before this process locked the folder (then
        varloss wrote into it; `varloss.run_removal` trusts its layout names)."""
        if self._locked_before is None:
            return (self.path / LOCK_FILE).exists()
        return self._locked_before

    def written_by_varloss(self) -> bool:
        """Whether varloss wrote this folder: a manifest listing files, or `locked_before`."""
        return self.locked_before() or bool(self.manifest())

    # ------------------------------------------------------------------------------------------
    # Reading (checked against the manifest first)

    def read_bytes(self, name: str) -> bytes:
        self.verify(name, required=True)
        return (self.path / name).read_bytes()

    def read_json(self, name: str, *, advice: str | None = None) -> Any:
        """The parsed JSON of `name`, verified against the manifest; one sentence when it is
        missing, damaged or not JSON (ending with `advice`, what to do; a default per name)."""
        self.verify(name, required=True, advice=advice)
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(
                f"{path} is damaged (not valid JSON: {_short(error)}); {advice or _advice(name)}."
            ) from None

    def read_csv(
        self, name: str, typed: bool = True, *, advice: str | None = None
    ) -> list[dict[str, Any]]:
        """The rows of `name` as dicts, verified against the manifest. With `typed`, numbers are
        parsed (int when integral text, else float) and empty cells are None."""
        self.verify(name, required=True, advice=advice)
        path = self.path / name
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except (UnicodeDecodeError, csv.Error) as error:
            raise InputError(
                f"{path} is damaged (not valid CSV: {_short(error)}); {advice or _advice(name)}."
            ) from None
        if typed:
            rows = [{key: parse_csv_cell(value) for key, value in row.items()} for row in rows]
        return rows

    def read_tensors(
        self, name: str, device: str | torch.device = "cpu", *, advice: str | None = None
    ) -> dict[str, torch.Tensor]:
        """The named tensors of a safetensors file, verified against the manifest first."""
        self.verify(name, required=True, advice=advice)
        try:
            return load_file(str(self.path / name), device=str(device))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise self._unreadable(name, "safetensors", error, advice) from None

    def read_arrays(self, name: str, *, advice: str | None = None) -> dict[str, np.ndarray]:
        """The arrays of an .npz file (no pickles), verified against the manifest first."""
        self.verify(name, required=True, advice=advice)
        try:
            with np.load(self.path / name, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except Exception as error:  # noqa: BLE001 - zipfile, numpy and OS errors alike
            raise self._unreadable(name, "npz", error, advice) from None

    def read_array(self, name: str, *, mmap: bool = True, advice: str | None = None) -> np.ndarray:
        """The array of an .npy file (no pickles; memory-mapped with `mmap`), verified first."""
        self.verify(name, required=True, advice=advice)
        try:
            return np.load(self.path / name, mmap_mode="r" if mmap else None, allow_pickle=False)
        except Exception as error:  # noqa: BLE001 - numpy and OS errors alike
            raise self._unreadable(name, "npy", error, advice) from None

    def read_torch(self, name: str, *, advice: str | None = None) -> Any:
        """A `torch.save` file loaded with weights_only=True on the CPU, verified first."""
        self.verify(name, required=True, advice=advice)
        try:
            return torch.load(self.path / name, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # never torch's advice to turn weights_only off
            raise InputError(
                f"{self.path / name} holds Python objects other than tensors, numbers and "
                f"dicts, which varloss never loads (no code runs); {advice or _advice(name)}."
            ) from None
        except Exception as error:  # noqa: BLE001 - pickle, zip and OS errors alike
            raise self._unreadable(name, "torch.save", error, advice) from None

    def _unreadable(
        self, name: str, kind: str, error: BaseException, advice: str | None
    ) -> InputError:
        return InputError(
            f"{self.path / name} could not be read as a {kind} file ({_short(error)}); "
            f"{advice or _advice(name)}."
        )

    # ------------------------------------------------------------------------------------------
    # The manifest

    def manifest(self) -> dict[str, dict[str, Any]] | None:
        """The recorded files ({name: {"sha256", "bytes"}}), or None when there is no manifest."""
        return read_manifest(self.path / MANIFEST_FILE, _ADVICE[MANIFEST_FILE])

    def verify(self, name: str, *, required: bool = False, advice: str | None = None) -> bool:
        """Check `name` against the manifest: True when it matches, False when the folder has no
        manifest or the manifest does not list it (nothing to check). A listed file that is
        missing or whose size or SHA-256 differs is an InputError naming it and what to do.
        With `required`, a missing file is an InputError even when unlisted."""
        path = self.path / name
        what_to_do = advice or _advice(name)
        if required and not path.is_file():
            raise InputError(f"{self.path} has no {name}; {what_to_do}.")
        files = self.manifest()
        entry = None if files is None else files.get(name)
        if entry is None:
            return False
        return check_entry(path, entry, what_to_do)

    def record(self, *names: str) -> None:
        """Put the current digests of `names` into the manifest (created if needed)."""
        files = dict(self.manifest() or {})
        for name in names:
            files[name] = file_entry(self.path / name)
        self._write_manifest(files)

    def forget(self, *names: str) -> None:
        """Drop `names` from the manifest (their files are being rewritten or removed)."""
        files = self.manifest()
        if files is None or not any(name in files for name in names):
            return
        self._write_manifest({k: v for k, v in files.items() if k not in names})

    def seal(self, names: Iterable[str] | None = None) -> Path:
        """Write the manifest LAST: the digests of `names`, by default of every file in the folder
        (hidden files and subfolders with a manifest of their own left out). Entries of files
        that no longer exist are dropped."""
        files = {
            name: entry
            for name, entry in (self.manifest() or {}).items()
            if (self.path / name).is_file()
        }
        for name in self.files() if names is None else names:
            files[name] = file_entry(self.path / name)
        return self._write_manifest(files)

    def files(self) -> list[str]:
        """Every file of the folder a seal covers, as names relative to it, sorted."""
        found: list[str] = []
        for root, folders, names in os.walk(self.path):
            here = Path(root)
            folders[:] = sorted(
                folder
                for folder in folders
                if not folder.startswith(".") and not (here / folder / MANIFEST_FILE).is_file()
            )
            for name in names:
                if name.startswith(".") or (here == self.path and name == MANIFEST_FILE):
                    continue
                found.append((here / name).relative_to(self.path).as_posix())
        return sorted(found)

    def _write_manifest(self, files: Mapping[str, Any]) -> Path:
        return write_manifest(self.path / MANIFEST_FILE, files)


def _advice(name: str) -> str:
    return _ADVICE.get(name, _DEFAULT_ADVICE)
