"""Render and write the page of a varloss output folder."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import varloss.report.pages  # noqa: F401  (registers the built-in report kinds)
from varloss._io import atomic_path, atomic_write_text
from varloss.errors import InputError
from varloss.report.files import read_measure_json
from varloss.report.html import render
from varloss.report.kinds import REPORT_KINDS, ReportKind, detect_kind
from varloss.report.sections import rendered_by
from varloss.runs import HTML_FILE, RunFolder

REPORT_NAME = HTML_FILE


def _resolve(target: Path) -> tuple[Path, ReportKind, Path | None]:
    """(folder, kind, measure JSON file) for a folder or a `varloss measure --json` file."""
    if target.is_file():
        if read_measure_json(target) is None:
            raise InputError(
                f"{target} is not a `varloss measure --json` file (no JSON object with "
                "var_real); give a varloss output folder or a measure JSON."
            )
        return target.parent, REPORT_KINDS["measure"], target
    return target, REPORT_KINDS[detect_kind(target)], None


def _ignored_recompute(recompute_maps: bool | None) -> None:
    if recompute_maps is not None:
        warnings.warn(
            "recompute_maps is deprecated and ignored: the report reads the maps.npz that "
            "varloss train writes and never re-runs a model",
            DeprecationWarning,
            stacklevel=3,
        )


def render_report(
    directory: str | Path, *, command: str | None = None, recompute_maps: bool | None = None
) -> str:
    """Build the HTML text of the report for `directory` (see `write_report`)."""
    _ignored_recompute(recompute_maps)
    folder, kind, source = _resolve(Path(directory))
    return _render_page(folder, kind, source, command)


def _render_page(folder: Path, kind: ReportKind, source: Path | None, command: str | None) -> str:
    context: dict[str, Any] = kind.build(folder, source)
    context["kind"] = kind.name
    context["directory"] = str(folder.resolve())
    context["rendered"] = rendered_by(command)
    return render(context)


def write_report(
    directory: str | Path, *, command: str | None = None, recompute_maps: bool | None = None
) -> Path:
    """Write `directory/report.html`, a self-contained page of everything the folder holds.

    `directory` may also be a `varloss measure --json` file; the page goes beside it.
    `command` is recorded as the command that rendered the page (the CLI passes its argv).
    Returns the path of the page.

    Pages that show this folder too are rewritten with it: for a `correct` folder inside a
    train run (RUN/correct) the run's page, so the link between the two always works.
    """
    _ignored_recompute(recompute_maps)
    folder, kind, source = _resolve(Path(directory))
    _write_page(folder, _render_page(folder, kind, source, command))
    # Written after this page, so that their links to it are drawn.
    for other in kind.related(folder):
        _write_page(other, _render_page(other, REPORT_KINDS[detect_kind(other)], None, command))
    return folder / HTML_FILE


def _write_page(folder: Path, html: str) -> None:
    """Write report.html atomically; when the folder's manifest lists it, record the new digest."""
    run = RunFolder(folder)
    try:
        manifest = run.manifest() or {}
        if HTML_FILE in manifest:
            run.write_text(HTML_FILE, html)
        else:
            atomic_write_text(folder / HTML_FILE, html)
    except OSError as error:
        raise InputError(
            f"{folder / HTML_FILE} cannot be written ({error.strerror or error}); make the "
            "folder writable or copy it somewhere writable."
        ) from None


def save_maps(maps: Mapping[str, Any], path: str | Path) -> Path:
    """Save per-pixel variance maps (float64, one sample's shape) as the report's `maps.npz`.

    The format is plain numpy: float64 arrays keyed `var_real`, `var_reconstructed`,
    `var_generated` (other `var_*` keys are kept). Written atomically.
    """
    arrays = {
        str(key): np.asarray(value, dtype=np.float64)
        for key, value in maps.items()
        if value is not None
    }
    if not arrays:
        raise InputError("maps must hold at least one array (e.g. var_real).")
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return path
