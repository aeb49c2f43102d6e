"""Matplotlib figures shared by the CLI, the trainer, the remedies and the report.

- `variance_maps_figure(maps)`: per-pixel variance of real, reconstructed and generated sets on one
  colour scale, then where variance is lost (real minus each, diverging colours), with colour bars.
- `plot_variance_maps(report, path)`: the same figure saved as a PNG.
- `save_image_grid(rows, path)`: labelled rows of images (e.g. real / reconstructed / generated).

Everything is written atomically (`varloss._io.atomic_path`); the Agg backend is used so that no
display is needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from varloss._io import atomic_path

VARIANCE_MAP_KEYS = (
    ("var_real", "real"),
    ("var_reconstructed", "reconstructed"),
    ("var_generated", "generated"),
)


def pyplot():
    """matplotlib.pyplot on the Agg backend (headless)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


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


def save_figure(fig: Any, path: str | Path, *, dpi: int | None = None) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi or fig.dpi)
    finally:
        pyplot().close(fig)
    return path


def plot_variance_maps(report: Any, path: str | Path) -> Path:
    """Save the variance-maps figure of a `VarianceReport` (or a dict of maps) as an image file."""
    maps = report.maps if hasattr(report, "maps") else report
    return save_figure(variance_maps_figure(maps), path)


def _as_images(images: Any) -> np.ndarray:
    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3:  # N x H x W
        array = array[:, None]
    if array.ndim == 2:  # N x D: square single-channel images when possible
        side = math.isqrt(array.shape[1])
        if side * side != array.shape[1]:
            raise ValueError(f"cannot show {array.shape[1]} features as a square image")
        array = array.reshape(-1, 1, side, side)
    if array.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {array.shape}")
    return np.clip(array, 0.0, 1.0)


def save_image_grid(
    rows: Mapping[str, Any],
    path: str | Path,
    *,
    per_row: int | None = None,
    title: str | None = None,
) -> Path:
    """Labelled rows of images in [0, 1] (N x C x H x W, N x H x W or N x D) as one PNG.

    `rows` maps a label ("real", "reconstructed", "generated", ...) to images; each row shows up to
    `per_row` images (all by default), side by side with a 1-pixel white gutter.
    """
    if not rows:
        raise ValueError("no image rows to draw")
    strips = {}
    for label, images in rows.items():
        array = _as_images(images)
        if per_row is not None:
            array = array[:per_row]
        n, c, h, w = array.shape
        gutter = np.ones((c, h, 1), dtype=np.float32)
        pieces = []
        for image in array:
            pieces += [image, gutter]
        strips[label] = np.concatenate(pieces[:-1], axis=2) if pieces else np.ones((c, h, w))
    width = max(strip.shape[2] for strip in strips.values())
    height = max(strip.shape[1] for strip in strips.values())
    plt = pyplot()
    scale = max(1.0, 16.0 / height)  # small images (8 x 8) are drawn larger
    fig_w = max(4.0, min(16.0, width * scale / 40.0))
    fig, axes = plt.subplots(
        len(strips),
        1,
        figsize=(fig_w, len(strips) * (fig_w * height / width + 0.35)),
        dpi=100,
        squeeze=False,
    )
    for ax, (label, strip) in zip(axes[:, 0], strips.items(), strict=True):
        picture = strip.transpose(1, 2, 0)
        if picture.shape[2] == 1:
            ax.imshow(picture[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(picture[..., :3], interpolation="nearest")
        ax.set_title(label, fontsize=9, loc="left")
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=max(100, int(100 * scale)))
