"""The page of a `varloss study` folder: what the study writes (results.csv, fit.json,
figure.png, study.yaml) and each run's samples.png and maps.npz under runs/."""

from __future__ import annotations

import shlex
from importlib import resources
from pathlib import Path
from typing import Any

from varloss._words import count, plural
from varloss.records import FitRecord, ResultsRow, read_fit, read_results
from varloss.report.files import embed, read_maps
from varloss.report.html import Cell, Figure, Table, fmt, num_cell, number
from varloss.report.kinds import Context, ReportKind
from varloss.report.plots import runs_maps
from varloss.report.sections import settings_section
from varloss.report.spectrum import runs_spectrum_section
from varloss.report.study_table import compared_table
from varloss.runs import (
    FIGURE_FILE,
    FIT_FILE,
    HTML_FILE,
    MAPS_FILE,
    RESULTS_FILE,
    RUNS_DIR,
    SAMPLES_FILE,
    SPEC_FILE,
    RunFolder,
)
from varloss.variance.fit import LineFit
from varloss.variance.protocol import Reconstruction
from varloss.variance.ratios import RATIO_INTERVAL

_MAX_RUN_GRIDS = 60
_MAX_RUN_MAPS = 24
# fit.json's fitted relations (varloss study's fit_results), in the order the table shows them.
_FITS = (
    ("reconstructed", "reconstructed"),
    ("generated", "generated"),
    ("origin", "origin"),
    ("generated_origin", "generated origin"),
)


def detects(directory: Path) -> bool:
    return (directory / RESULTS_FILE).is_file() or (directory / FIT_FILE).is_file()


def build(directory: Path, source: Path | None) -> Context:
    folder = RunFolder(directory)
    rows = read_results(folder) if folder.exists(RESULTS_FILE) else []
    fit = read_fit(folder, rows) if folder.exists(FIT_FILE) else None
    name = (fit.name if fit else None) or directory.name
    context: Context = {
        "title": f"Study: variance loss against MSE ({name})",
        "subtitle": f"{count(len(rows), 'finished run')}",
        "notices": [],
        "sentences": _explain_study(rows, fit),
    }
    if fit is not None and fit.quick:
        context["notices"].append(
            "This is the QUICK version of the study (preset `quick`): small training subsets "
            "and few epochs so that it runs on a laptop CPU in minutes. The `paper` preset "
            "trains the full zoo on four data sets and is meant for a GPU."
        )
    elif fit is not None and fit.preset:
        context["subtitle"] += f", preset {fit.preset}"
    figure = embed(
        folder,
        FIGURE_FILE,
        title="Variance loss against MSE",
        caption="One point per run, each family in its own colour and marker, one panel per "
        "data set; filled markers are reconstructions, hollow markers generated samples; the "
        "dashed line is y = x and the fitted lines are fitted over all runs. Runs that differ "
        "only in their seed share one marker with error bars of ± one standard deviation "
        "across the seeds; in a study that mixes reconstruction protocols, half-filled markers "
        f"are the sampled reconstructions ({Reconstruction.SAMPLE.formula}), filled ones "
        f"{Reconstruction.MEAN.formula}.",
        alt="scatter of variance loss against MSE by architecture family",
    )
    if figure is not None:
        figure.scroll_min_width = 760
    elif rows:
        context["notices"].append(
            f"The study folder has no {FIGURE_FILE} (varloss study draws it once every run has "
            "finished); run the study command again to draw it."
        )
    context["study"] = {
        "figures": [figure] if figure else [],
        "fit_table": _fit_table(fit),
        "family_table": _family_table(fit),
        "family_interval": RATIO_INTERVAL,
        "results": compared_table(rows, directory),
        "results_all": _results_table(rows, directory),
        "runs": _run_grids(directory, rows),
    }
    context["maps"] = _runs_maps(directory, rows)
    context["spectrum"] = runs_spectrum_section(directory, rows)
    context["settings"] = _study_settings(folder, fit)
    return context


def _study_settings(folder: RunFolder, fit: FitRecord | None) -> dict[str, Any]:
    settings = fit.settings if fit is not None else {}
    command = settings.get("command")
    equivalent = None
    preset = fit.preset if fit is not None else None
    # Re-running the study command in the same folder redraws it (finished runs are skipped).
    if (
        not command
        and preset
        and resources.files("varloss").joinpath("presets", f"{preset}.yaml").is_file()
    ):
        equivalent = shlex.join(["varloss", "study", "--preset", preset, "--out", str(folder.path)])
    spec_text = None
    if folder.exists(SPEC_FILE):
        spec_text = folder.read_bytes(SPEC_FILE).decode("utf-8", errors="replace")
    return settings_section(
        [("command", command), ("command (equivalent)", equivalent), ("preset", preset)],
        {key: value for key, value in settings.items() if key != "spec"},
        spec_text=spec_text,
    )


