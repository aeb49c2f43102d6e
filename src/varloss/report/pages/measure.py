"""The page of a `varloss measure --json` output: the headline numbers, the maps, the settings."""

from __future__ import annotations

from pathlib import Path

from varloss.errors import InputError
from varloss.report.files import find_measure_json, read_maps, read_measure_json
from varloss.report.html import file_figure
from varloss.report.kinds import Context, ReportKind
from varloss.report.plots import maps_figure
from varloss.report.sections import explain_variance, headline_table, settings_section
from varloss.report.spectrum import spectrum_section
from varloss.runs import MAPS_FILE, RunFolder


def detects(directory: Path) -> bool:
    return find_measure_json(directory) is not None


def build(directory: Path, source: Path | None) -> Context:
    """Numbers from `source` (or the folder's first measure JSON), maps from maps.npz or, without
    it, the folder's PNG files (e.g. `varloss measure --maps maps.png`)."""
    path = source or find_measure_json(directory)
    report = read_measure_json(path) if path is not None else None
    if report is None:
        raise InputError(f"{path or directory} is not a `varloss measure --json` output.")
    context: Context = {
        "title": f"Variance report: {directory.name}",
        "headline": headline_table(report),
        "sentences": explain_variance(report),
        "source": path.name,
    }
    maps = read_maps(RunFolder(directory), MAPS_FILE)
    if maps:
        context["maps"] = maps_figure(maps)
    else:
        context["grids"] = [
            file_figure(image, title=image.stem.replace("_", " "), alt=image.name)
            for image in sorted(directory.glob("*.png"))
            if not image.name.startswith(".")
        ]
    context["spectrum"] = spectrum_section(report)
    settings = report.get("settings") or {}
    inputs = settings.get("inputs") or {}
    context["settings"] = settings_section(
        [
            ("command", settings.get("command")),
            *((f"{name} images", inputs.get(name)) for name in sorted(inputs)),
            ("varloss version", settings.get("varloss_version")),
        ],
        settings,
    )
    return context


KIND = ReportKind(
    name="measure",
    description="a `varloss measure --json` file",
    detects=detects,
    build=build,
)
