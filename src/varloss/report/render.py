"""Render and write the page of a varloss output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import varloss.report.pages  # noqa: F401  (registers the built-in report kinds)
from varloss._io import atomic_write_text
from varloss.errors import InputError
from varloss.report.files import read_measure_json
from varloss.report.html import render
from varloss.report.kinds import REPORT_KINDS, ReportKind, detect_kind
from varloss.report.sections import rendered_by
from varloss.runs import HTML_FILE, RunFolder


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


def render_report(directory: str | Path, *, command: str | None = None) -> str:
    """Build the HTML text of the report for `directory` (see `write_report`)."""
    folder, kind, source = _resolve(Path(directory))
    return _render_page(folder, kind, source, command)


def _render_page(folder: Path, kind: ReportKind, source: Path | None, command: str | None) -> str:
    context: dict[str, Any] = kind.build(folder, source)
    context["kind"] = kind.name
    context["directory"] = str(folder.resolve())
    context["rendered"] = rendered_by(command)
    return render(context)


def write_report(directory: str | Path, *, command: str | None = None) -> Path:
    """Write `directory/report.html`, a self-contained page of everything the folder holds.

    `directory` may also be a `varloss measure --json` file; the page goes beside it.
    `command` is recorded as the command that rendered the page (the CLI passes its argv).
    Returns the path of the page.

    Pages that show this folder too are rewritten with it: for a `correct` folder inside a
    train run (RUN/correct) the run's page, so the link between the two always works.
    """
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
