"""`varloss report DIR`: one self-contained HTML page of a varloss output folder."""

from __future__ import annotations

import typer

from varloss.cli.app import command, command_line


@command("report")
def report_command(
    directory: str = typer.Argument(
        ..., help="A varloss output folder: train run, correct folder, study, or measure JSON."
    ),
) -> None:
    """Write DIR/report.html: one self-contained page of numbers, maps, images and settings."""
    from varloss.report import write_report  # start-up cost: see cli/__init__.py

    path = write_report(directory, command=command_line())
    typer.echo(str(path))
