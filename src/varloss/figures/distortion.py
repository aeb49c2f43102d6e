"""The distortion-perception curves of the remedies that act on decoded images (`correct --curve`).

`distortion_perception_figure(curves, mse_before)`: per method, its map's strength swept from 0
(identity) to 1 (full map); left, the reconstructions' MSE against the samples' `pixel_frechet`
(lower is better on both axes), right, against the samples' variance kept (1 = the real
variance). The dotted line is Blau & Michaeli's bound: at perfect perception the MSE need not
exceed twice the MMSE, here twice the decoder's own reconstruction MSE (an upper bound of the MMSE).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from varloss.figures.base import pyplot

__all__ = ["distortion_perception_figure"]

_COLOURS = ("#1f5fbf", "#d62728", "#2ca02c", "#9467bd", "#8c564b")


def distortion_perception_figure(
    curves: Mapping[str, Sequence[Mapping[str, Any]]], mse_before: float
) -> Any:
    """A two-panel figure; `curves` maps a method to its points (strength, reconstruction_mse,
    pixel_frechet, variance_kept), `mse_before` is the reconstructions' MSE before any map."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for index, (name, points) in enumerate(curves.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        mse = [point["reconstruction_mse"] for point in points]
        for axis, key in zip(axes, ("pixel_frechet", "variance_kept"), strict=True):
            values = [point[key] for point in points]
            axis.plot(values, mse, "-o", color=colour, label=name, markersize=4)
            axis.annotate(
                "full", (values[-1], mse[-1]), fontsize=7, color=colour,
                textcoords="offset points", xytext=(4, 2),
            )  # fmt: skip
    for axis in axes:
        axis.axhline(2 * mse_before, color="#444444", linestyle=":", linewidth=1.0)
        axis.text(0.01, 2 * mse_before, " 2 x MMSE bound (Blau & Michaeli)", fontsize=7,
                  transform=axis.get_yaxis_transform(), va="bottom", color="#444444")  # fmt: skip
        axis.axhline(mse_before, color="#999999", linewidth=0.8)
        axis.set_ylabel("reconstruction MSE after the map")
        axis.grid(alpha=0.3)
    axes[0].set_xlabel("pixel Fréchet distance of the samples (top-K PCA basis)")
    axes[1].set_xlabel("variance kept by the samples (1 = real)")
    axes[1].axvline(1.0, color="#999999", linewidth=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle("Distortion-perception: each map from identity (strength 0) to full (1)")
    return fig
