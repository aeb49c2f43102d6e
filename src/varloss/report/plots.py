"""The figures the page draws itself (the others are PNG files the run saved): variance maps,
training curves from history.csv, and a study's maps of every run, as embeddable `Figure`s.

The drawing is in `varloss.figures`; this module turns it into PNG data URIs with captions.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from varloss._words import count
from varloss.figures import pyplot, variance_map_panels, variance_maps_figure
from varloss.figures.report_maps import (
    LOSS_COLUMNS,
    MSE_COLUMNS,
    runs_maps_figure,
    training_curves_figure,
)
from varloss.report.html import Figure, number, png_uri


def figure_uri(fig: Any) -> str:
    """A matplotlib figure as a PNG data URI (no timestamp metadata); the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, metadata={"Software": None})
    pyplot().close(fig)
    return png_uri(buffer.getvalue())


def maps_figure(maps: Mapping[str, np.ndarray]) -> Figure:
    """Per-pixel variance maps (shared colour scale) and their differences, with colour bars.

    Drawn wide (variances in one row, differences below) and narrow (two columns) for phones;
    the page picks one with <picture>.
    """
    panels, diffs, folds = variance_map_panels(maps)
    caption = (
        "Per-pixel variance across images (one colour scale for all sets), then where the "
        "variance is lost: real minus reconstructed or generated (red = lost)."
    )
    if folds:
        caption += " Maps shown as " + ", ".join(sorted(folds)) + "."
    narrow = None
    if len(panels) + len(diffs) > 2:
        narrow = figure_uri(variance_maps_figure(maps, columns=2))
    return Figure(
        title="Per-pixel variance maps",
        data_uri=figure_uri(variance_maps_figure(maps)),
        narrow_uri=narrow,
        caption=caption,
        alt="per-pixel variance maps of real, reconstructed and generated images",
    )


def loss_curves(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Training curves from history.csv rows, or None when they hold no epochs to draw."""
    if not rows or "epoch" not in rows[0]:
        return None
    epochs = [number(row.get("epoch")) for row in rows]
    if any(epoch is None for epoch in epochs):
        return None
    curves = []
    for group in (LOSS_COLUMNS, MSE_COLUMNS):
        panel = {column: _values(rows, column) for column in group if column in rows[0]}
        if panel:
            curves.append(panel)
    if not curves:
        return None
    narrow = None
    if len(curves) > 1:
        narrow = figure_uri(training_curves_figure(epochs, curves, stacked=True))
    return Figure(
        title="Training curves",
        data_uri=figure_uri(training_curves_figure(epochs, curves, stacked=False)),
        narrow_uri=narrow,
        caption=f"From history.csv ({count(len(rows), 'epoch')}).",
        alt="training loss and MSE per epoch",
    )


def _values(rows: Sequence[Mapping[str, Any]], column: str) -> list[float]:
    """A history.csv column as floats, NaN where a cell is empty."""
    values = [number(row.get(column)) for row in rows]
    return [np.nan if value is None else value for value in values]


def runs_maps(entries: Sequence[tuple[str, Mapping[str, np.ndarray]]]) -> Figure | None:
    """A study's per-pixel variance maps, one row per (label, maps) run, or None."""
    fig = runs_maps_figure(entries)
    if fig is None:
        return None
    return Figure(
        title="Per-pixel variance maps of each run",
        data_uri=figure_uri(fig),
        caption="One row per run (from its maps.npz): the per-pixel variance across test "
        "images of real, reconstructed and generated images on one colour scale, then where "
        "the variance is lost (real minus reconstructed / generated, red = lost) on another.",
        alt="per-pixel variance maps of every run in the study",
    )
