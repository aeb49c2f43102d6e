"""What several commands share: the variance table and the small option parsers."""

from __future__ import annotations

import math
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from varloss._threads import AUTO, parse_threads
from varloss.errors import InputError

# --threads of train, measure, correct and study: text, so that `auto` and counts both parse;
# `parse_threads` turns it into a count or "auto" (one sentence for anything else).
THREADS_OPTION = typer.Option(
    AUTO,
    "--threads",
    help="CPU threads for torch and numpy's BLAS: auto (the faster of 1 and torch's default, "
    "timed on the first steps; recorded in the report) or a count, e.g. 1.",
)


def number(value: float | None, digits: int = 6) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _counts(report: dict) -> str:
    keys = ("n_real", "n_reconstructed", "n_generated")
    return " / ".join("—" if report.get(k) is None else str(report[k]) for k in keys)


# (row label, report key, significant digits, meaning)
VARIANCE_ROWS = [
    ("var(real)", "var_real", 6, "mean per-pixel variance across images"),
    ("var(reconstructed)", "var_reconstructed", 6, ""),
    ("var(generated)", "var_generated", 6, ""),
    (
        "variance loss, reconstructed",
        "variance_loss_reconstructed",
        6,
        "var(real) - var(reconstructed)",
    ),
    ("variance loss, generated", "variance_loss_generated", 6, "var(real) - var(generated)"),
    ("mse", "mse", 6, "reconstruction mean squared error"),
    ("bias²", "bias2", 6, "mean over pixels of (mean real - mean recon)²"),
    ("covariance term", "cov_term", 6, "2 · mean cov(recon, real - recon)"),
    ("ratio loss / mse, reconstructed", "ratio_reconstructed", 4, "= 1 - (bias² - cov term) / mse"),
    ("ratio loss / mse, generated", "ratio_generated", 4, ""),
]


# `varloss measure`'s reconstruction quality (report["quality"]), what autoencoder papers report
QUALITY_ROWS = [
    ("PSNR, reconstructed (dB)", "psnr", "mean over images, data range 1"),
    ("SSIM, reconstructed", "ssim", "mean over images, Gaussian window 11"),
    ("rFID, reconstructed", "rfid", "FID of the reconstructions against the real images"),
]


def print_variance_table(report: dict, title: str = "variance loss") -> None:
    """The measure keys of a report dict as a rich table, with the ratio variance loss / MSE and
    the report's warnings (`variance_warnings`) as its caption."""
    from varloss.variance.report import variance_warnings  # start-up cost: see cli/__init__.py

    warnings = variance_warnings(report)
    table = Table(
        title=title,
        caption="\n".join(f"warning: {text}." for text in warnings) or None,
        caption_justify="left",
        caption_style="bold yellow",
    )
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    counts = _counts(report)
    if counts != "— / — / —":
        table.add_row("n real / reconstructed / generated", counts, "")
    for label, key, digits, meaning in VARIANCE_ROWS:
        if report.get(key) is not None:
            table.add_row(label, number(report[key], digits), meaning)
    for row in _quality_rows(report.get("quality")):
        table.add_row(*row)
    Console().print(table)


def _quality_rows(quality: Any) -> list[tuple[str, str, str]]:
    """(label, value, meaning) of the reconstruction quality (`varloss measure`): the PSNR as the
    HTML page words it, `inf` where every image was reconstructed exactly (the report holds None
    and the count), the count of exact images left out where some were; the rest as recorded."""
    if not isinstance(quality, dict):
        return []
    from varloss.report.sections import psnr_row  # start-up cost: see cli/__init__.py

    rows = []
    for label, key, meaning in QUALITY_ROWS:
        value = quality.get(key)
        if key == "psnr":
            value, meaning = psnr_row(quality)
        if value is not None:
            rows.append((label, number(value, 4), meaning))
    return rows


def parse_crop(crop: str | None) -> tuple[int, ...] | None:
    """`--crop TOP,BOTTOM,LEFT,RIGHT` as integers."""
    if crop is None:
        return None
    try:
        return tuple(int(part) for part in crop.split(","))
    except ValueError:
        raise InputError(f"--crop must be TOP,BOTTOM,LEFT,RIGHT integers, got {crop!r}.") from None


def threads_option(value: str | None) -> int | str | None:
    """--threads as given on the command line: "auto" or a positive integer."""
    return parse_threads(value, "--threads")


def check_finite_options(ctx: Any) -> None:
    """Refuse infinite or NaN values of every float option of a command (`--tau inf`,
    `--lr nan`) in one sentence: the one check, run by every varloss command before its body
    (`VarlossCommand.invoke`)."""
    for param in ctx.command.params:
        value: Any = ctx.params.get(param.name)
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                opts = getattr(param, "opts", None)
                flag = max(opts, key=len) if opts else param.name
                raise InputError(f"{flag} must be a finite number, got {item}.")
