"""Labelled rows of images (e.g. real / reconstructed / generated) as one PNG."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from varloss.data import to_images
from varloss.errors import InputError
from varloss.figures.base import pyplot, save_figure


def _as_images(images: Any, name: str) -> np.ndarray:
    """N x C x H x W float32 in [0, 1] through the data layer's one converter; N x D rows are
    shown as square single-channel images."""
    array = to_images(images, name=name).detach().cpu().numpy()
    if array.ndim == 2:
        side = math.isqrt(array.shape[1])
        if side * side != array.shape[1]:
            raise InputError(f"{name}: cannot show {array.shape[1]} features as a square image.")
        array = array.reshape(-1, 1, side, side)
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
        array = _as_images(images, name=f"images of row {label!r}")
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
