"""The study's figure: variance loss against MSE per run, and its decomposition per run.

- `plot_study(rows, fit, path)`: left, one scatter panel per data set, each family in its own
  colour and marker (`varloss.figures.style`; filled markers = reconstructions, hollow =
  generated samples; half-filled = reconstructions of `sample`-protocol runs when a study mixes
  protocols; runs that differ only in their seed are one marker with error bars of ± one
  standard deviation) with y = x and the fitted lines; right, var(x) - var(x_hat) = mse - bias²
  + cov term per run as grouped bars.
- `family_colour`, `FAMILY_COLOURS`, `FAMILY_LABELS`: re-exported from `varloss.figures.style`,
  the one home of how a family looks.

`rows` are results.csv rows (`varloss.records.ResultsRow`) and `fit` is fit.json
(`varloss.records.FitRecord`); the figure reads nothing else, so the study pipeline and the HTML
report draw the same picture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from varloss._io import atomic_path
from varloss.figures.base import pyplot
from varloss.figures.style import (
    FAMILY_COLOURS,
    FAMILY_LABELS,
    FamilyStyle,
    family_colour,
    family_style,
)
from varloss.records import FitRecord, ResultsRow
from varloss.variance.protocol import Reconstruction

__all__ = ["FAMILY_COLOURS", "FAMILY_LABELS", "family_colour", "plot_study"]

# (results column, filled marker?) for the two points of each run
_POINT_KINDS = (("variance_loss_reconstructed", True), ("variance_loss_generated", False))


def _nan_if_missing(value: float | None) -> float:
    """A metric for plotting: NaN where the run did not record it (left out of the plot)."""
    return math.nan if value is None else value


def plot_study(
    rows: Sequence[ResultsRow],
    fit: FitRecord,
    path: str | Path,
    *,
    title: str | None = None,
    quick: bool = False,
) -> Path:
    """The seed's figure: variance loss against MSE per run (left) and why (right).

    Left: one panel per data set (one panel when the study has one data set); one colour and
    one marker per family, filled markers = reconstructions, hollow = generated samples
    (half-filled: `sample` reconstructions in a study that mixes the protocols; error bars:
    ± one std across the seeds of a point), the line y = x and the fitted line(s) of all runs
    with slope, its 95% interval and R². Right: the
    per-run decomposition var(x) - var(x_hat) = mse - bias² + cov term as grouped bars, with
    the variance loss as a black tick. Writes `path` (PNG) and the same name with `.svg`.
    """
    plt = pyplot()
    path = Path(path)
    rows = list(rows)
    datasets = sorted({r.dataset for r in rows}) or ["–"]
    # one scatter panel per data set (their MSEs differ in scale), stacked beside the bars
    height = max(5.0, 1.2 + 0.32 * len(rows), 4.0 * len(datasets) if len(datasets) > 1 else 0)
    fig = plt.figure(figsize=(14, height))
    grid = fig.add_gridspec(len(datasets), 2, width_ratios=[1.1, 1.0])
    scatters = [fig.add_subplot(grid[index, 0]) for index in range(len(datasets))]
    bars = fig.add_subplot(grid[:, 1])
    handles: list[Any] = []
    for scatter, dataset in zip(scatters, datasets, strict=True):
        subset = [row for row in rows if row.dataset == dataset]
        points = _scatter_runs(scatter, subset, protocols_mixed=len(_protocols(rows)) > 1)
        # every panel draws y = x and the fitted lines (fitted over all runs); one legend entry
        drawn = _fit_lines(scatter, fit, points)
        handles = handles or drawn
        scatter.set_ylabel("variance loss var(x) − var(x̂)\n(mean per pixel; units²)")
        scatter.grid(True, alpha=0.3)
        scatter.set_title(
            f"Variance loss against MSE: {dataset}" if len(datasets) > 1 else
            "Variance loss against MSE"
        )  # fmt: skip
    scatters[-1].set_xlabel("reconstruction MSE (mean per pixel; pixel values in [0, 1], units²)")
    handles += _legend_handles(plt, rows)
    # below the axes: inside, a dozen entries would cover points wherever they sit
    scatters[-1].legend(
        handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3
    )
    _plot_decomposition(bars, rows)
    heading = title or "Variance loss across VAE architectures"
    if quick:
        heading += " — QUICK version (small subsets, few epochs; not the paper study)"
    fig.suptitle(heading, fontsize=12)
    fig.tight_layout()
    _save_png_and_svg(plt, fig, path)
    return path


def _scatter_runs(
    axis: Any, rows: Sequence[ResultsRow], *, protocols_mixed: bool
) -> list[tuple[float, float]]:
    """Two points per point of the study (reconstructions filled, generated hollow), in the
    family's colour and marker: runs that differ only in their seed are one marker at their
    mean with error bars of ± one standard deviation across the seeds. When the study mixes
    reconstruction protocols, reconstructions of `sample` runs are half-filled. Returns every
    run's (x, y), for the axes' range."""
    drawn: list[tuple[float, float]] = []
    for group in _points(rows).values():
        first = group[0]
        style = family_style(first.family)
        half = protocols_mixed and first.reconstruction is Reconstruction.SAMPLE
        for key, filled in _POINT_KINDS:
            pairs = [(_nan_if_missing(r.mse), _nan_if_missing(getattr(r, key))) for r in group]
            pairs = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
            if not pairs:
                continue
            drawn += pairs
            xs, ys = np.array(pairs, dtype=np.float64).T
            spread = (xs.std(ddof=1), ys.std(ddof=1)) if len(pairs) > 1 else None
            _draw_point(axis, (xs.mean(), ys.mean()), spread, style, filled, half)
    return drawn


def _draw_point(
    axis: Any,
    centre: tuple[float, float],
    spread: tuple[float, float] | None,
    style: FamilyStyle,
    filled: bool,
    half: bool,
) -> None:
    """One marker (full, half-filled or hollow) with its error bars when `spread` is given."""
    colour, edge, marker = style.colour, style.edge, style.marker
    x, y = centre
    if spread is not None:
        axis.errorbar(
            [x], [y], xerr=[spread[0]], yerr=[spread[1]], fmt="none", ecolor=colour,
            elinewidth=1.1, capsize=2.5, alpha=0.9, zorder=3,
        )  # fmt: skip
    if not filled and style.text_colour != colour:
        # a light (yellow) ring alone vanishes on white: outline it in a dark colour
        axis.plot(
            [x], [y], marker=marker, markersize=7.75, fillstyle="none", markeredgecolor=edge,
            markeredgewidth=3.4, linestyle="none", zorder=3,
        )  # fmt: skip
    axis.plot(
        [x], [y], marker=marker, markersize=8.4 if filled else 7.75, linestyle="none",
        fillstyle=("left" if half else "full") if filled else "none",
        markerfacecolor=colour, markerfacecoloralt="white",
        markeredgecolor=edge if filled else colour, markeredgewidth=1.0 if filled else 1.8,
        zorder=4,
    )  # fmt: skip


def _protocols(rows: Sequence[ResultsRow]) -> list[str]:
    return sorted({str(row.reconstruction) for row in rows})


def _points(rows: Sequence[ResultsRow]) -> dict[str, list[ResultsRow]]:
    """Runs grouped by point (`ResultsRow.point`: runs that differ only in their seed)."""
    groups: dict[str, list[ResultsRow]] = {}
    for row in rows:
        groups.setdefault(row.point, []).append(row)
    return groups


def _fit_lines(axis: Any, fit: FitRecord, points: Sequence[tuple[float, float]]) -> list[Any]:
    """The line y = x and the fitted lines over the points' range; returns their legend handles."""
    if not points:
        return []
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    low = min(0.0, min(xs), min(ys))
    high = max(max(xs), max(ys)) * 1.08 or 1.0
    line = np.linspace(low, high, 50)
    (identity,) = axis.plot(line, line, "k--", linewidth=1.0, label="y = x", zorder=1)
    handles = [identity]
    for key, style, label in (
        ("reconstructed", "-", "fit, reconstructions"),
        ("generated", ":", "fit, generated samples"),
    ):
        values = fit.line(key)
        if values.slope is None or values.intercept is None:
            continue
        r2_text = f"{values.r2:.3f}" if values.r2 is not None else "n/a"
        interval = values.slope_ci95
        ci = f" [95% {interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        (fitted,) = axis.plot(
            line,
            values.slope * line + values.intercept,
            style,
            color="#444444",
            linewidth=1.6,
            label=f"{label}: slope {values.slope:.3f}{ci}, R² {r2_text} (n={values.n})",
            zorder=2,
        )
        handles.append(fitted)
    axis.set_xlim(low, high)
    return handles


