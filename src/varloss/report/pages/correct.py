"""The page of a `varloss correct` folder, and the remedies table a train run's page shows.

`varloss correct` writes one schema for one method or many: report.json holds `baseline` (the
prior sampler's numbers), `methods` (method name -> its numbers, the baseline included as
`prior`) and `settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from varloss._words import share
from varloss.errors import InputError
from varloss.records import fid_number
from varloss.report.files import embed, read_object
from varloss.report.html import Cell, Table, fmt, num_cell, number
from varloss.report.kinds import Context, ReportKind
from varloss.report.remedies import honest_sentences
from varloss.report.sections import correct_command, headline_table, settings_section
from varloss.report.spectrum import methods_spectrum_section
from varloss.runs import (
    CONFIG_FILE,
    CORRECT_DIR,
    CURVE_FILE,
    HTML_FILE,
    REPORT_FILE,
    SAMPLES_FILE,
    RunFolder,
)
from varloss.train_config import equivalent_command
from varloss.variance.report import variance_warnings

_COLUMNS = (
    ("method", None),
    ("variance, generated", "var_generated"),
    ("variance loss, generated", "variance_loss_generated"),
    ("gap closed", "gap_closed"),
    ("gap closed per band, low to high frequency", "band_gap_closed"),
    ("spectral error", "spectral_error"),
    ("pixel Fréchet", "pixel_frechet"),
    ("reconstruction MSE after", "reconstruction_mse_after"),
    ("FID before", "fid_before"),
    ("FID after", "fid_after"),
    ("FID gain", "fid_gain"),
)


def remedies_section(report: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The table of remedies (one row per method: variance, gap closed, FID before and after)
    and the sentences that sum it up."""
    baseline, methods = report.get("baseline"), report.get("methods")
    if not isinstance(baseline, Mapping) or not isinstance(methods, Mapping):
        raise InputError(
            f"{path} has no `baseline` and `methods` tables (an older `varloss correct` wrote "
            "it); run `varloss correct` again to rewrite it."
        )
    rows = []
    for name, entry in methods.items():
        cells = [Cell("prior (baseline)" if name == "prior" else name, name)]
        for column, key in _COLUMNS[1:]:
            if key == "band_gap_closed":
                cells.append(band_cell(entry.get(key)))
            else:
                cells.append(num_cell(entry.get(key), percent=column == "gap closed"))
        closed = number(entry.get("gap_closed"))
        if closed is not None and closed < 0:  # not a share of the gap: say what it means
            cells[3].title = "below 0: further from the real variance than the prior sampler"
        rows.append(cells)
    notes = [
        f"Warning ({name}): {text}."
        for name, entry in methods.items()
        for text in variance_warnings(entry)
    ]
    if fid_number(baseline.get("fid")) is None and baseline.get("fid_reason"):
        notes.append(f"FID not computed: {baseline['fid_reason']}")
    table = Table(
        columns=[column for column, _ in _COLUMNS],
        rows=rows,
        sortable=True,
        id="remedies",
        numeric_columns=[False] + [True] * (len(_COLUMNS) - 1),
    )
    return {"table": table, "sentences": _remedies_sentences(baseline, methods), "notes": notes}


def band_cell(values: Any) -> Cell:
    """The per-band fractions of the gap closed as percentages, lowest band first (above 100%:
    an overshoot, below 0: further from the real variance); sorted by the worst band's distance
    from 100%, max |1 - fraction| (0: every band's gap closed exactly)."""
    if not isinstance(values, list) or not values:
        return Cell("–", None, numeric=True)
    shown = [number(value) for value in values]
    text = " ".join("–" if value is None else f"{value:.0%}" for value in shown)
    known = [value for value in shown if value is not None]
    worst = max(abs(1 - value) for value in known) if known else None
    title = "above 100%: overshoot; below 0: further away; sorted by the worst band's |1 - x|"
    return Cell(text, worst, numeric=True, title=title)


def _remedies_sentences(baseline: Mapping[str, Any], methods: Mapping[str, Any]) -> list[str]:
    sentences = []
    var_real, var_base = number(baseline.get("var_real")), number(baseline.get("var_generated"))
    if var_real is not None and var_base is not None:
        sentences.append(prior_sentence(var_real, var_base))
    # `match` closes the gap by construction; it is discussed apart from the real remedies.
    remedies = {
        name: number(entry.get("gap_closed"))
        for name, entry in methods.items()
        if name not in ("prior", "match") and number(entry.get("gap_closed")) is not None
    }
    if remedies:
        best = max(remedies, key=lambda name: remedies[name])
        entry = methods[best]
        text = best_remedy_sentence(
            best, remedies[best], var_real, var_base, number(entry.get("var_generated"))
        )
        before, after = number(entry.get("fid_before")), number(entry.get("fid_after"))
        if before is not None and after is not None:
            change = "down" if after < before else "up" if after > before else "unchanged"
            text += f"; its FID goes from {fmt(before)} to {fmt(after)} ({change}, lower is better)"
        sentences.append(text + ".")
    if "match" in methods:
        sentences.append(
            "Output variance matching (match) calibrates pixel statistics and closes the gap by "
            "construction; judge it by the FID column."
        )
    return sentences