def _fit_table(fit: FitRecord | None) -> Table | None:
    """fit.json as a table: one row per fitted relation, with the bootstrap intervals."""
    if fit is None:
        return None
    lines: list[tuple[str, LineFit]] = [(label, fit.line(key)) for key, label in _FITS]
    rows = [
        [
            Cell(label),
            *(num_cell(value) for value in (line.slope, line.intercept, line.r2, line.n)),
            *(_interval_cell(interval) for interval in (line.slope_ci95, line.intercept_ci95)),
        ]
        for label, line in lines
    ]
    if not rows:
        return None
    return Table(
        columns=["fit", "slope", "intercept", "R²", "n", "slope 95%", "intercept 95%"],
        rows=rows,
        id="fit",
        numeric_columns=[False] + [True] * 6,
    )


def _interval_cell(interval: Any) -> Cell:
    """[low, high] as `low – high` (sorted by low); a dash when there is none."""
    if not isinstance(interval, list | tuple) or len(interval) != 2:
        return Cell("–", None, numeric=True)
    low, high = (number(value) for value in interval)
    return Cell(f"{fmt(low)} – {fmt(high)}", low, numeric=True)


def _family_table(fit: FitRecord | None) -> Table | None:
    """The per-family ratio variance loss / MSE (reconstructions) over the runs: n, mean,
    standard deviation and its Student-t 95% interval (fit.json's `family_ratios`)."""
    table = fit.family_ratios if fit is not None else ()
    if not table:
        return None
    return Table(
        columns=[
            "family",
            "reconstruction",
            "runs",
            "points",
            "mean ratio",
            "std",
            "95% interval (t)",
        ],  # fmt: skip
        rows=[
            [
                Cell(row.family),
                Cell(row.reconstruction),
                *(num_cell(value) for value in (row.n, row.points, row.mean_ratio, row.std_ratio)),
                _interval_cell(row.ratio_ci95),
            ]
            for row in table
        ],
        id="families",
        numeric_columns=[False, False] + [True] * 5,
    )


def _explain_study(rows: list[ResultsRow], fit: FitRecord | None) -> list[str]:
    sentences = []
    if rows:
        families = sorted({r.family for r in rows})
        datasets = sorted({r.dataset for r in rows})
        trained = f"{count(len(rows), 'VAE')} {'was' if len(rows) == 1 else 'were'} trained"
        sentences.append(
            f"{trained} ({', '.join(families) or 'unknown families'} on "
            f"{', '.join(datasets) or 'unknown data'}); each point compares the variance the "
            "model loses with its reconstruction error."
        )
        sentences.append(_protocol_sentence(rows))
        training = _training_sentence(rows)
        if training:
            sentences.append(training)
    sentences += fit_sentences(fit)
    return sentences


def fit_sentences(fit: FitRecord | None) -> list[str]:
    """The reconstructions' fitted line in words, and what its slope and R² say: a slope near 1
    with a tight fit, a negative slope, a fit worse than the mean (R² below 0), or a loose one."""
    if fit is None or fit.reconstructed.slope is None:
        return []
    line = fit.reconstructed
    slope, r2, intercept = line.slope, line.r2, line.intercept
    text = (
        "A least-squares line through the reconstructions gives variance loss ≈ "
        f"{fmt(slope, 3)} × MSE"
    )
    if intercept is not None:
        text += f" {'+' if intercept >= 0 else '-'} {fmt(abs(intercept), 3)}"
    if r2 is not None:
        text += f" (R² = {r2:.3f})"
    interval = line.slope_ci95
    if interval is not None:
        resamples = (fit.bootstrap or {}).get("resamples")
        method = "percentile bootstrap over the runs"
        if isinstance(resamples, int):
            method += f", {count(resamples, 'resample')}"
        text += (
            f"; the slope's 95% interval is {fmt(interval[0], 3)} to {fmt(interval[1], 3)} "
            f"({method})"
        )
    return [text + ".", _slope_verdict(slope, r2)]


def _slope_verdict(slope: float, r2: float | None) -> str:
    """What the fitted slope and R² say about variance loss ≈ MSE."""
    if r2 is not None and r2 < 0:
        return (
            "R² is below 0: the line fits the points worse than their mean does, so its slope "
            "says little; look at the decomposition panel and the bias² and covariance columns "
            "to see which runs depart and why."
        )
    if slope < 0:
        return (
            "The slope is negative: across these runs a larger reconstruction error goes with "
            "a smaller variance loss, which the decomposition MSE - bias² + covariance term "
            "does not predict when bias and covariance are small; look at those columns."
        )
    if 0.8 <= slope <= 1.25 and (r2 is None or r2 >= 0.9):
        return (
            "The slope is close to 1: across architectures, the variance a VAE loses is "
            "about its reconstruction error, as the decomposition MSE - bias² + covariance "
            "term predicts when bias and covariance are small."
        )
    if 0.8 <= slope <= 1.25:
        verdict = f"The slope is close to 1 but the fit is loose (R² = {r2:.3f})"
    else:
        verdict = "The slope is away from 1"
    return (
        f"{verdict}: look at the decomposition panel and the bias² and covariance columns to "
        "see which runs depart and why."
    )


def _protocol_words(protocol: Reconstruction) -> str:
    """The protocol in a sentence, in the enum's one wording."""
    return f"the `{protocol.value}` protocol, x̂ = {protocol.description}"