def _legend_handles(plt: Any, rows: Sequence[ResultsRow]) -> list[Any]:
    """Legend entries: one per family (seed order first) in its colour and marker, then what
    filled, half-filled and hollow mean, and the error bars."""

    def entry(label: str, **style: Any) -> Any:
        style = {"marker": "o", "markerfacecolor": "#999999", "markeredgecolor": "#333333", **style}
        return plt.Line2D([], [], linestyle="none", markersize=8, label=label, **style)

    present = {r.family for r in rows}
    families = [f for f in FAMILY_COLOURS if f in present]
    families += sorted(present - set(families))
    handles = []
    for family in families:
        style = family_style(family)
        handles.append(
            entry(
                style.label,
                marker=style.marker,
                markerfacecolor=style.colour,
                markeredgecolor=style.edge,
            )
        )
    protocols = _protocols(rows)
    if len(protocols) > 1:  # the study mixes them: half-filled = sampled reconstructions
        handles.append(entry("filled: reconstructions, mean protocol"))
        handles.append(
            entry(
                "half-filled: reconstructions, sample protocol",
                fillstyle="left",
                markerfacecoloralt="white",
            )
        )
    else:
        protocol = protocols[0] if protocols else Reconstruction.MEAN.value
        handles.append(entry(f"filled: reconstructions ({protocol} protocol)"))
    handles.append(entry("hollow: generated samples", markerfacecolor="none", markeredgewidth=1.6))
    if any(len(group) > 1 for group in _points(rows).values()):
        bars = {"color": "#555555", "marker": "|", "markersize": 10, "linewidth": 1.1}
        handles.append(plt.Line2D([], [], label="error bars: ± 1 std across seeds", **bars))
    return handles


