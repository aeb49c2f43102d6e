"""The HTML report: one self-contained page per varloss output folder.

`write_report(dir)` looks at what the folder holds and writes `dir/report.html`:

- a `varloss train` run (report.json + config.json, samples.png, history.csv, maybe maps.npz and a
  `correct/` sub-folder),
- a `varloss correct` folder (report.json with `baseline` and `methods`, samples.png),
- a `varloss study` folder (results.csv, fit.json, figure.png, runs/),
- a plain `varloss measure --json` output (a JSON with `var_real`, plus maps.npz or a maps figure).

Each section appears only when its data exists. Figures are drawn with matplotlib (Agg) and
embedded as base64 data URIs, the CSS and the small sorting script are inline, so the page opens
offline and can be mailed as one file. The page is rendered by a Jinja2 template
(`varloss/templates/report.html`).

Per-pixel variance maps come from `maps.npz` (keys `var_real`, `var_reconstructed`,
`var_generated`, each shaped like one sample) when a producer saved it; for a train run without
it they are recomputed from the saved model and the test split (reconstructions exactly; prior
samples with a seeded generator, which the page says).
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import io
import json
import math
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from varloss._io import atomic_write_text
from varloss.errors import InputError
from varloss.figures import map_image, pyplot, variance_map_panels, variance_maps_figure

REPORT_NAME = "report.html"
MAPS_NAME = "maps.npz"
MAP_KEYS = ("var_real", "var_reconstructed", "var_generated")

_PACKAGES = (
    "varloss",
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "torchmetrics",
    "matplotlib",
    "jinja2",
    "safetensors",
)
_MAX_RUN_GRIDS = 60
_MEASURE_KEYS = ("var_real", "var_reconstructed", "var_generated")


# ---------------------------------------------------------------------------------------------
# small value types handed to the template


@dataclass
class Figure:
    """An embedded image: a data URI plus the words around it."""

    title: str
    data_uri: str
    caption: str = ""
    alt: str = ""
    # A stacked layout of the same figure for narrow screens (served by <picture>).
    narrow_uri: str | None = None
    # Display width in CSS pixels; small pixel grids are scaled up by an integer factor.
    width: int | None = None
    # On narrow screens keep the image at least this wide (CSS px) and let its own box scroll
    # sideways: for wide multi-panel figures whose labels would be unreadable when shrunk.
    scroll_min_width: int | None = None


@dataclass
class Cell:
    """A table cell: the text shown and the raw value used for sorting (and by tests)."""

    text: str
    value: float | str | None = None
    numeric: bool = False
    link: str | None = None


@dataclass
class Table:
    """A table with a header row; `sortable` adds the inline click-to-sort script."""

    columns: list[str]
    rows: list[list[Cell]]
    sortable: bool = False
    id: str = ""
    numeric_columns: list[bool] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# public API


def detect_kind(directory: str | Path) -> str:
    """Say which varloss output `directory` is: "study", "correct", "train" or "measure".

    Raises InputError when the folder holds none of them.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"report folder {directory} does not exist or is not a folder.")
    if (directory / "results.csv").is_file() or (directory / "fit.json").is_file():
        return "study"
    report_path = directory / "report.json"
    if report_path.is_file():
        report = _read_json(report_path)
        if "baseline" in report:
            return "correct"
        if (directory / "config.json").is_file():
            return "train"
        if any(key in report for key in _MEASURE_KEYS):
            return "measure"
    if _find_measure_json(directory) is not None:
        return "measure"
    raise InputError(
        f"report folder {directory} holds no varloss output (expected report.json from `varloss "
        "train` or `varloss correct`, results.csv/fit.json from `varloss study`, or a "
        "`varloss measure --json` file)."
    )


def render_report(
    directory: str | Path, *, command: str | None = None, recompute_maps: bool = True
) -> str:
    """Build the HTML text of the report for `directory` (see `write_report`)."""
    directory, kind, source = _resolve(Path(directory))
    if kind == "measure":
        context = _measure_context(directory, source=source)
    else:
        builder = {"study": _study_context, "correct": _correct_context, "train": _train_context}
        context = builder[kind](directory, recompute_maps=recompute_maps)
    context["kind"] = kind
    context["directory"] = str(directory.resolve())
    context["rendered"] = _rendered_by(command)
    context.setdefault("notices", [])
    return _render(context)


def write_report(
    directory: str | Path, *, command: str | None = None, recompute_maps: bool = True
) -> Path:
    """Write `directory/report.html`, a self-contained page of everything the folder holds.

    `directory` may also be a `varloss measure --json` file; the page goes beside it.
    `command` is recorded as the command that rendered the page (the CLI passes its argv);
    `recompute_maps=False` skips recomputing variance maps from a train run's model when the
    run has no maps.npz. Returns the path of the page.

    For a `correct` folder inside a train run (RUN/correct), the run's page is rewritten too,
    so that it shows the remedies; the link between the two pages then always works.
    """
    html = render_report(directory, command=command, recompute_maps=recompute_maps)
    directory, kind, _ = _resolve(Path(directory))
    path = directory / REPORT_NAME
    atomic_write_text(path, html)
    parent = _parent_run(directory) if kind == "correct" else None
    if parent is not None:
        parent_html = render_report(parent, command=command, recompute_maps=recompute_maps)
        atomic_write_text(parent / REPORT_NAME, parent_html)
    return path


def save_maps(maps: Mapping[str, Any], path: str | Path) -> Path:
    """Save per-pixel variance maps (float64, one sample's shape) as the report's `maps.npz`.

    The format is plain numpy: float64 arrays keyed `var_real`, `var_reconstructed`,
    `var_generated` (other `var_*` keys are kept). Lower layers (train, remedies) write the same
    file with numpy rather than importing this module; this helper serves users and tests.
    Written atomically.
    """
    from varloss._io import atomic_path

    arrays = {
        str(key): np.asarray(value, dtype=np.float64)
        for key, value in maps.items()
        if value is not None
    }
    if not arrays:
        raise InputError("maps must hold at least one array (e.g. var_real).")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return path