def prior_sentence(var_real: float, var_prior: float) -> str:
    """The plain prior sampler's variance against the real one: a share kept and a gap, or an
    excess (a prior whose samples vary more than the data), or no gap."""
    if var_prior == var_real:
        return (
            "With the plain prior sampler, generated images have the real variance "
            f"({fmt(var_real)}): there is no gap to close."
        )
    kept = share(var_prior, var_real)
    if kept is not None:
        return (
            f"With the plain prior sampler, generated images keep {kept} of the real variance "
            f"({fmt(var_prior)} of {fmt(var_real)}): a gap of {fmt(var_real - var_prior)}."
        )
    return (
        f"With the plain prior sampler, generated images have more variance than the real ones "
        f"({fmt(var_prior)} against {fmt(var_real)}): an excess of {fmt(var_prior - var_real)}."
    )


def best_remedy_sentence(
    name: str,
    gap_closed: float,
    var_real: float | None,
    var_prior: float | None,
    var_remedy: float | None,
) -> str:
    """The remedy with the largest `gap_closed` (1 - |gap after| / |gap before|), in words true
    to its value: a share of the gap (0 to 100%), an overshoot past the real variance, or a
    remedy that leaves the variance further from the real one than the prior does."""
    overshoots = (
        var_real is not None
        and var_prior is not None
        and var_remedy is not None
        and (var_remedy - var_real) * (var_prior - var_real) < 0
    )
    closed = share(gap_closed, 1.0)
    if closed is None and gap_closed > 1:  # not 1 - |a| / |b| any more (a hand-made report)
        return (
            f"The remedy that moves the variance most is {name}, recorded as closing "
            f"{gap_closed:.0%} of the gap, which is more than the whole gap"
        )
    if closed is None:
        return (
            f"No remedy closes any of the gap: the best, {name}, leaves the generated variance "
            f"further from the real one than the prior does (gap closed {gap_closed:.0%})"
        )
    text = f"The remedy that closes most of it is {name}: {closed} of the gap"
    if overshoots:
        text += (
            f", counting its overshoot as gap left: its samples have "
            f"{'more' if var_remedy > var_real else 'less'} variance than the real images "
            f"({fmt(var_remedy)} against {fmt(var_real)})"
        )
    return text


def detects(directory: Path) -> bool:
    folder = RunFolder(directory)
    return folder.exists(REPORT_FILE) and "baseline" in read_object(folder, REPORT_FILE)


def build(directory: Path, source: Path | None) -> Context:
    folder = RunFolder(directory)
    report = read_object(folder, REPORT_FILE)
    settings = report.get("settings") or {}
    remedies = remedies_section(report, folder.file(REPORT_FILE))
    context: Context = {
        "title": f"Variance remedies: {settings.get('model_family') or 'VAE'} on "
        f"{settings.get('dataset') or 'data'}",
        "subtitle": directory.name,
        "headline": headline_table(report["baseline"], generated_label="generated (prior)"),
        # The remedies' sentences already state the prior's variance gap: they are the summary.
        "sentences": remedies["sentences"] + honest_sentences(report),
        "correct": {**remedies, "sentences": []},
    }
    samples = embed(
        folder,
        SAMPLES_FILE,
        title="Samples per method",
        caption="One row per sampler: the plain prior (baseline) and each remedy, from the "
        "same seeded noise; the label gives the mean per-pixel variance.",
        alt="grid of samples from each variance remedy",
    )
    curve = embed(
        folder,
        CURVE_FILE,
        title="Distortion-perception curves",
        caption="Each image-space remedy from identity (strength 0) to its full map (1): the "
        "test reconstructions' MSE against the samples' pixel Fréchet distance and variance kept; "
        "the dotted line is twice the decoder's own MSE (Blau & Michaeli's bound).",
        alt="reconstruction MSE against pixel Fréchet distance and variance kept per remedy",
    )
    context["grids"] = [figure for figure in (samples, curve) if figure]
    context["spectrum"] = methods_spectrum_section(report.get("methods") or {})
    run_config = _run_config(settings.get("run_dir"))
    command = settings.get("command")
    # The numbers come from `varloss correct`; the training command is context, labelled so.
    context["settings"] = settings_section(
        [
            ("command", command),
            ("command (equivalent)", None if command else correct_command(settings, directory)),
            ("training command (equivalent)", equivalent_command(run_config.get("train") or {})),
            ("seed", settings.get("seed")),
            ("data set", settings.get("dataset")),
            ("model family", settings.get("model_family")),
            ("latent size", settings.get("latent_dim")),
            ("varloss version", settings.get("varloss_version")),
        ],
        settings,
        model=run_config.get("model"),
    )
    if _parent_run(directory) is not None:
        context["links"] = [("Training run", f"../{HTML_FILE}")]
    return context


def _run_config(run_dir: Any) -> dict[str, Any]:
    """config.json of the train run the remedies were fitted on, or {} when it is gone."""
    if not run_dir or not (Path(run_dir) / CONFIG_FILE).is_file():
        return {}
    return read_object(RunFolder(run_dir), CONFIG_FILE)


def _parent_run(directory: Path) -> Path | None:
    """The train run a `correct` folder sits in (RUN/correct), when there is one."""
    parent = directory.resolve().parent
    is_run = (parent / CONFIG_FILE).is_file() and (parent / REPORT_FILE).is_file()
    return parent if directory.name == CORRECT_DIR and is_run else None


def related(directory: Path) -> list[Path]:
    """The train run's page shows the remedies too: rewrite it with this one."""
    parent = _parent_run(directory)
    return [parent] if parent is not None else []


KIND = ReportKind(
    name="correct",
    description="report.json from `varloss correct`",
    detects=detects,
    build=build,
    related=related,
)
