"""Where the variance goes: by spatial frequency band and by principal direction.

- `spectrum_figure(spectrum)`: left, the fraction of the real variance each set keeps per radial
  frequency band (a blurring decoder keeps the low bands and loses the high ones); right, the
  per-band decomposition of the reconstructions' loss (mse, -bias², cov term, the loss).
- `pca_figure(pca)`: the variance of each set along the top principal directions of the real
  data (log scale), and the fraction kept.
- `kept_curves_figure(curves)`: one kept-variance curve (`Curve`) per run or per method, each in
  its colour, marker and line style (the study page draws runs in their family's colour and
  marker, like the study figure, and each data set in its line style, `DATASET_LINESTYLES`).
- `plot_spectrum(report, path)`: the spectrum (and PCA) figures of a measure report saved beside
  `path` (`NAME-spectrum.png`, `NAME-pca.png`); returns the paths written.

Figures read the plain `spectrum` / `pca` objects of a report (dicts), nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from varloss._words import share
from varloss.figures.base import pyplot, save_figure

__all__ = [
    "DATASET_LINESTYLES",
    "Curve",
    "high_frequency_phrase",
    "high_frequency_split",
    "kept_curves_figure",
    "pca_figure",
    "plot_spectrum",
    "spectrum_figure",
]

_SET_STYLES = {"reconstructed": ("#1f5fbf", "-", "o"), "generated": ("#d62728", "--", "s")}
_TERM_COLOURS = {"mse": "#4c72b0", "minus_bias2": "#dd8452", "cov_term": "#55a868"}
_X_LABEL = "radial spatial frequency (cycles / pixel)"


def _centres(spectrum: Mapping[str, Any]) -> np.ndarray:
    return np.array([(band["lo"] + band["hi"]) / 2 for band in spectrum["bands"]])


def _column(spectrum: Mapping[str, Any], key: str) -> np.ndarray | None:
    values = [band.get(key) for band in spectrum["bands"]]
    if all(value is None for value in values):
        return None
    return np.array([np.nan if value is None else value for value in values], dtype=np.float64)


def _half_nyquist(axis: Any, spectrum: Mapping[str, Any]) -> None:
    radius = spectrum.get("high_frequency_radius", 0.25)
    axis.axvline(radius, color="#888888", linestyle=":", linewidth=1.0)
    axis.text(radius, 1.0, " half Nyquist", transform=axis.get_xaxis_transform(), fontsize=7,
              color="#666666", va="top")  # fmt: skip


def high_frequency_split(spectrum: Mapping[str, Any], kind: str) -> tuple[float, float] | None:
    """(variance loss above the high-frequency radius, total variance loss) of `kind`
    ("reconstructed" or "generated"), or None when the spectrum does not say. The total is the
    spectrum's `totals` (or the sum over its bands); the part is `high_frequency_share` of it."""
    fraction = (spectrum.get("high_frequency_share") or {}).get(kind)
    total = (spectrum.get("totals") or {}).get(f"variance_loss_{kind}")
    if total is None:
        values = [band.get(f"variance_loss_{kind}") for band in spectrum.get("bands") or []]
        total = sum(values) if values and None not in values else None
    if fraction is None or total is None or not np.isfinite(fraction * total):
        return None
    return float(fraction) * float(total), float(total)


def high_frequency_phrase(spectrum: Mapping[str, Any], kind: str, subject: str) -> str | None:
    """Where `subject` (e.g. "the generated images") loses its variance, in words: the share of
    the variance loss (or of the gain, when the set has more variance than the real images)
    above the high-frequency radius when it is a share (0 to 100%); otherwise what happened on
    each side of the radius (e.g. a loss overall but a gain above it). None without the numbers."""
    split = high_frequency_split(spectrum, kind)
    if split is None:
        return None
    high, total = split
    radius = spectrum.get("high_frequency_radius", 0.25)
    above = f"above {radius} cycles/pixel"
    part = share(high, total)
    if part is not None:
        noun = "variance loss" if total > 0 else "variance gain"
        owner = subject + ("'" if subject.endswith("s") else "'s")
        return f"{part} of {owner} {noun} lies {above}"
    overall = f"{'lose' if total > 0 else 'gain'} {abs(total):.3g} of variance overall"
    if high * total < 0:  # opposite signs: the high bands went the other way
        return f"{subject} {overall} but {'lose' if high > 0 else 'gain'} {abs(high):.3g} {above}"
    # same sign, the part larger than the whole: the low bands went the other way
    below = total - high
    return (
        f"{subject} {'lose' if high > 0 else 'gain'} {abs(high):.3g} of variance {above}, more "
        f"than overall ({abs(total):.3g}): below it they {'gain' if below < 0 else 'lose'} "
        f"{abs(below):.3g}"
    )