def explain_variance(report: Mapping[str, Any]) -> list[str]:
    """Plain-words sentences that explain a measure report's headline numbers."""
    sentences: list[str] = []
    var_real = _number(report.get("var_real"))
    var_rec = _number(report.get("var_reconstructed"))
    var_gen = _number(report.get("var_generated"))
    mse = _number(report.get("mse"))
    bias2 = _number(report.get("bias2"))
    cov = _number(report.get("cov_term"))
    if var_real is None:
        return sentences
    if var_rec is not None:
        loss = var_real - var_rec
        text = (
            f"The reconstructions keep {_percent(var_rec, var_real)} of the real images' "
            f"per-pixel variance ({fmt(var_rec)} of {fmt(var_real)}): a variance loss of "
            f"{fmt(loss)}"
        )
        if mse is not None and mse > 0:
            text += f", {loss / mse:.2f} times the reconstruction MSE ({fmt(mse)})."
        else:
            text += "."
        sentences.append(text)
        if mse is not None and bias2 is not None and cov is not None and mse > 0:
            small = max(abs(bias2), abs(cov)) <= 0.1 * mse
            if small:
                sentences.append(
                    "Variance loss = MSE - bias² + covariance term; here bias² "
                    f"({fmt(bias2)}) and the covariance term ({fmt(cov)}) are small, so the "
                    "variance lost is essentially the reconstruction error: a decoder that "
                    "cannot predict a detail outputs its average, and the spread of that "
                    "detail is gone."
                )
            else:
                sentences.append(
                    "Variance loss = MSE - bias² + covariance term; here bias² removes "
                    f"{fmt(bias2)} and the covariance term adds {fmt(cov)} to the MSE, so the "
                    "lost variance differs from the reconstruction error by "
                    f"{fmt(cov - bias2)}."
                )
    if var_gen is not None:
        gen_loss = var_real - var_gen
        text = (
            f"Generated samples keep {_percent(var_gen, var_real)} of the real variance "
            f"({fmt(var_gen)}): a variance loss of {fmt(gen_loss)}"
        )
        if var_rec is not None:
            rec_loss = var_real - var_rec
            if gen_loss > rec_loss:
                text += ", more than the reconstructions lose"
            elif gen_loss < rec_loss:
                text += ", less than the reconstructions lose"
        sentences.append(
            text + ". Samples with less variance than the data look blurry and alike."
            if gen_loss > 0
            else text + "."
        )
    fid = _fid_value(report.get("fid"))
    if fid is not None:
        sentences.append(
            f"The Fréchet distance between real and generated features is {fmt(fid)} "
            "(lower is better)."
        )
    return sentences


def fmt(value: Any, digits: int = 4) -> str:
    """Format a number for the page: `digits` significant digits, a dash for missing values."""
    number = _number(value)
    if number is None:
        return "–" if value is None else str(value)
    if number == 0:
        return "0"
    if not math.isfinite(number):
        return str(number)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(int(value))
    return f"{number:.{digits}g}"


# ---------------------------------------------------------------------------------------------
# context builders, one per kind


def _resolve(target: Path) -> tuple[Path, str, Path | None]:
    """(folder, kind, measure JSON file) for a folder or a `varloss measure --json` file."""
    if target.is_file():
        if not any(key in _read_json(target) for key in _MEASURE_KEYS):
            raise InputError(
                f"{target} is not a `varloss measure --json` file (it has no var_real); give "
                "a varloss output folder or a measure JSON."
            )
        return target.parent, "measure", target
    return target, detect_kind(target), None


def _measure_context(directory: Path, *, source: Path | None = None) -> dict[str, Any]:
    path = source or directory / "report.json"
    if not path.is_file() or not any(k in _read_json(path) for k in _MEASURE_KEYS):
        path = _find_measure_json(directory)
    assert path is not None  # detect_kind guarantees it
    report = _read_json(path)
    context = _variance_context(report, title=f"Variance report: {directory.name}")
    context["source"] = path.name
    maps, note = _load_maps(directory)
    used: set[Path] = {path}
    if maps:
        context["maps"] = _maps_figure(maps, note)
    else:
        figures = []
        for image in sorted(directory.glob("*.png")):
            if image.name.startswith("."):
                continue
            used.add(image)
            figures.append(_file_figure(image, title=image.stem.replace("_", " "), alt=image.name))
        context["grids"] = figures
    context["settings"] = _settings_section(report.get("settings"), None, None)
    return context


def _train_context(directory: Path, *, recompute_maps: bool = True) -> dict[str, Any]:
    report = _read_json(directory / "report.json")
    config = _read_json(directory / "config.json")
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    family = config.get("family") or train.get("family")
    dataset = train.get("dataset") or _nested(report, "settings", "dataset")
    title = f"VAE run: {family or 'model'} on {dataset or 'data'}"
    context = _variance_context(report, title=title)
    context["subtitle"] = directory.name
    notices = context.setdefault("notices", [])
    maps, note = _load_maps(directory)
    if not maps and recompute_maps:
        maps, note = _recompute_train_maps(directory, report, config)
    if maps:
        context["maps"] = _maps_figure(maps, note)
    elif note:
        notices.append(note)
    grids = []
    samples = directory / "samples.png"
    if samples.is_file():
        grids.append(
            _file_figure(
                samples,
                title="Samples",
                caption="Rows: real test images, their reconstructions decode(mu), and samples "
                "decoded from the prior.",
                alt="grid of real, reconstructed and generated images",
            )
        )
    history = directory / "history.csv"
    if history.is_file():
        curves = _loss_curves(history)
        if curves is not None:
            context["curves"] = curves
    correct_dir = directory / "correct"
    if (correct_dir / "report.json").is_file():
        correct = _read_json(correct_dir / "report.json")
        if "baseline" in correct:
            context["correct"] = _correct_section(correct)
            if (correct_dir / REPORT_NAME).is_file():
                context["links"] = [("Remedies page", f"correct/{REPORT_NAME}")]
            if (correct_dir / "samples.png").is_file():
                grids.append(
                    _file_figure(
                        correct_dir / "samples.png",
                        title="Corrected samples",
                        caption="One row per sampler: the plain prior (baseline) and each remedy, "
                        "from the same seeded noise.",
                        alt="grid of samples from each variance remedy",
                    )
                )
    context["grids"] = grids
    context["settings"] = _settings_section(report.get("settings"), config, None)
    return context