def _plot_decomposition(axis: Any, rows: Sequence[ResultsRow]) -> None:
    """Grouped horizontal bars per run: mse, -bias², cov term; their sum is the variance loss."""
    n = len(rows)
    positions = np.arange(n)[::-1]  # first run on top
    parts = (
        ("mse", 1.0, "#8c8c8c", "mse"),
        ("bias2", -1.0, "#9467bd", "− bias²"),
        ("cov_term", 1.0, "#ff7f0e", "covariance term"),
    )
    width = 0.26
    for index, (key, sign, colour, label) in enumerate(parts):
        values = [sign * _nan_if_missing(getattr(r, key)) for r in rows]
        axis.barh(positions + (1 - index) * width, values, height=width, color=colour, label=label)
    losses = [_nan_if_missing(r.variance_loss_reconstructed) for r in rows]
    axis.scatter(
        losses, positions, marker="|", s=260, color="black", linewidths=2.0, zorder=3,
        label="variance loss (= sum)",
    )  # fmt: skip
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_yticks(positions)
    mixed = len(_protocols(rows)) > 1
    axis.set_yticklabels([_run_label(r, mixed) for r in rows], fontsize=7)
    for tick, row in zip(axis.get_yticklabels(), rows, strict=True):
        tick.set_color(family_style(row.family).text_colour)
    axis.set_xlabel("term of var(x) − var(x̂) = mse − bias² + cov term (units²)")
    axis.set_title("Decomposition per run (reconstructions)")
    # below the axis: inside it would cover the bars of the first or last runs
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=4)
    axis.grid(True, axis="x", alpha=0.3)
    if n:
        axis.set_ylim(-0.6, n - 0.4)


def _run_label(row: ResultsRow, protocol: bool = False) -> str:
    """e.g. `dense mnist z2 e40 s0`, and ` sample` when a study mixes protocols (runs that differ
    only in their protocol would otherwise share a label)."""
    label = f"{row.family} {row.dataset} z{row.latent} e{row.epochs} s{row.seed}"
    return f"{label} {row.reconstruction}" if protocol else label


def _save_png_and_svg(plt: Any, fig: Any, path: Path) -> None:
    """`path` as PNG and the same name as SVG (text kept as text: searchable), then close."""
    try:
        with atomic_path(path) as temporary:
            fig.savefig(temporary, format="png", dpi=130, bbox_inches="tight")
        with (
            atomic_path(path.with_suffix(".svg")) as temporary,
            plt.rc_context({"svg.fonttype": "none"}),
        ):
            fig.savefig(temporary, format="svg", bbox_inches="tight")
    finally:
        plt.close(fig)
