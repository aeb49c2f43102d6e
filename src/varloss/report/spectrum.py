"""The "where in the spectrum" section of the pages: the kept variance per frequency band and the
per-band decomposition (run and measure pages), one curve per method (correct page) or per run
coloured by family (study page), the PCA spectrum when a report has one, and a sentence or two.

Everything is read from report.json objects (`spectrum`, `pca`), drawn by `varloss.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from varloss.errors import InputError
from varloss.figures import FAMILY_LABELS, family_colour
from varloss.figures.spectrum import kept_curves_figure, pca_figure, spectrum_figure
from varloss.records import ResultsRow, read_report
from varloss.report.html import Figure
from varloss.report.plots import figure_uri
from varloss.runs import REPORT_FILE, RUNS_DIR, RunFolder

_METHOD_COLOURS = ("#444444", "#1f5fbf", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_CAPTION = (
    "The orthonormal 2-D Fourier transform splits every number exactly: each band's value is its "
    "share of the total, radial frequency in cycles per pixel (0.5 = Nyquist). A blurring "
    "decoder keeps the low bands and loses the high ones."
)


def _share_sentence(spectrum: Mapping[str, Any], what: str = "") -> list[str]:
    share = spectrum.get("high_frequency_share") or {}
    parts = [
        f"{value:.0%} of the {kind} images' variance loss"
        for kind, value in share.items()
        if value is not None
    ]
    if not parts:
        return []
    radius = spectrum.get("high_frequency_radius", 0.25)
    bands = spectrum.get("bands") or []
    text = f"{what}Above {radius} cycles per pixel (half the Nyquist frequency) lies " + (
        " and ".join(parts)
    )
    kept = [band.get("kept_reconstructed") for band in bands]
    if kept and kept[0] is not None and kept[-1] is not None:
        text += (
            f"; the reconstructions keep {kept[0]:.0%} of the real variance in the lowest band "
            f"and {kept[-1]:.0%} in the highest"
        )
    return [text + "."]


def spectrum_section(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """Figures and sentences of one report's spectrum (and PCA), or None without either."""
    spectrum, pca = report.get("spectrum"), report.get("pca")
    if not spectrum and not pca:
        return None
    figures, sentences = [], []
    if spectrum:
        figures.append(
            Figure(
                title="Variance by spatial frequency",
                data_uri=figure_uri(spectrum_figure(spectrum)),
                caption=_CAPTION,
                alt="variance kept per frequency band and the per-band decomposition",
                scroll_min_width=700,
            )
        )
        sentences += _share_sentence(spectrum)
    if pca:
        figures.append(
            Figure(
                title="Variance along the principal directions of the real data",
                data_uri=figure_uri(pca_figure(pca)),
                caption=f"The top {pca['k']} eigenvectors of the real images' covariance; the "
                "variance of each set along them (v'Σv) and the fraction kept.",
                alt="variance along principal directions",
                scroll_min_width=700,
            )
        )
    return {"figures": figures, "sentences": sentences}


def methods_spectrum_section(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The correct page: the generated samples' kept variance per band, one curve per method."""
    curves = [
        (name, _METHOD_COLOURS[index % len(_METHOD_COLOURS)], row["spectrum"])
        for index, (name, row) in enumerate(methods.items())
        if isinstance(row, Mapping) and row.get("spectrum")
    ]
    latent = _latent_sentences(methods)
    if not curves:
        return {"figures": [], "sentences": latent} if latent else None
    figure = Figure(
        title="Variance kept per frequency band, per method",
        data_uri=figure_uri(kept_curves_figure(curves, kinds=("generated",))),
        caption="Samples of each sampler against the test images: var(samples) / var(real) per "
        "radial frequency band. " + _CAPTION,
        alt="variance kept per frequency band by each sampler",
    )
    sentences = []
    for name, _, spectrum in curves:
        share = (spectrum.get("high_frequency_share") or {}).get("generated")
        if share is not None:
            sentences.append(f"{name}: {share:.0%} of the variance loss above 0.25 cycles/pixel.")
    return {"figures": [figure], "sentences": ([" ".join(sentences)] if sentences else []) + latent}


def _latent_sentences(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The two-stage rows' latent variance loss (`latent` in correct's report.json), once."""
    for row in methods.values():
        latent = row.get("latent") if isinstance(row, Mapping) else None
        if not latent or latent.get("variance_loss_generated") is None:
            continue
        text = (
            f"In latent space the second stage loses variance too: its samples keep "
            f"{latent['var_generated']:.3g} of the codes' variance {latent['var_codes']:.3g} "
            f"(a loss of {latent['variance_loss_generated']:.3g}"
        )
        if latent.get("ratio_generated") is not None:
            text += f", {latent['ratio_generated']:.2f} times the second stage's MSE"
        text += f" {latent['mse']:.3g}); its reconstructions lose "
        text += f"{latent['variance_loss_reconstructed']:.3g}"
        if latent.get("ratio_reconstructed") is not None:
            text += f" ({latent['ratio_reconstructed']:.2f} times the MSE)"
        return [text + ". Renormalising the generated codes gives that variance back."]
    return []


def runs_spectrum_section(directory: Path, rows: Sequence[ResultsRow]) -> dict[str, Any] | None:
    """The study page: one curve per results.csv row (its run's report.json under runs/),
    coloured by family like the main figure."""
    curves = []
    for row in rows:
        family = row.family
        label = FAMILY_LABELS.get(family, family)
        folder = RunFolder(directory / RUNS_DIR / row.run_id)
        if not folder.exists(REPORT_FILE):
            continue
        try:
            spectrum = read_report(folder).spectrum
        except InputError:  # a damaged report.json: the run has no curve, the page still renders
            continue
        if spectrum:
            curves.append((label, family_colour(family), spectrum))
    if not curves:
        return None
    figure = Figure(
        title="Variance kept per frequency band, per run",
        data_uri=figure_uri(kept_curves_figure(curves)),
        caption="One curve per run, coloured by family as in the main figure (left: "
        "reconstructions, right: generated samples). " + _CAPTION,
        alt="variance kept per frequency band for every run of the study",
        scroll_min_width=700,
    )
    return {"figures": [figure], "sentences": []}