def _protocol_sentence(rows: list[ResultsRow]) -> str:
    """Which reconstruction protocol the study's runs used (results.csv's `reconstruction`)."""
    counts: dict[Reconstruction, int] = {}
    for row in rows:
        protocol = row.reconstruction
        counts[protocol] = counts.get(protocol, 0) + 1
    if len(counts) == 1:
        (protocol,) = counts
        return f"Reconstructions were measured with {_protocol_words(protocol)}."
    parts = [f"{n} with {_protocol_words(p)}" for p, n in sorted(counts.items())]
    return (
        "The study mixes reconstruction protocols: " + "; ".join(parts) + " (half-filled "
        "markers in the figure; the per-family table keeps them apart)."
    )


def _training_sentence(rows: list[ResultsRow]) -> str | None:
    """How many runs early stopping ended and which reached their epoch cap (results.csv's
    `early_stopped`: True/False for runs trained with --patience, None otherwise)."""
    stopped = [row for row in rows if row.early_stopped is True]
    capped = [row for row in rows if row.early_stopped is False]
    if not stopped and not capped:
        return None
    groups: dict[str, int] = {}
    for row in capped:
        label = f"{row.family} on {row.dataset} ({row.epochs} {plural('epoch', row.epochs)})"
        groups[label] = groups.get(label, 0) + 1
    listed = ", ".join(f"{label}{f' ×{n}' if n > 1 else ''}" for label, n in groups.items())
    capped_words = "reached {} epoch cap while still improving, so {} less than converged"
    if len(stopped) + len(capped) == 1:
        if stopped:
            return (
                "The one run trained with early stopping stopped once its validation loss had "
                "stopped improving."
            )
        words = capped_words.format("its", "it is")
        return f"The one run trained with early stopping {words}: {listed}."
    text = (
        f"{len(stopped) or 'None'} of {'' if stopped else 'the '}{len(stopped) + len(capped)} "
        "runs trained with early stopping stopped once their validation loss had stopped "
        "improving"
    )
    if not capped:
        return text + "."
    one = len(capped) == 1
    words = capped_words.format("its", "it is") if one else capped_words.format("their", "they are")
    return f"{text}; {len(capped)} {words}: {listed}."


def _results_table(records: list[ResultsRow], directory: Path) -> Table | None:
    """Every column of results.csv, sortable; a run's id links to its page when it has one."""
    if not records:
        return None
    rows = [record.values() for record in records]
    columns = list(rows[0])
    numeric = [
        all(number(row[column]) is not None for row in rows if row[column] is not None)
        for column in columns
    ]
    table_rows = []
    for row in rows:
        cells = []
        for column, is_numeric in zip(columns, numeric, strict=True):
            value = row[column]
            if is_numeric and value is not None:
                cells.append(num_cell(value))
                continue
            text = "" if value is None else str(value)
            link = f"{RUNS_DIR}/{text}/{HTML_FILE}"
            if column != "run_id" or not (directory / link).is_file():
                link = None
            cells.append(Cell(text, text, link=link))
        table_rows.append(cells)
    return Table(
        columns=columns, rows=table_rows, sortable=True, id="results-all", numeric_columns=numeric
    )


def _run_folders(directory: Path, rows: list[ResultsRow], name: str) -> list[RunFolder]:
    """The run folders under runs/ that hold `name`, in results.csv order (others after)."""
    runs = directory / RUNS_DIR
    if not runs.is_dir():
        return []
    order = {row.run_id: index for index, row in enumerate(rows)}
    found = [path for path in runs.iterdir() if (path / name).is_file()]
    found.sort(key=lambda path: (order.get(path.name, len(order)), path.name))
    return [RunFolder(path) for path in found]


def _run_grids(directory: Path, rows: list[ResultsRow]) -> list[Figure]:
    by_id = {row.run_id: row for row in rows}
    figures = []
    for run in _run_folders(directory, rows, SAMPLES_FILE)[:_MAX_RUN_GRIDS]:
        row = by_id.get(run.path.name)
        numbers = (
            (("MSE", row.mse), ("variance loss", row.variance_loss_reconstructed)) if row else ()
        )
        parts = [f"{label} {fmt(value)}" for label, value in numbers if value is not None]
        figure = embed(
            run,
            SAMPLES_FILE,
            title=run.path.name,
            caption=", ".join(parts),
            alt=f"samples of run {run.path.name}",
        )
        figures.append(figure)
    return figures


def _runs_maps(directory: Path, rows: list[ResultsRow]) -> Figure | None:
    """Every run's maps.npz in one figure, one row per run (at most 24), labelled by family and
    data set."""
    by_id = {row.run_id: row for row in rows}
    entries = []
    for run in _run_folders(directory, rows, MAPS_FILE)[:_MAX_RUN_MAPS]:
        row = by_id.get(run.path.name)
        label = f"{row.family}, {row.dataset}" if row is not None else ""
        entries.append((label or run.path.name, read_maps(run, MAPS_FILE)))
    return runs_maps(entries) if entries else None


KIND = ReportKind(
    name="study",
    description="results.csv and fit.json from `varloss study`",
    detects=detects,
    build=build,
)