def _high_frequency_note(spectrum: Mapping[str, Any], kind: str) -> str:
    """The legend's short note: the share of the set's loss above the radius, or its sign."""
    split = high_frequency_split(spectrum, kind)
    if split is None:
        return ""
    high, total = split
    radius = spectrum.get("high_frequency_radius", 0.25)
    part = share(high, total)
    if part is not None:
        return f" ({part} of its {'loss' if total > 0 else 'gain'} above {radius})"
    return f" ({'gains' if high < 0 else 'loses'} variance above {radius})"


def _kept_panel(axis: Any, spectrum: Mapping[str, Any]) -> None:
    centres = _centres(spectrum)
    for kind, (colour, style, marker) in _SET_STYLES.items():
        kept = _column(spectrum, f"kept_{kind}")
        if kept is None:
            continue
        note = _high_frequency_note(spectrum, kind)
        axis.plot(centres, kept, style, color=colour, marker=marker, label=f"{kind}{note}")
    axis.axhline(1.0, color="black", linewidth=0.8)
    _half_nyquist(axis, spectrum)
    axis.set_xlabel(_X_LABEL)
    axis.set_ylabel("variance kept: var(set) / var(real), per band")
    axis.set_title("Variance kept per frequency band")
    axis.set_ylim(bottom=0)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)


def _decomposition_panel(axis: Any, spectrum: Mapping[str, Any]) -> bool:
    """Grouped bars mse, -bias², cov term per band with the loss as a tick; False if no pairs."""
    mse = _column(spectrum, "mse")
    if mse is None:
        return False
    centres = _centres(spectrum)
    width = (centres[1] - centres[0]) / 4 if len(centres) > 1 else 0.1
    terms = {
        "mse": mse,
        "minus_bias2": -_column(spectrum, "bias2"),
        "cov_term": _column(spectrum, "cov_term"),
    }
    labels = {"mse": "mse", "minus_bias2": "−bias²", "cov_term": "2·cov(x̂, x − x̂)"}
    for offset, (key, values) in zip((-1, 0, 1), terms.items(), strict=True):
        axis.bar(centres + offset * width, values, width, color=_TERM_COLOURS[key],
                 label=labels[key])  # fmt: skip
    loss = _column(spectrum, "variance_loss_reconstructed")
    axis.scatter(centres, loss, marker="_", s=400, color="black", linewidths=2.2, zorder=3,
                 label="variance loss (reconstructed)")  # fmt: skip
    generated = _column(spectrum, "variance_loss_generated")
    if generated is not None:
        axis.scatter(centres, generated, marker="x", color="#d62728", zorder=3,
                     label="variance loss (generated)")  # fmt: skip
    axis.axhline(0.0, color="black", linewidth=0.8)
    _half_nyquist(axis, spectrum)
    axis.set_xlabel(_X_LABEL)
    axis.set_ylabel("share of the per-pixel total (units²)")
    axis.set_title("Variance loss = mse − bias² + cov term, per band")
    axis.grid(True, alpha=0.3, axis="y")
    axis.legend(fontsize=8)
    return True


