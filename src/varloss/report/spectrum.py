"""The "where in the spectrum" section of the pages: the kept variance per frequency band and the
per-band decomposition (run and measure pages), one curve per method (correct page) or per run
coloured by family (study page), the PCA spectrum when a report has one, and a sentence or two.

Everything is read from report.json objects (`spectrum`, `pca`), drawn by `varloss.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from varloss._words import count, plural, share
from varloss.errors import InputError
from varloss.figures import family_style
from varloss.figures.spectrum import (
    DATASET_LINESTYLES,
    Curve,
    high_frequency_phrase,
    kept_curves_figure,
    pca_figure,
    spectrum_figure,
)
from varloss.records import ResultsRow, read_report
from varloss.report.html import Figure
from varloss.report.plots import figure_uri
from varloss.runs import REPORT_FILE, RUNS_DIR, RunFolder

_METHOD_COLOURS = ("#444444", "#1f5fbf", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_METHOD_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_CAPTION = (
    "The orthonormal 2-D Fourier transform splits every number exactly: each band's value is its "
    "share of the total, radial frequency in cycles per pixel (0.5 = Nyquist). A blurring "
    "decoder keeps the low bands and loses the high ones."
)


def _share_sentence(spectrum: Mapping[str, Any]) -> list[str]:
    """Where the loss lies (above or below half the Nyquist frequency) for each set, and how
    much of the real variance the reconstructions have in the lowest and the highest band."""
    sentences = [
        _capitalised(phrase) + "."
        for phrase in (
            high_frequency_phrase(spectrum, kind, f"the {kind} images")
            for kind in ("reconstructed", "generated")
        )
        if phrase is not None
    ]
    if not sentences:
        return []
    kept = [band.get("kept_reconstructed") for band in spectrum.get("bands") or []]
    if kept and kept[0] is not None and kept[-1] is not None:
        sentences.append(
            f"In the lowest frequency band the reconstructions {_kept_words(kept[0])}; in the "
            f"highest they {_kept_words(kept[-1])}."
        )
    return sentences


def _kept_words(kept: float) -> str:
    """var(set) / var(real) of one band in words: a share up to 100%, else a multiple."""
    part = share(kept, 1.0)
    if part is not None:
        return f"keep {part} of the real variance"
    if kept < 0:  # not a variance ratio any more (a damaged or hand-made report): say it plainly
        return f"have a variance ratio of {kept:.3g} to the real images"
    return f"have {kept:.2f} times the real variance"


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


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
                caption=f"The top {count(int(pca['k']), 'eigenvector')} of the real images' "
                "covariance; the variance of each set along them (v'Σv) and the fraction kept.",
                alt="variance along principal directions",
                scroll_min_width=700,
            )
        )
    return {"figures": figures, "sentences": sentences}


def methods_spectrum_section(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The correct page: the generated samples' kept variance per band, one curve per method."""
    curves = [
        Curve(
            str(name),
            _METHOD_COLOURS[index % len(_METHOD_COLOURS)],
            row["spectrum"],
            marker=_METHOD_MARKERS[index % len(_METHOD_MARKERS)],
        )
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
    for curve in curves:
        phrase = high_frequency_phrase(curve.spectrum, "generated", f"the {curve.label} samples")
        if phrase is not None:
            sentences.append(_capitalised(phrase) + ".")
    return {"figures": [figure], "sentences": ([" ".join(sentences)] if sentences else []) + latent}


# correct's `latent` keys that identify one second stage's numbers (rows sharing them show once).
_LATENT_KEYS = (
    "var_codes",
    "var_reconstructed",
    "var_generated",
    "variance_loss_reconstructed",
    "variance_loss_generated",
    "mse",
)


def _latent_sentences(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The two-stage rows' latent variance loss (`latent` in correct's report.json): one
    sentence per distinct second stage, naming the rows that share it."""
    blocks: dict[tuple[Any, ...], tuple[Mapping[str, Any], list[str], list[str]]] = {}
    for name, row in methods.items():
        latent = row.get("latent") if isinstance(row, Mapping) else None
        if not isinstance(latent, Mapping) or latent.get("variance_loss_generated") is None:
            continue
        key = tuple(latent.get(column) for column in _LATENT_KEYS)
        _, names, renormalizing = blocks.setdefault(key, (latent, [], []))
        names.append(str(name))
        if latent.get("renormalized"):
            renormalizing.append(str(name))
    return [latent_sentence(*block) for block in blocks.values()]


def latent_sentence(
    latent: Mapping[str, Any], names: Sequence[str], renormalizing: Sequence[str] = ()
) -> str:
    """One second stage's variance in latent space, in words that follow the numbers' signs: a
    loss is a share of the codes' variance and a multiple of the second stage's MSE only where
    it is a loss and the MSE is positive; a gain is called a gain. `renormalizing`: the rows
    that renormalise their generated codes (the others sample them as they are)."""
    var_codes = float(latent["var_codes"])
    rows = ", ".join(names)
    text = (
        f"In latent space (the first-stage codes of the test images, standardised; variance "
        f"{var_codes:.3g}; the same second stage for {plural('row', len(names))} {rows}), "
        f"the second stage's samples {_latent_change(latent, 'generated', var_codes)}"
    )
    if latent.get("variance_loss_reconstructed") is not None:
        text += f"; its reconstructions {_latent_change(latent, 'reconstructed', var_codes)}"
    loss = float(latent["variance_loss_generated"])
    which = f" ({', '.join(renormalizing)})"
    if renormalizing and loss > 0:
        text += f". Renormalising the generated codes{which} gives that variance back"
    elif renormalizing and loss < 0:
        text += f". Renormalising the generated codes{which} scales their variance back down"
    return text + "."


def _latent_change(latent: Mapping[str, Any], kind: str, var_codes: float) -> str:
    """`kind`'s variance against the codes': kept (a share) and lost, or gained."""
    var_set, loss = float(latent[f"var_{kind}"]), float(latent[f"variance_loss_{kind}"])
    mse = latent.get("mse")
    if loss == 0:
        return f"keep all of the codes' variance ({var_set:.3g})"
    if loss < 0:
        return (
            f"have more variance than the codes ({var_set:.3g}): they gain {-loss:.3g} "
            "instead of losing variance"
        )
    kept = share(var_set, var_codes)
    text = f"keep {kept} of it ({var_set:.3g})" if kept else f"have variance {var_set:.3g}"
    text += f": a loss of {loss:.3g}"
    ratio = latent.get(f"ratio_{kind}")
    if ratio is not None and mse is not None and mse > 0:
        text += f", {ratio:.2f} times the second stage's MSE ({mse:.3g})"
    return text


def runs_spectrum_section(directory: Path, rows: Sequence[ResultsRow]) -> dict[str, Any] | None:
    """The study page: one curve per results.csv row (its run's report.json under runs/), in
    its family's colour and marker as in the main figure, one line style per data set."""
    datasets = sorted({row.dataset for row in rows})
    linestyles = {
        dataset: DATASET_LINESTYLES[index % len(DATASET_LINESTYLES)]
        for index, dataset in enumerate(datasets)
    }
    curves = []
    for row in rows:
        style, dataset = family_style(row.family), row.dataset
        folder = RunFolder(directory / RUNS_DIR / row.run_id)
        if not folder.exists(REPORT_FILE):
            continue
        try:
            spectrum = read_report(folder).spectrum
        except InputError:  # a damaged report.json: the run has no curve, the page still renders
            continue
        if spectrum:
            label = f"{style.label}, {dataset}" if len(datasets) > 1 else style.label
            linestyle = linestyles[dataset]
            curves.append(Curve(label, style.colour, spectrum, style.marker, linestyle, style.edge))
    if not curves:
        return None
    figure = Figure(
        title="Variance kept per frequency band, per run",
        data_uri=figure_uri(kept_curves_figure(curves)),
        caption="One curve per run, in its family's colour and marker as in the main figure, "
        "one line style per data set (left: reconstructions, right: generated samples). "
        + _CAPTION,
        alt="variance kept per frequency band for every run of the study",
        scroll_min_width=700,
    )
    return {"figures": [figure], "sentences": []}
