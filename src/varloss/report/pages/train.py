"""The page of a `varloss train` run: what train writes (report.json, config.json, maps.npz,
samples.png, history.csv) and, when `varloss correct` ran inside it, the remedies."""

from __future__ import annotations

from pathlib import Path

from varloss.records import read_report
from varloss.report.files import embed, read_maps, read_object
from varloss.report.kinds import Context, ReportKind
from varloss.report.pages.correct import remedies_section
from varloss.report.plots import loss_curves, maps_figure
from varloss.report.sections import (
    explain_variance,
    headline_table,
    settings_section,
)
from varloss.report.spectrum import spectrum_section
from varloss.runs import (
    CONFIG_FILE,
    CORRECT_DIR,
    HISTORY_FILE,
    HTML_FILE,
    MAPS_FILE,
    REPORT_FILE,
    SAMPLES_FILE,
    RunFolder,
)
from varloss.train_config import equivalent_command
from varloss.variance.protocol import Reconstruction


def detects(directory: Path) -> bool:
    return (directory / REPORT_FILE).is_file() and (directory / CONFIG_FILE).is_file()


def build(directory: Path, source: Path | None) -> Context:
    folder = RunFolder(directory)
    record = read_report(folder)
    report, settings, train = record.data, record.settings, record.train
    config = read_object(folder, CONFIG_FILE)
    context: Context = {
        "title": f"VAE run: {train.get('family', 'model')} on {train.get('dataset', 'data')}",
        "subtitle": directory.name,
        "headline": headline_table(report),
        "sentences": explain_variance(report),
        "notices": [],
    }
    maps = read_maps(folder, MAPS_FILE)
    if maps:
        context["maps"] = maps_figure(maps)
    else:
        context["notices"].append(
            f"No variance maps: the run folder has no {MAPS_FILE} (varloss train writes it at "
            "the end of training; an older or interrupted run may lack it)."
        )
    context["spectrum"] = spectrum_section(report)
    if folder.exists(HISTORY_FILE):
        context["curves"] = loss_curves(folder.read_csv(HISTORY_FILE))
    samples = embed(
        folder,
        SAMPLES_FILE,
        title="Samples",
        caption=samples_caption(record.reconstruction),
        alt="grid of real, reconstructed and generated images",
    )
    context["grids"] = [samples] if samples else []
    _add_remedies(context, directory / CORRECT_DIR)
    evaluation = record.evaluation
    context["settings"] = settings_section(
        [
            ("command", settings.get("command")),
            (
                "command (equivalent)",
                None if settings.get("command") else equivalent_command(train),
            ),
            ("seed", train.get("seed")),
            ("data set", train.get("dataset")),
            ("split", evaluation.get("split")),
            ("model family", train.get("family")),
            ("latent size", train.get("latent")),
            ("epochs", train.get("epochs")),
            ("device", settings.get("device")),
            ("varloss version", (settings.get("versions") or {}).get("varloss")),
        ],
        settings,
        versions=settings.get("versions"),
        model=config.get("model"),
    )
    return context


def samples_caption(protocol: Reconstruction) -> str:
    """The samples grid's caption: the reconstructions as the run's protocol made them."""
    return (
        f"Rows: real test images, their reconstructions ({protocol.description}: the "
        f"`{protocol.value}` protocol this run was measured with), and samples decoded from "
        "the prior."
    )


def _add_remedies(context: Context, correct_dir: Path) -> None:
    """The remedies table and corrected samples of RUN/correct, when `varloss correct` ran."""
    correct = RunFolder(correct_dir)
    if not correct.exists(REPORT_FILE):
        return
    report = read_object(correct, REPORT_FILE)
    context["correct"] = remedies_section(report, correct.file(REPORT_FILE))
    if correct.exists(HTML_FILE):
        context["links"] = [("Remedies page", f"{CORRECT_DIR}/{HTML_FILE}")]
    samples = embed(
        correct,
        SAMPLES_FILE,
        title="Corrected samples",
        caption="One row per sampler: the plain prior (baseline) and each remedy, from the "
        "same seeded noise.",
        alt="grid of samples from each variance remedy",
    )
    if samples:
        context["grids"].append(samples)


KIND = ReportKind(
    name="train",
    description="report.json and config.json from `varloss train`",
    detects=detects,
    build=build,
)