def spectrum_figure(spectrum: Mapping[str, Any], *, title: str | None = None) -> Any:
    """The kept variance per band and, with reconstructions, the per-band decomposition."""
    plt = pyplot()
    has_pairs = _column(spectrum, "mse") is not None
    fig, axes = plt.subplots(1, 2 if has_pairs else 1, figsize=(12 if has_pairs else 6.5, 4.4))
    axes = np.atleast_1d(axes)
    _kept_panel(axes[0], spectrum)
    if has_pairs:
        _decomposition_panel(axes[1], spectrum)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def pca_figure(pca: Mapping[str, Any], *, title: str | None = None) -> Any:
    """Variance along the top principal directions of the real data, per set, and kept."""
    plt = pyplot()
    components = pca["components"]
    index = np.array([c["index"] for c in components])
    fig, (spread, kept) = plt.subplots(1, 2, figsize=(12, 4.2))
    spread.semilogy(index, [c["var_real"] for c in components], "k-", marker=".", label="real")
    for kind, (colour, style, marker) in _SET_STYLES.items():
        if components[0].get(f"var_{kind}") is None:
            continue
        values = np.array([c[f"var_{kind}"] for c in components], dtype=np.float64)
        spread.semilogy(index, np.clip(values, 1e-300, None), style, color=colour,
                        marker=marker, markersize=3, label=kind)  # fmt: skip
        kept.plot(index, [c[f"kept_{kind}"] for c in components], style, color=colour,
                  marker=marker, markersize=3, label=kind)  # fmt: skip
    explained = pca.get("explained_real")
    note = f" (top {pca['k']}: {explained:.0%} of the real variance)" if explained else ""
    spread.set_title("Variance along the real data's principal directions" + note, fontsize=9)
    spread.set_xlabel("principal direction (largest real variance first)")
    spread.set_ylabel("variance along it (/ pixels)")
    kept.axhline(1.0, color="black", linewidth=0.8)
    kept.set_title("Variance kept per direction")
    kept.set_xlabel("principal direction")
    kept.set_ylabel("var(set) / var(real)")
    for axis in (spread, kept):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class Curve:
    """One kept-variance curve: its legend label, colour, marker and line style, its spectrum."""

    label: str
    colour: str
    spectrum: Mapping[str, Any]
    marker: str = "."
    linestyle: Any = "-"
    edge: str | None = None  # the markers' edge colour (dark for a light colour), else `colour`


# Line styles that tell data sets apart in one panel (solid, dashed, dotted, dash-dot, ...).
DATASET_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))


def kept_curves_figure(
    curves: Sequence[Curve],
    *,
    kinds: Sequence[str] = ("reconstructed", "generated"),
    title: str | None = None,
) -> Any:
    """One panel per kind (reconstructed, generated): one curve per `Curve`, each in its own
    colour, marker and line style (a label is listed once in the legend)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.2 * len(kinds), 4.4), squeeze=False)
    for axis, kind in zip(axes[0], kinds, strict=True):
        seen: set[str] = set()
        for curve in curves:
            kept = _column(curve.spectrum, f"kept_{kind}")
            if kept is None:
                continue
            axis.plot(_centres(curve.spectrum), kept, color=curve.colour, marker=curve.marker,
                      markersize=6, markeredgecolor=curve.edge or curve.colour,
                      markeredgewidth=0.8, linestyle=curve.linestyle, linewidth=1.4, alpha=0.85,
                      label=None if curve.label in seen else curve.label)  # fmt: skip
            seen.add(curve.label)
        axis.axhline(1.0, color="black", linewidth=0.8)
        if curves:
            _half_nyquist(axis, curves[0].spectrum)
        axis.set_xlabel(_X_LABEL)
        axis.set_ylabel("variance kept per band")
        axis.set_title(f"{kind.capitalize()}: variance kept per frequency band")
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        if seen:
            axis.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_spectrum(report: Any, path: str | Path) -> list[Path]:
    """Save a report's spectrum and PCA figures beside `path` (NAME-spectrum.png, NAME-pca.png,
    with `path`'s suffix); returns the paths written (none when neither was measured)."""
    path = Path(path)
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    written = []
    for key, draw in (("spectrum", spectrum_figure), ("pca", pca_figure)):
        if data.get(key):
            target = path.with_name(f"{path.stem}-{key}{path.suffix}")
            written.append(save_figure(draw(data[key]), target))
    return written