def _correct_context(directory: Path, *, recompute_maps: bool = True) -> dict[str, Any]:
    report = _read_json(directory / "report.json")
    settings = report.get("settings") if isinstance(report.get("settings"), dict) else {}
    baseline = report.get("baseline") or {}
    title = f"Variance remedies: {settings.get('model_family') or 'VAE'} on " + str(
        settings.get("dataset") or "data"
    )
    context: dict[str, Any] = {"title": title, "subtitle": directory.name}
    context["headline"] = _headline_table(baseline, generated_label="generated (prior)")
    context["correct"] = _correct_section(report)
    # The remedies' sentences already state the prior's variance gap: they are the summary.
    context["sentences"] = context["correct"]["sentences"]
    context["correct"]["sentences"] = []
    samples = directory / "samples.png"
    context["grids"] = (
        [
            _file_figure(
                samples,
                title="Samples per method",
                caption="One row per sampler: the plain prior (baseline) and each remedy, from "
                "the same seeded noise; the label gives the mean per-pixel variance.",
                alt="grid of samples from each variance remedy",
            )
        ]
        if samples.is_file()
        else []
    )
    run_config = None
    run_dir = settings.get("run_dir")
    if run_dir and (Path(run_dir) / "config.json").is_file():
        run_config = _read_json(Path(run_dir) / "config.json")
    context["settings"] = section = _settings_section(settings, run_config, None)
    # The numbers come from `varloss correct`; the training command is context, labelled so.
    renamed = {"command (equivalent)": "training command (equivalent)"}
    facts = [
        (renamed.get(label, label), value)
        for label, value in section["key_facts"]
        if (label, value) != ("command", "not recorded")
    ]
    command = _correct_command(settings, directory)
    if command and not any(label == "command" for label, _ in facts):
        facts.insert(0, ("command (equivalent)", command))
    section["key_facts"] = facts
    if _parent_run(directory) is not None:
        context["links"] = [("Training run", "../" + REPORT_NAME)]
    return context


def _parent_run(directory: Path) -> Path | None:
    """The train run a `correct` folder sits in (RUN/correct), when there is one."""
    parent = directory.resolve().parent
    if directory.name == "correct" and (parent / "config.json").is_file():
        if (parent / "report.json").is_file():
            return parent
    return None


def _study_context(directory: Path, *, recompute_maps: bool = True) -> dict[str, Any]:
    rows = _read_csv(directory / "results.csv") if (directory / "results.csv").is_file() else []
    fit = _read_json(directory / "fit.json") if (directory / "fit.json").is_file() else {}
    spec_text, spec = _study_spec(directory)
    preset = _first_str(fit, "preset") or _first_str(spec, "preset")
    if preset is None and rows and "preset" in rows[0]:
        preset = rows[0]["preset"] or None
    name = _first_str(fit, "name") or _first_str(spec, "name") or directory.name
    context: dict[str, Any] = {
        "title": f"Study: variance loss against MSE ({name})",
        "subtitle": f"{len(rows)} finished run{'s' if len(rows) != 1 else ''}",
        "notices": [],
    }
    if preset == "quick":
        context["notices"].append(
            "This is the QUICK version of the study (preset `quick`): small training subsets "
            "and few epochs so that it runs on a laptop CPU in minutes. The `paper` preset "
            "trains the full zoo on four data sets and is meant for a GPU."
        )
    elif preset:
        context["subtitle"] += f", preset {preset}"
    fits = _fit_rows(fit)
    study: dict[str, Any] = {"fit_table": fits}
    context["sentences"] = _explain_study(rows, fit)
    figures = []
    figure_png = directory / "figure.png"
    if figure_png.is_file():
        study_figure = _file_figure(
            figure_png,
            title="Variance loss against MSE",
            caption="One point per run, coloured by family (dense blue, ResNet red, "
            "convolutional green, iterative yellow); filled markers are reconstructions, "
            "hollow markers generated samples; the dashed line is y = x.",
            alt="scatter of variance loss against MSE by architecture family",
        )
        study_figure.scroll_min_width = 760
        figures.append(study_figure)
    elif rows:
        scatter = _study_scatter(rows, fit)
        if scatter is not None:
            figures.append(scatter)
    study["figures"] = figures
    study["results"] = _results_table(rows, directory)
    study["runs"] = _run_grids(directory, rows)
    context["study"] = study
    context["maps"] = _study_maps_figure(directory, rows)
    settings = fit.get("settings") if isinstance(fit.get("settings"), dict) else {}
    context["settings"] = section = _settings_section(settings or None, None, spec_text)
    # Re-running the study command in the same folder redraws it (finished runs are skipped).
    spec_file = next(
        (directory / n for n in ("study.yaml", "spec.yaml") if (directory / n).is_file()), None
    )
    source = preset if preset in ("quick", "paper") else (str(spec_file) if spec_file else None)
    if source and ("command", "not recorded") in section["key_facts"]:
        import shlex

        index = section["key_facts"].index(("command", "not recorded"))
        section["key_facts"][index] = (
            "command (equivalent)",
            shlex.join(["varloss", "study", "--preset", source, "--out", str(directory)]),
        )
    return context


# ---------------------------------------------------------------------------------------------
# sections


def _variance_context(report: Mapping[str, Any], *, title: str) -> dict[str, Any]:
    return {
        "title": title,
        "headline": _headline_table(report),
        "sentences": explain_variance(report),
        "notices": [],
    }


