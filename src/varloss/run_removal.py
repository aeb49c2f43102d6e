"""Deleting only what varloss wrote (`varloss train --force`): `remove_written(folder, ...)`.

A folder is varloss's when it has a manifest listing files or a varloss lock file
(`RunFolder.written_by_varloss`); anything else is refused in one sentence. In a varloss folder
the files its manifest lists are deleted, and the names of varloss's own layout (files a kill
or a page may have left unlisted), with the temporary files of interrupted atomic writes; derived
folders (a replaced model's `correct/`) go by the same rule, each under its own lock; folders
left empty are removed. A file of the user's, wherever it lies, stays.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from varloss.errors import InputError
from varloss.runs import (
    CHECKPOINT_FILE,
    CORRECT_DIR,
    HTML_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    TRAIN_RUN_FILES,
    RunFolder,
)


def remove_written(
    folder: RunFolder, layout: Iterable[str] = (), *, derived: Iterable[str] = (), what: str = "out"
) -> None:
    """Delete what varloss wrote in `folder`, and nothing else: the files the manifest lists,
    the `layout` names (only in a folder varloss locked before, whose manifest may not list
    them yet), temporary files left by interrupted atomic writes, then the manifest; the
    `derived` subfolders (e.g. `correct/`) by the same rule, with every nested varloss folder in
    them; folders left empty. A folder varloss did not write is refused in one sentence (`what`
    names it, e.g. "--out")."""
    if not folder.written_by_varloss():
        raise InputError(
            f"{what} {folder.path} is not a varloss run (it has no {MANIFEST_FILE} and no "
            f"{LOCK_FILE}), so varloss deletes nothing in it; choose another {what}, or "
            "empty it yourself."
        )
    touched: set[Path] = set()
    for name in derived:  # first: a derived folder in use stops this before anything is deleted
        touched |= _remove_derived(folder.path / name)
    touched |= _remove_own(folder, layout)
    for path in sorted(touched, key=lambda p: len(p.parts), reverse=True):
        if path != folder.path and path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def remove_train_run(folder: RunFolder, *, what: str = "out") -> None:
    """`remove_written` for a training run (`train --force`): its listed files, its layout
    (the run's files, checkpoint and page), and the replaced model's remedies (`correct/`) and
    their pages, which would otherwise be shown as the new model's."""
    layout = (*TRAIN_RUN_FILES, CHECKPOINT_FILE, HTML_FILE)
    remove_written(folder, layout, derived=(CORRECT_DIR,), what=what)


def _remove_own(folder: RunFolder, layout: Iterable[str]) -> set[Path]:
    """Delete one folder's own written files (see `remove_written`); the folders touched."""
    names = set(folder.manifest() or {})
    if folder.locked_before():
        names |= set(layout)
    root = folder.path.resolve()
    touched = set()
    for name in sorted(names):
        path = folder.path / name
        if not path.parent.resolve().is_relative_to(root):
            continue  # a forged manifest entry pointing outside the folder: never followed
        for leftover in path.parent.glob(f".{path.name}.*.tmp"):  # interrupted atomic writes
            leftover.unlink(missing_ok=True)
        if path.is_file() or path.is_symlink():
            path.unlink()
        touched.update(p for p in path.parents if p.is_relative_to(folder.path))
    for leftover in folder.path.glob(f".{MANIFEST_FILE}.*.tmp"):
        leftover.unlink(missing_ok=True)
    (folder.path / MANIFEST_FILE).unlink(missing_ok=True)
    return touched


def _remove_derived(top: Path) -> set[Path]:
    """Delete what varloss wrote in `top` and every varloss folder below it (each under its
    lock: a process writing it is told, not undercut); the folders touched."""
    touched: set[Path] = set()
    if not top.is_dir() or top.is_symlink():
        return touched
    for here, folders, _ in os.walk(top, topdown=False):
        path = Path(here)
        if (path / MANIFEST_FILE).is_file() or (path / LOCK_FILE).exists():
            child = RunFolder(path)
            with child.lock():
                touched |= _remove_own(child, (HTML_FILE,))
            (path / LOCK_FILE).unlink(missing_ok=True)
            touched.add(path)
        touched.update(path / folder for folder in folders)
    return touched
