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
from varloss.runs import HTML_FILE, REPORT_FILE, RunFolder


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

    `directory` may also be a `varloss measure --json` file `DIR/x.json`; its page is
    `DIR/x.html`, a name of its own, so a run's page (or any page) in DIR is never replaced.
    A page file varloss did not write (no varloss generator tag, not in the folder's manifest)
    is never overwritten: InputError says so. `command` is recorded as the command that
    rendered the page (the CLI passes its argv). Returns the path of the page.

    Pages that show this folder too are rewritten with it: for a `correct` folder inside a
    train run (RUN/correct) the run's page, so the link between the two always works.
    """
    folder, kind, source = _resolve(Path(directory))
    page = folder / HTML_FILE if source is None else source.with_suffix(".html")
    if source is not None and page.name == HTML_FILE and REPORT_FILE in _manifest(folder):
        raise InputError(
            f"{source} is the report of the varloss run in {folder}, whose page is "
            f"{page}; write that page with `varloss report {folder}`."
        )
    _write_page(page, _render_page(folder, kind, source, command))
    # Written after this page, so that their links to it are drawn.
    for other in kind.related(folder):
        _write_page(
            other / HTML_FILE,
            _render_page(other, REPORT_KINDS[detect_kind(other)], None, command),
        )
    return page


PAGE_TAG = '<meta name="generator" content="varloss">'
"""The tag every varloss page carries in its head (templates/report.html): how a page varloss
wrote is told from a file of the user's own that happens to have the page's name."""


def _manifest(folder: Path) -> dict[str, Any]:
    return RunFolder(folder).manifest() or {}


def _written_by_varloss(page: Path, listed: bool) -> bool:
    """Whether `page` may be replaced: absent, listed in its folder's manifest, or a page
    carrying varloss's generator tag."""
    if listed or not (page.exists() or page.is_symlink()):
        return True
    if not page.is_file():
        return False
    with page.open("rb") as handle:
        return PAGE_TAG.encode() in handle.read(16384)


def _write_page(page: Path, html: str) -> None:
    """Write a page atomically; when the folder's manifest lists it, record the new digest. A
    file of that name varloss did not write is refused, never replaced."""
    run = RunFolder(page.parent)
    try:
        listed = page.name in _manifest(page.parent)
        if not _written_by_varloss(page, listed):
            raise InputError(
                f"{page} exists and was not written by varloss; move it away (or name "
                "another folder): varloss never replaces a file it did not write."
            )
        if listed:
            run.write_text(page.name, html)
        else:
            atomic_write_text(page, html)
    except OSError as error:
        raise InputError(
            f"{page} cannot be written ({error.strerror or error}); make the "
            "folder writable or copy it somewhere writable."
        ) from None
