"""The registry of report kinds: which varloss output a folder is, and who builds its page.

A kind is a name, a `detects(folder)` test and a `build(folder, source)` that returns the page's
template context. Kinds are tried in registration order (the built-in ones: study, correct,
train, measure; see `varloss.report.pages`), so a more specific folder is recognised first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from varloss._registry import Registry
from varloss.errors import InputError

Context = dict[str, Any]


@dataclass(frozen=True)
class ReportKind:
    """One kind of varloss output folder and how its page is built.

    `build(folder, source)` gets the folder and, for a `varloss measure --json` file given as
    the target, that file (else None). `related(folder)` names other folders whose pages show
    this one and are rewritten with it (a train run shows its `correct/` folder).
    """

    name: str
    description: str
    detects: Callable[[Path], bool]
    build: Callable[[Path, Path | None], Context]
    related: Callable[[Path], list[Path]] = lambda folder: []


REPORT_KINDS: Registry[ReportKind] = Registry("report kind")


def register_report_kind(kind: ReportKind, *, replace: bool = False) -> ReportKind:
    """Add a kind of page; a name another kind holds is refused unless `replace` (the
    registries' one duplicate policy)."""
    if not kind.name or not kind.name.isidentifier():
        raise InputError(f"report kind name must be an identifier, got {kind.name!r}.")
    return REPORT_KINDS.register(kind.name, kind, replace=replace)


def detect_kind(directory: str | Path) -> str:
    """Say which varloss output `directory` is: "study", "correct", "train" or "measure".

    Raises InputError when it is not a folder or holds none of them.
    """
    directory = Path(directory)
    if not directory.exists():
        raise InputError(f"report folder {directory} does not exist.")
    if not directory.is_dir():
        raise InputError(
            f"report folder {directory} is not a folder; give a varloss output folder or a "
            "`varloss measure --json` file."
        )
    try:
        found = next((kind for kind in REPORT_KINDS.values() if kind.detects(directory)), None)
    except PermissionError as error:
        raise InputError(f"report folder {directory} cannot be read ({error.strerror}).") from None
    if found is not None:
        return found.name
    expected = "; ".join(kind.description for kind in REPORT_KINDS.values())
    raise InputError(f"report folder {directory} holds no varloss output (expected {expected}).")
