"""The study page's results table: the numbers a reader compares across runs (MSE, both variance
losses, their ratio for the reconstructions, FID) beside a short run label, so that it fits a
desktop screen without sideways scrolling and a phone in a compact layout (report.css: on narrow
screens each run's label takes a line of its own and its five numbers share the line below).
The full results.csv follows on the page in a closed <details>, scrolling inside its own box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from varloss.errors import InputError
from varloss.records import ResultsRow, fid_number, read_report
from varloss.report.html import Cell, Table, num_cell, number
from varloss.runs import HTML_FILE, REPORT_FILE, RUNS_DIR, RunFolder

__all__ = ["COMPARED_COLUMNS", "compared_table", "ratio_cell", "run_label"]

# (header, results.csv column); the ratio and FID columns follow. The soft hyphens (U+00AD) let
# the long words break where the compact layout's narrow columns need it, and nowhere else.
COMPARED_COLUMNS = (
    ("MSE", "mse"),
    ("variance loss, recon\u00adstructed", "variance_loss_reconstructed"),
    ("variance loss, gener\u00adated", "variance_loss_generated"),
)
_RATIO_HEADER = "ratio loss / MSE (recon\u00adstructed)"
# The settings a run label names when they differ between the study's runs (family and data set
# always), with the short prefix the study figure's run labels use.
_LABEL_SETTINGS = (
    ("latent", "z"),
    ("epochs", "e"),
    ("loss", ""),
    ("reconstruction", ""),
    ("limit", "n"),
    ("seed", "s"),
)


def run_label(row: ResultsRow, varying: Sequence[str]) -> str:
    """`dense mnist z8 sample`: family, data set and the `varying` settings of a results row."""
    parts = [row.family, row.dataset]
    for column, prefix in _LABEL_SETTINGS:
        value = getattr(row, column)
        if column in varying and value not in (None, ""):
            parts.append(f"{prefix}{value}")
    return " ".join(parts)


def ratio_cell(loss: Any, mse: Any) -> Cell:
    """variance loss / MSE as a numeric cell; a dash, with the reason as its title, where the
    ratio is undefined (MSE 0 or missing numbers)."""
    loss, mse = number(loss), number(mse)
    if loss is None or mse is None or not math.isfinite(loss) or not math.isfinite(mse):
        return Cell("–", None, numeric=True, title="no MSE or variance loss recorded")
    if mse == 0:
        return Cell("–", None, numeric=True, title="MSE is 0: the ratio is undefined")
    return num_cell(loss / mse)


def run_fids(directory: Path, rows: Sequence[ResultsRow]) -> dict[str, float]:
    """run_id -> the FID its report.json records (runs without one, or with a damaged report,
    are left out: their cell shows a dash)."""
    fids = {}
    for row in rows:
        run_id = row.run_id
        folder = RunFolder(directory / RUNS_DIR / run_id)
        if not folder.exists(REPORT_FILE):
            continue
        try:
            fid = fid_number(read_report(folder).data.get("fid"))
        except InputError:  # a damaged report.json: no FID cell, the page still renders
            continue
        if fid is not None and math.isfinite(fid):
            fids[run_id] = fid
    return fids


def compared_table(rows: Sequence[ResultsRow], directory: Path) -> Table | None:
    """One row per run: its label (linked to its page, the run id as the link's title), MSE,
    both variance losses, their ratio for the reconstructions and the FID; sortable."""
    if not rows:
        return None
    varying = [c for c, _ in _LABEL_SETTINGS if len({getattr(r, c) for r in rows}) > 1]
    fids = run_fids(directory, rows)
    table_rows = []
    for row in rows:
        run_id = row.run_id
        link: str | None = f"{RUNS_DIR}/{run_id}/{HTML_FILE}"
        if not (directory / link).is_file():
            link = None
        cells = [Cell(run_label(row, varying), run_id, link=link, title=run_id)]
        cells += [num_cell(getattr(row, column)) for _, column in COMPARED_COLUMNS]
        cells.append(ratio_cell(row.variance_loss_reconstructed, row.mse))
        cells.append(num_cell(fids.get(run_id)))
        table_rows.append(cells)
    columns = ["run", *(header for header, _ in COMPARED_COLUMNS), _RATIO_HEADER, "FID"]
    return Table(
        columns=columns,
        rows=table_rows,
        sortable=True,
        id="results",
        numeric_columns=[False] + [True] * (len(columns) - 1),
    )