_HEADLINE = (
    ("var_real", "variance, real", "mean over pixels of the per-pixel variance across images"),
    ("var_reconstructed", "variance, reconstructed", "the same for the reconstructions"),
    ("var_generated", "variance, generated", "the same for samples from the model"),
    (
        "variance_loss_reconstructed",
        "variance loss, reconstructed",
        "variance real - variance reconstructed",
    ),
    ("variance_loss_generated", "variance loss, generated", "variance real - variance generated"),
    ("mse", "MSE", "mean squared error of the reconstructions, per pixel"),
    ("ratio", "ratio variance loss / MSE", "1 when the lost variance is the reconstruction error"),
    ("bias2", "bias²", "mean over pixels of (mean real - mean reconstructed)²"),
    ("cov_term", "covariance term", "2 × mean over pixels of cov(reconstruction, error)"),
    ("identity", "MSE - bias² + covariance term", "equals the variance loss (an exact identity)"),
)


def _headline_table(report: Mapping[str, Any], generated_label: str | None = None) -> Table:
    values = dict(report)
    var_real = _number(values.get("var_real"))
    for name in ("reconstructed", "generated"):
        other = _number(values.get(f"var_{name}"))
        if (
            values.get(f"variance_loss_{name}") is None
            and var_real is not None
            and other is not None
        ):
            values[f"variance_loss_{name}"] = var_real - other
    loss = _number(values.get("variance_loss_reconstructed"))
    mse = _number(values.get("mse"))
    if loss is not None and mse is not None and mse > 0:
        values["ratio"] = loss / mse
    bias2, cov = _number(values.get("bias2")), _number(values.get("cov_term"))
    if mse is not None and bias2 is not None and cov is not None:
        values["identity"] = mse - bias2 + cov
    rows: list[list[Cell]] = []
    for key, label, meaning in _HEADLINE:
        value = _number(values.get(key))
        if value is None:
            continue
        if key == "var_generated" and generated_label:
            label = f"variance, {generated_label}"
        rows.append([Cell(label), _num_cell(value), Cell(meaning)])
    for key, label in (
        ("n_real", "images, real"),
        ("n_reconstructed", "images, reconstructed"),
        ("n_generated", "images, generated"),
    ):
        if isinstance(values.get(key), int):
            rows.append([Cell(label), _num_cell(values[key]), Cell("samples the numbers use")])
    rows += _fid_rows(values.get("fid"))
    return Table(
        columns=["quantity", "value", "meaning"],
        rows=rows,
        id="headline",
        numeric_columns=[False, True, False],
    )


def _fid_rows(fid: Any) -> list[list[Cell]]:
    value = _fid_value(fid)
    if value is None:
        return []
    rows = []
    features = None
    if isinstance(fid, dict):
        features = fid.get("extractor") or fid.get("features")
        if isinstance(features, dict):
            features = features.get("name")
    meaning = "Fréchet distance of real and generated features"
    if features:
        meaning += f" ({features} features)"
    rows.append([Cell("FID"), _num_cell(value), Cell(meaning)])
    if isinstance(fid, dict):
        terms = fid.get("terms")
        if isinstance(terms, dict):
            for name, term in terms.items():
                if _number(term) is not None:
                    rows.append(
                        [
                            Cell(f"FID term: {name.replace('_', ' ')}"),
                            _num_cell(term),
                            Cell("FID = mean term + trace real + trace generated - cross term"),
                        ]
                    )
        ratio = fid.get("trace_ratio")
        if _number(ratio) is not None:
            rows.append(
                [
                    Cell("feature trace ratio"),
                    _num_cell(ratio),
                    Cell("Tr Σ generated / Tr Σ real: variance kept in feature space"),
                ]
            )
        for key, meaning in _PRDC:
            if _number(fid.get(key)) is not None:
                rows.append([Cell(key), _num_cell(fid[key]), Cell(meaning)])
    return rows


_PRDC = (
    ("precision", "share of generated samples inside the real manifold (Kynkäänniemi 2019)"),
    ("recall", "share of real samples inside the generated manifold"),
    ("density", "how densely generated samples crowd real neighbourhoods (Naeem 2020)"),
    ("coverage", "share of real neighbourhoods that hold a generated sample"),
)


def _correct_section(report: Mapping[str, Any]) -> dict[str, Any]:
    """The table of remedies: one row per method with the gap closed and FID before/after."""
    baseline = report.get("baseline") or {}
    methods = report.get("methods")
    if not isinstance(methods, dict):
        name = report.get("method") or "method"
        methods = {"prior": baseline}
        if name != "prior":
            methods[name] = {k: v for k, v in report.items() if k not in ("baseline", "settings")}
    columns = [
        "method",
        "variance, generated",
        "variance loss, generated",
        "gap closed",
        "FID before",
        "FID after",
        "FID gain",
    ]
    rows = []
    var_real = _number(baseline.get("var_real"))
    best: tuple[str, float] | None = None
    for name, entry in methods.items():
        gap = _number(entry.get("gap_closed"))
        fid_before = _number(entry.get("fid_before"))
        if fid_before is None:
            fid_before = _fid_value(baseline.get("fid"))
        fid_after = _number(entry.get("fid_after"))
        if fid_after is None:
            fid_after = _fid_value(entry.get("fid"))
        gain = _number(entry.get("fid_gain"))
        if gain is None and fid_before is not None and fid_after is not None:
            gain = fid_before - fid_after
        var_gen = _number(entry.get("var_generated"))
        loss = _number(entry.get("variance_loss_generated"))
        if loss is None and var_real is not None and var_gen is not None:
            loss = var_real - var_gen
        rows.append(
            [
                Cell("prior (baseline)" if name == "prior" else name, name),
                _num_cell(var_gen),
                _num_cell(loss),
                _num_cell(gap, percent=True),
                _num_cell(fid_before),
                _num_cell(fid_after),
                _num_cell(gain),
            ]
        )
        # `match` closes the gap by construction; it is discussed apart from the real remedies.
        if name not in ("prior", "match") and gap is not None and (best is None or gap > best[1]):
            best = (name, gap)
    sentences = []
    var_base = _number(baseline.get("var_generated"))
    if var_real is not None and var_base is not None:
        sentences.append(
            f"With the plain prior sampler, generated images keep {_percent(var_base, var_real)} "
            f"of the real variance: a gap of {fmt(var_real - var_base)}."
        )
    if best is not None:
        entry = methods[best[0]]
        text = f"The remedy that closes most of it is {best[0]}: {best[1]:.0%} of the gap"
        before, after = _number(entry.get("fid_before")), _number(entry.get("fid_after"))
        if before is not None and after is not None:
            text += f", with FID going from {fmt(before)} to {fmt(after)}"
        sentences.append(text + ".")
    if "match" in methods:
        sentences.append(
            "Output variance matching (match) calibrates pixel statistics and closes the gap by "
            "construction; judge it by the FID column."
        )
    reason = baseline.get("fid_reason")
    notes = []
    if reason and _fid_value(baseline.get("fid")) is None:
        notes.append(f"FID not computed: {reason}")
    table = Table(
        columns=columns,
        rows=rows,
        sortable=True,
        id="remedies",
        numeric_columns=[False] + [True] * (len(columns) - 1),
    )
    return {"table": table, "sentences": sentences, "notes": notes}


