"""Per-pixel variance maps: real, reconstructed and generated on one colour scale, then where
variance is lost (real minus each, diverging colours).

- `variance_maps_figure(maps)`: the figure (a matplotlib Figure), from a dict of maps.
- `plot_variance_maps(report, path)`: the same figure saved as an image file.
- `map_image`, `variance_map_panels`: the 2-D pictures the figure (and the HTML report) show.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from varloss.figures.base import pyplot, save_figure

VARIANCE_MAP_KEYS = (
    ("var_real", "real"),
    ("var_reconstructed", "reconstructed"),
    ("var_generated", "generated"),
)


def map_image(array: Any) -> tuple[np.ndarray, str]:
    """A 2-D picture of a per-feature map (C x H x W, H x W or D) and how it was folded."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 3:
        if array.shape[0] == 1:
            return array[0], ""
        return array.mean(axis=0), f"mean over {array.shape[0]} channels"
    if array.ndim == 2:
        return array, ""
    flat = array.reshape(-1)
    side = math.isqrt(flat.size)
    if side * side == flat.size:
        return flat.reshape(side, side), ""
    return flat.reshape(1, -1), "features in one row"


def variance_map_panels(
    maps: Mapping[str, Any],
) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]], set[str]]:
    """(variance panels, difference panels real - other, notes on folding) from a maps dict."""
    panels: list[tuple[str, np.ndarray]] = []
    folds: set[str] = set()
    for key, label in VARIANCE_MAP_KEYS:
        if maps.get(key) is not None:
            image, fold = map_image(maps[key])
            if fold:
                folds.add(fold)
            panels.append((f"variance, {label}", image))
    diffs: list[tuple[str, np.ndarray]] = []
    if panels and panels[0][0] == "variance, real":
        real = panels[0][1]
        for label, image in panels[1:]:
            if image.shape == real.shape:
                diffs.append((f"real - {label.removeprefix('variance, ')}", real - image))
    return panels, diffs, folds


def variance_maps_figure(maps: Mapping[str, Any], *, columns: int | None = None):
    """Variance maps (shared scale, viridis) and real-minus-other maps (RdBu, red = lost).

    With `columns=None` the variances fill the first row and the differences the second; with a
    number of columns the panels flow into that many columns (narrow screens).
    """
    panels, diffs, _ = variance_map_panels(maps)
    if not panels:
        raise ValueError(
            "no variance maps to draw (expected var_real, var_reconstructed or var_generated)"
        )
    if columns is None:
        layout = [panels, diffs] if diffs else [panels]
    else:
        flat = panels + diffs
        layout = [flat[i : i + columns] for i in range(0, len(flat), columns)]
    variance_max = max(float(np.max(image)) for _, image in panels) or 1.0
    diff_max = max((float(np.max(np.abs(d))) for _, d in diffs), default=1.0) or 1.0
    diff_names = {label for label, _ in diffs}
    plt = pyplot()
    width = max(len(row) for row in layout)
    fig, axes = plt.subplots(
        len(layout), width, figsize=(3.3 * width, 3.0 * len(layout)), dpi=100, squeeze=False
    )
    for r, row in enumerate(layout):
        for c in range(width):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            label, image = row[c]
            is_diff = label in diff_names
            shown = ax.imshow(
                image,
                cmap="RdBu_r" if is_diff else "viridis",
                vmin=-diff_max if is_diff else 0.0,
                vmax=diff_max if is_diff else variance_max,
                aspect="equal" if image.shape[0] > 1 else "auto",
                interpolation="nearest",
            )
            ax.set_title(f"{label}\nmean {image.mean():.4g}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def plot_variance_maps(report: Any, path: str | Path) -> Path:
    """Save the variance-maps figure of a `VarianceReport` (or a dict of maps) as an image file."""
    maps = report.maps if hasattr(report, "maps") else report
    return save_figure(variance_maps_figure(maps), path)
