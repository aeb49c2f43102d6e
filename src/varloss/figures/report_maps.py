"""Two figures of the HTML report: training curves from history.csv rows, and the per-pixel
variance maps of several runs stacked one row per run (a study's page).

Each function returns an open matplotlib figure; the report embeds it and closes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from varloss.figures.base import pyplot
from varloss.figures.maps import map_image

# history.csv columns drawn in each panel: the loss and its terms, then the training MSE (and
# the validation split's, from runs trained with --patience).
LOSS_COLUMNS = ("loss", "reconstruction", "kl", "val_loss")
MSE_COLUMNS = ("mse", "val_mse")


def training_curves_figure(
    epochs: Sequence[float], curves: Sequence[Mapping[str, Sequence[float]]], *, stacked: bool
) -> Any:
    """One panel per mapping of column name -> values per epoch (NaN for a missing value).

    Panels sit side by side, or one above the other with `stacked` (for narrow screens).
    """
    shape = (len(curves), 1) if stacked else (1, len(curves))
    size = (5.0, 3.2 * len(curves)) if stacked else (5.0 * len(curves), 3.4)
    fig, axes = pyplot().subplots(*shape, figsize=size, dpi=100, squeeze=False)
    marker = "o" if len(epochs) < 30 else None
    for ax, panel in zip(axes.reshape(-1), curves, strict=True):
        for column, values in panel.items():
            ax.plot(epochs, values, marker=marker, label=column)
        ax.set_xlabel("epoch")
        ax.locator_params(axis="x", integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if next(iter(panel)) in LOSS_COLUMNS:
            ax.set_title("loss = reconstruction + KL", fontsize=9)
            ax.set_ylabel("per-sample loss (nats)")
        else:
            ax.set_title("reconstruction MSE (training)", fontsize=9)
            ax.set_ylabel("MSE per pixel")
    fig.tight_layout()
    return fig


_MAP_COLUMNS = (("var_real", "real"), ("var_reconstructed", "recon."), ("var_generated", "gen."))
# (maps key, column title, is a difference real - key)
_RUN_COLUMNS = [(key, f"var, {label}", False) for key, label in _MAP_COLUMNS] + [
    (key, f"real - {label}", True) for key, label in _MAP_COLUMNS[1:]
]


def runs_maps_figure(entries: Sequence[tuple[str, Mapping[str, np.ndarray]]]) -> Any | None:
    """Per-pixel variance maps of several runs, given as (label, maps) pairs: one row per run.

    Columns: variance of real, reconstructed and generated images, then real minus
    reconstructed and real minus generated; one colour bar for the variances and one for the
    differences, so rows compare directly. Runs without `var_real` are left out; None when
    none is left.
    """
    rows = [(label, *_run_pictures(maps)) for label, maps in entries if "var_real" in maps]
    if not rows:
        return None
    variance_max = max(float(np.max(v)) for _, images, _ in rows for v in images.values())
    diff_max = max(
        (float(np.max(np.abs(d))) for _, _, diffs in rows for d in diffs.values()), default=0.0
    )
    limits = {False: (0.0, variance_max or 1.0), True: (-(diff_max or 1.0), diff_max or 1.0)}
    fig, axes = pyplot().subplots(
        len(rows),
        len(_RUN_COLUMNS),
        figsize=(1.45 * len(_RUN_COLUMNS) + 0.3, 1.45 * len(rows) + 1.5),
        dpi=100,
        squeeze=False,
    )
    shown: dict[bool, Any] = {}
    for r, (label, images, diffs) in enumerate(rows):
        for c, (key, title, is_diff) in enumerate(_RUN_COLUMNS):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            image = (diffs if is_diff else images).get(key)
            if image is None:
                ax.axis("off")
                continue
            shown[is_diff] = ax.imshow(
                image,
                cmap="RdBu_r" if is_diff else "viridis",
                vmin=limits[is_diff][0],
                vmax=limits[is_diff][1],
                aspect="equal" if image.shape[0] > 1 else "auto",
                interpolation="nearest",
            )
    _colour_bars(fig, axes, shown)
    return fig


def _run_pictures(
    maps: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One run's pictures (each map folded to 2-D) and real minus each other picture."""
    images = {key: map_image(maps[key])[0] for key, _ in _MAP_COLUMNS if key in maps}
    real = images["var_real"]
    diffs = {
        key: real - image
        for key, image in images.items()
        if key != "var_real" and image.shape == real.shape
    }
    return images, diffs


def _colour_bars(fig: Any, axes: Any, shown: Mapping[bool, Any]) -> None:
    """Horizontal colour bars under their columns: variances, then differences."""
    bottom = 0.85 / fig.get_figheight()  # room for the colour bars, in figure fractions
    fig.tight_layout(rect=(0, bottom, 1, 1))
    for is_diff, label in ((False, "variance"), (True, "real - other (variance lost)")):
        if is_diff not in shown:
            continue
        spans = [c for c, column in enumerate(_RUN_COLUMNS) if column[2] == is_diff]
        left = axes[-1][spans[0]].get_position().x0
        right = axes[-1][spans[-1]].get_position().x1
        bar_axis = fig.add_axes((left, 0.62 * bottom, right - left, 0.12 * bottom))
        bar = fig.colorbar(shown[is_diff], cax=bar_axis, orientation="horizontal")
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