def _settings_section(
    settings: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    spec_text: str | None,
) -> dict[str, Any]:
    """What produced the numbers: the key facts first, then every recorded setting."""
    settings = dict(settings or {})
    train = dict(config.get("train") or {}) if isinstance(config, dict) else {}
    merged = {**train, **settings}
    key_facts = []
    for label, keys in (
        ("command", ("command", "argv", "cli")),
        ("seed", ("seed",)),
        ("data set", ("dataset", "data")),
        ("split", ("split",)),
        ("model family", ("family", "model_family")),
        ("latent size", ("latent", "latent_dim")),
        ("epochs", ("epochs",)),
        ("device", ("device",)),
        ("varloss version", ("varloss_version", "version")),
    ):
        for key in keys:
            value = merged.get(key)
            if value is None and isinstance(config, dict) and key in config:
                value = config.get(key)
            if value not in (None, "", []):
                if isinstance(value, list | tuple):
                    value = " ".join(map(str, value))
                key_facts.append((label, str(value)))
                break
        else:
            if label == "command":
                equivalent = _train_command(train)
                key_facts.append(
                    ("command (equivalent)", equivalent) if equivalent else (label, "not recorded")
                )
    versions = merged.get("versions") or merged.get("package_versions")
    recorded_versions = (
        [(str(k), str(v)) for k, v in versions.items()] if isinstance(versions, dict) else []
    )
    flat = [(k, v) for k, v in _flatten(settings).items() if not k.startswith("versions.")]
    model = {}
    if isinstance(config, dict) and config.get("model"):
        model = _flatten(config["model"])
    return {
        "key_facts": key_facts,
        "versions": recorded_versions,
        "all": flat,
        "model": list(model.items()),
        "train": list(_flatten(train).items()) if train and not settings else [],
        "spec": spec_text,
    }


# TrainConfig field -> `varloss train` option, in the order the CLI lists them.
_TRAIN_OPTIONS = (
    ("family", "--model"),
    ("dataset", "--dataset"),
    ("epochs", "--epochs"),
    ("latent", "--latent"),
    ("seed", "--seed"),
    ("loss", "--loss"),
    ("limit", "--limit"),
    ("eval_limit", "--eval-limit"),
    ("batch_size", "--batch-size"),
    ("lr", "--lr"),
    ("schedule", "--schedule"),
    ("device", "--device"),
    ("data_path", "--data-path"),
    ("out", "--out"),
)


def _train_command(train: Mapping[str, Any]) -> str | None:
    """The `varloss train` command line that reproduces a recorded TrainConfig, or None."""
    import shlex

    if not train.get("family") or not train.get("dataset"):
        return None
    argv = ["varloss", "train"]
    for key, option in _TRAIN_OPTIONS:
        value = train.get(key)
        if value is not None:
            argv += [option, str(value)]
    for key, value in (train.get("hyper") or {}).items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    argv += [flag for key, flag in (("compile", "--compile"), ("bf16", "--bf16")) if train.get(key)]
    return shlex.join(argv)


def _correct_command(settings: Mapping[str, Any], directory: Path) -> str | None:
    """The `varloss correct` command line for a correct folder's recorded settings, or None.

    Covers the run, methods, seed, fitting limit, sample count, FID switch and output folder;
    per-sampler parameters (e.g. second-stage steps) are in the recorded sampler settings.
    """
    import shlex

    run_dir, methods = settings.get("run_dir"), settings.get("methods")
    if not run_dir or not methods:
        return None
    argv = ["varloss", "correct", str(run_dir), "--method", ",".join(map(str, methods))]
    if settings.get("seed") is not None:
        argv += ["--seed", str(settings["seed"])]
    if settings.get("train_limit") is not None:
        argv += ["--limit", str(settings["train_limit"])]
    n_gen, n_test = settings.get("n_generated"), settings.get("n_test")
    if n_gen is not None and n_gen != n_test:
        argv += ["--n-samples", str(n_gen)]
    if "fid_features" in settings and not settings["fid_features"]:
        argv.append("--no-fid")
    if directory.resolve() != (Path(run_dir) / "correct").resolve():
        argv += ["--out", str(directory)]
    return shlex.join(argv)


def _rendered_by(command: str | None) -> list[tuple[str, str]]:
    from importlib.metadata import PackageNotFoundError, version

    rows = [
        ("rendered at", _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("command", command or "varloss.report.write_report (Python API)"),
        ("python", platform.python_version()),
        ("platform", platform.platform()),
    ]
    for package in _PACKAGES:
        try:
            rows.append((package, version(package)))
        except PackageNotFoundError:
            continue
    return rows


# ---------------------------------------------------------------------------------------------
# study helpers


def _study_spec(directory: Path) -> tuple[str | None, dict[str, Any]]:
    for name in ("study.yaml", "spec.yaml", "study.yml", "spec.yml", "study.json", "spec.json"):
        path = directory / name
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            try:
                if path.suffix == ".json":
                    parsed = json.loads(text)
                else:
                    import yaml

                    parsed = yaml.safe_load(text)
            except Exception:  # the raw text is still worth showing
                parsed = {}
            return text, parsed if isinstance(parsed, dict) else {}
    return None, {}


def _fit_rows(fit: Mapping[str, Any]) -> Table | None:
    """fit.json as a table: one row per fitted relation (reconstructed, generated, origin...)."""
    fits: dict[str, dict[str, Any]] = {}
    if {"slope", "r2"} <= set(fit):
        fits["reconstructed"] = dict(fit)
    for key, value in fit.items():
        if isinstance(value, dict) and ("slope" in value or "r2" in value):
            fits[key] = value
        elif isinstance(value, dict):
            for inner_key, inner in value.items():
                if isinstance(inner, dict) and "slope" in inner:
                    fits[f"{key} {inner_key}"] = inner
    if not fits:
        return None
    columns = ["fit", "slope", "intercept", "R²", "n"]
    rows = []
    for name, values in fits.items():
        rows.append(
            [
                Cell(name.replace("_", " ")),
                _num_cell(values.get("slope")),
                _num_cell(values.get("intercept")),
                _num_cell(values.get("r2")),
                _num_cell(values.get("n")),
            ]
        )
    return Table(columns=columns, rows=rows, id="fit", numeric_columns=[False] + [True] * 4)


def _primary_fit(fit: Mapping[str, Any]) -> dict[str, Any] | None:
    if {"slope", "r2"} <= set(fit):
        return dict(fit)
    for key in ("reconstructed", "reconstruction", "variance_loss_reconstructed"):
        if isinstance(fit.get(key), dict) and "slope" in fit[key]:
            return fit[key]
    return None


def _explain_study(rows: list[dict[str, Any]], fit: Mapping[str, Any]) -> list[str]:
    sentences = []
    if rows:
        families = sorted({str(r.get("family")) for r in rows if r.get("family")})
        datasets = sorted({str(r.get("dataset")) for r in rows if r.get("dataset")})
        sentences.append(
            f"{len(rows)} VAEs were trained ({', '.join(families) or 'unknown families'} on "
            f"{', '.join(datasets) or 'unknown data'}); each point compares the variance the "
            "model loses with its reconstruction error."
        )
    primary = _primary_fit(fit)
    if primary is not None and _number(primary.get("slope")) is not None:
        slope = float(primary["slope"])
        r2 = _number(primary.get("r2"))
        text = (
            f"A least-squares line through the reconstructions gives variance loss ≈ "
            f"{fmt(slope, 3)} × MSE"
        )
        intercept = _number(primary.get("intercept"))
        if intercept is not None:
            text += f" {'+' if intercept >= 0 else '-'} {fmt(abs(intercept), 3)}"
        if r2 is not None:
            text += f" (R² = {r2:.3f})"
        sentences.append(text + ".")
        if 0.8 <= slope <= 1.25 and (r2 is None or r2 >= 0.9):
            sentences.append(
                "The slope is close to 1: across architectures, the variance a VAE loses is "
                "about its reconstruction error, as the decomposition MSE - bias² + covariance "
                "term predicts when bias and covariance are small."
            )
        else:
            sentences.append(
                "The slope is away from 1 or the fit is loose: look at the decomposition panel "
                "and the bias² and covariance columns to see which runs depart and why."
            )
    return sentences


def _results_table(rows: list[dict[str, Any]], directory: Path) -> Table | None:
    if not rows:
        return None
    columns = list(rows[0].keys())
    numeric = []
    for column in columns:
        values = [r.get(column) for r in rows]
        numeric.append(all(_number(v) is not None for v in values if v not in (None, "")))
    table_rows = []
    for row in rows:
        cells = []
        for column, is_numeric in zip(columns, numeric, strict=True):
            value = row.get(column)
            if is_numeric and value not in (None, ""):
                cells.append(_num_cell(value))
            else:
                text = "" if value is None else str(value)
                link = None
                if column in ("run_id", "run", "id") and text:
                    candidate = directory / "runs" / text / REPORT_NAME
                    if candidate.is_file():
                        link = f"runs/{text}/{REPORT_NAME}"
                cells.append(Cell(text, text, link=link))
        table_rows.append(cells)
    return Table(
        columns=columns, rows=table_rows, sortable=True, id="results", numeric_columns=numeric
    )


def _run_grids(directory: Path, rows: list[dict[str, Any]]) -> list[Figure]:
    runs = directory / "runs"
    if not runs.is_dir():
        return []
    by_id = {str(r.get("run_id") or r.get("run") or r.get("id")): r for r in rows}
    figures = []
    for run in sorted(p for p in runs.iterdir() if (p / "samples.png").is_file()):
        if len(figures) >= _MAX_RUN_GRIDS:
            break
        row = by_id.get(run.name, {})
        parts = []
        for key, label in (("mse", "MSE"), ("variance_loss_reconstructed", "variance loss")):
            if _number(row.get(key)) is not None:
                parts.append(f"{label} {fmt(row[key])}")
        figures.append(
            _file_figure(
                run / "samples.png",
                title=run.name,
                caption=", ".join(parts),
                alt=f"samples of run {run.name}",
            )
        )
    return figures


_MAX_STUDY_MAPS = 24


def _study_maps_figure(directory: Path, rows: list[dict[str, Any]]) -> Figure | None:
    """Per-pixel variance maps of every run with a maps.npz: one row per run, shared scales.

    Columns: variance of real, reconstructed and generated images, then real minus
    reconstructed and real minus generated; one colour bar for the variances and one for the
    differences, so rows compare directly. Rows follow results.csv (at most 24).
    """
    runs = directory / "runs"
    if not runs.is_dir():
        return None
    order = [str(r.get("run_id") or "") for r in rows]
    by_id = {name: r for name, r in zip(order, rows, strict=True)}
    folders = sorted(
        (p for p in runs.iterdir() if (p / MAPS_NAME).is_file()),
        key=lambda p: (order.index(p.name) if p.name in by_id else len(order), p.name),
    )[:_MAX_STUDY_MAPS]
    labels = (("var_real", "real"), ("var_reconstructed", "recon."), ("var_generated", "gen."))
    entries = []
    for folder in folders:
        maps, _ = _load_maps(folder)
        if "var_real" not in maps:
            continue
        images = {key: map_image(maps[key])[0] for key, _ in labels if key in maps}
        real = images["var_real"]
        diffs = {
            key: real - image
            for key, image in images.items()
            if key != "var_real" and image.shape == real.shape
        }
        row = by_id.get(folder.name, {})
        name = ", ".join(str(row[k]) for k in ("family", "dataset") if row.get(k)) or folder.name
        entries.append((name, images, diffs))
    if not entries:
        return None
    variance_max = max(float(np.max(v)) for _, images, _ in entries for v in images.values())
    diff_max = max(
        (float(np.max(np.abs(d))) for _, _, diffs in entries for d in diffs.values()), default=0
    )
    columns = [(key, f"var, {label}", False) for key, label in labels]
    columns += [(key, f"real - {label}", True) for key, label in labels[1:]]
    plt = pyplot()
    fig, axes = plt.subplots(
        len(entries),
        len(columns),
        figsize=(1.45 * len(columns) + 0.3, 1.45 * len(entries) + 1.5),
        dpi=100,
        squeeze=False,
    )
    shown = {False: None, True: None}
    for r, (name, images, diffs) in enumerate(entries):
        for c, (key, title, is_diff) in enumerate(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = (diffs if is_diff else images).get(key)
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if image is None:
                ax.axis("off")
                continue
            shown[is_diff] = ax.imshow(
                image,
                cmap="RdBu_r" if is_diff else "viridis",
                vmin=-(diff_max or 1.0) if is_diff else 0.0,
                vmax=(diff_max or 1.0) if is_diff else (variance_max or 1.0),
                aspect="equal" if image.shape[0] > 1 else "auto",
                interpolation="nearest",
            )
    bottom = 0.85 / fig.get_figheight()  # room for the colour bars, in figure fractions
    fig.tight_layout(rect=(0, bottom, 1, 1))
    # Horizontal colour bars under their columns: variances, then differences.
    for is_diff, label in ((False, "variance"), (True, "real - other (variance lost)")):
        spans = [c for c, column in enumerate(columns) if column[2] == is_diff]
        if shown[is_diff] is None:
            continue
        left = axes[-1][spans[0]].get_position().x0
        right = axes[-1][spans[-1]].get_position().x1
        bar_axis = fig.add_axes((left, 0.62 * bottom, right - left, 0.12 * bottom))
        bar = fig.colorbar(shown[is_diff], cax=bar_axis, orientation="horizontal")
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return Figure(
        title="Per-pixel variance maps of each run",
        data_uri=_png_uri(_figure_bytes(fig)),
        caption="One row per run (from its maps.npz): the per-pixel variance across test "
        "images of real, reconstructed and generated images on one colour scale, then where "
        "the variance is lost (real minus reconstructed / generated, red = lost) on another.",
        alt="per-pixel variance maps of every run in the study",
    )


def _study_scatter(rows: list[dict[str, Any]], fit: Mapping[str, Any]) -> Figure | None:
    """The study's figure (`varloss.study.plot_study`) drawn from results.csv, for a study folder
    that holds no figure.png."""
    import tempfile

    from varloss.study import plot_study

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = plot_study(rows, fit, Path(folder) / "figure.png")
        except (ValueError, KeyError, TypeError):
            return None
        figure = _file_figure(
            path,
            title="Variance loss against MSE",
            caption="Drawn from results.csv (the study saved no figure.png). One point per run, "
            "coloured by family; filled markers: reconstructions, hollow: generated samples; "
            "dashed: y = x.",
            alt="scatter of variance loss against MSE by architecture family",
        )
    figure.scroll_min_width = 760
    return figure


# ---------------------------------------------------------------------------------------------
# figures


def _figure_bytes(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, metadata={"Software": None})
    pyplot().close(fig)
    return buffer.getvalue()


def _maps_figure(maps: Mapping[str, np.ndarray], note: str | None) -> Figure:
    """Per-pixel variance maps (shared colour scale) and their differences, with colour bars.

    Drawn twice with `varloss.figures.variance_maps_figure`: wide (variances in one row,
    differences below) and narrow (two columns) for phones; the page picks one with <picture>.
    """
    panels, diffs, folds = variance_map_panels(maps)
    caption = (
        "Per-pixel variance across images (one colour scale for all sets), then where the "
        "variance is lost: real minus reconstructed or generated (red = lost)."
    )
    if folds:
        caption += " Maps shown as " + ", ".join(sorted(folds)) + "."
    if note:
        caption += " " + note
    return Figure(
        title="Per-pixel variance maps",
        data_uri=_png_uri(_figure_bytes(variance_maps_figure(maps))),
        narrow_uri=(
            _png_uri(_figure_bytes(variance_maps_figure(maps, columns=2)))
            if len(panels) + len(diffs) > 2
            else None
        ),
        caption=caption,
        alt="per-pixel variance maps of real, reconstructed and generated images",
    )


def _loss_curves(path: Path) -> Figure | None:
    """Training curves from history.csv: the loss and its terms, and the reconstruction MSE."""
    rows = _read_csv(path)
    if not rows or "epoch" not in rows[0]:
        return None
    epochs = [_number(r.get("epoch")) for r in rows]
    if any(e is None for e in epochs):
        return None
    left = [c for c in ("loss", "reconstruction", "kl") if c in rows[0]]
    right = [c for c in ("mse",) if c in rows[0]]
    panels = [p for p in (left, right) if p]
    if not panels:
        return None
    marker = "o" if len(rows) < 30 else None

    def draw(stacked: bool) -> bytes:
        plt = pyplot()
        from matplotlib.ticker import MaxNLocator

        shape = (len(panels), 1) if stacked else (1, len(panels))
        size = (5.0, 3.2 * len(panels)) if stacked else (5.0 * len(panels), 3.4)
        fig, axes = plt.subplots(*shape, figsize=size, dpi=100, squeeze=False)
        for ax, columns in zip(axes.reshape(-1), panels, strict=True):
            for column in columns:
                values = [_number(r.get(column)) for r in rows]
                ax.plot(
                    epochs,
                    [np.nan if v is None else v for v in values],
                    marker=marker,
                    label=column,
                )
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            if columns is left:
                ax.set_title("loss = reconstruction + KL", fontsize=9)
                ax.set_ylabel("per-sample loss (nats)")
            else:
                ax.set_title("reconstruction MSE (training)", fontsize=9)
                ax.set_ylabel("MSE per pixel")
        fig.tight_layout()
        return _figure_bytes(fig)

    return Figure(
        title="Training curves",
        data_uri=_png_uri(draw(False)),
        narrow_uri=_png_uri(draw(True)) if len(panels) > 1 else None,
        caption=f"From history.csv ({len(rows)} epoch{'s' if len(rows) != 1 else ''}).",
        alt="training loss and MSE per epoch",
    )


# ---------------------------------------------------------------------------------------------
# maps: saved or recomputed


def _load_maps(directory: Path) -> tuple[dict[str, np.ndarray], str | None]:
    path = directory / MAPS_NAME
    if not path.is_file():
        return {}, None
    try:
        with np.load(path, allow_pickle=False) as data:
            maps = {key: np.asarray(data[key], dtype=np.float64) for key in data.files}
    except (OSError, ValueError) as error:
        return {}, f"{path.name} could not be read ({error})."
    maps = {k: v for k, v in maps.items() if k in MAP_KEYS or k.startswith("var_")}
    return maps, None


def _recompute_train_maps(
    directory: Path, report: Mapping[str, Any], config: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], str | None]:
    """Variance maps of a train run from its saved model and the test split (no maps.npz)."""
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    dataset = train.get("dataset")
    if not dataset or not (directory / "model.safetensors").is_file():
        return {}, "Variance maps: the run saved no maps.npz and no model to recompute them."
    try:
        import torch

        from varloss import data as data_module
        from varloss.measure import measure
        from varloss.models import load_model
    except ImportError as error:
        return {}, f"Variance maps not recomputed: {error}."
    try:
        model = load_model(directory).eval()
        test = data_module.load(dataset, "test", data_path=train.get("data_path"))
        images = test.images
        seed = int(train.get("seed") or 0)
        with torch.no_grad():
            reconstructed = torch.cat(
                [model.reconstruct(images[i : i + 512]) for i in range(0, len(images), 512)]
            )
            generator = torch.Generator().manual_seed(seed)
            generated = model.sample(int(images.shape[0]), generator=generator)
        result = measure(images, reconstructed=reconstructed, generated=generated)
    except Exception as error:  # the page still renders; it says why the maps are missing
        return {}, f"Variance maps could not be recomputed ({type(error).__name__}: {error})."
    maps = {k: np.asarray(v, dtype=np.float64) for k, v in result.maps.items() if k in MAP_KEYS}
    note = (
        "Recomputed from the saved model on the test split (the run saved no maps.npz); "
        "generated samples redrawn with seed "
        f"{seed}, so their map may differ slightly from the one behind the table."
    )
    expected = _number(report.get("var_real"))
    if expected is not None and "var_real" in maps:
        got = float(maps["var_real"].mean())
        if not math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-12):
            note += f" Note: the recomputed real variance {fmt(got)} differs from {fmt(expected)}."
    return maps, note


# ---------------------------------------------------------------------------------------------
# rendering


def _render(context: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(
        loader=PackageLoader("varloss", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["fmt"] = fmt
    css = environment.loader.get_source(environment, "report.css")[0]
    defaults = {
        "subtitle": "",
        "notices": [],
        "sentences": [],
        "headline": None,
        "maps": None,
        "grids": [],
        "curves": None,
        "correct": None,
        "study": None,
        "settings": None,
        "links": [],
        "source": None,
    }
    return environment.get_template("report.html").render(**{**defaults, **context, "css": css})


# ---------------------------------------------------------------------------------------------
# small readers and helpers


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error.msg}).") from None
    except OSError as error:
        raise InputError(f"{path} could not be read ({error.strerror}).") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


def _read_csv(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not a readable CSV file ({error}).") from None


def _find_measure_json(directory: Path) -> Path | None:
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and "var_real" in data:
            return path
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _num_cell(value: Any, percent: bool = False) -> Cell:
    number = _number(value)
    if number is None:
        return Cell("–", None, numeric=True)
    if percent:
        return Cell(f"{number:.1%}", number, numeric=True)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return Cell(value.strip(), number, numeric=True)
    return Cell(fmt(value if not isinstance(value, str) else number), number, numeric=True)


def _percent(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "–"


def _fid_value(fid: Any) -> float | None:
    if isinstance(fid, dict):
        for key in ("fid", "value", "frechet_distance"):
            if _number(fid.get(key)) is not None:
                return _number(fid[key])
        return None
    return _number(fid)


def _nested(mapping: Mapping[str, Any], *keys: str) -> Any:
    value: Any = mapping
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _first_str(mapping: Mapping[str, Any], key: str) -> str | None:
    """`mapping[key]` or `mapping[...][key]` one level down, when it is a string."""
    if isinstance(mapping.get(key), str):
        return mapping[key]
    for value in mapping.values():
        if isinstance(value, Mapping) and isinstance(value.get(key), str):
            return value[key]
    return None


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}{key}." if prefix or key else ""))
        if not value and prefix:
            out[prefix.rstrip(".")] = "{}"
        return out
    text = json.dumps(value) if isinstance(value, list | tuple) and len(str(value)) < 400 else value
    out[prefix.rstrip(".")] = "–" if text is None else str(text)
    return out


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


def _file_figure(path: Path, *, title: str, caption: str = "", alt: str = "") -> Figure:
    """Embed an image file; small pixel grids get an integer upscale so they stay legible."""
    data = path.read_bytes()
    width = None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        natural = int.from_bytes(data[16:20], "big")
        factor = min(4, 720 // natural) if natural else 1
        if factor >= 2:
            width = natural * factor
    return Figure(title=title, data_uri=_file_uri(path), caption=caption, alt=alt, width=width)


def _file_uri(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


__all__ = [
    "REPORT_NAME",
    "detect_kind",
    "explain_variance",
    "fmt",
    "render_report",
    "save_maps",
    "write_report",
]

if __name__ == "__main__":  # pragma: no cover - convenience: python -m varloss.report DIR
    print(write_report(sys.argv[1], command="python -m varloss.report " + " ".join(sys.argv[1:])))
