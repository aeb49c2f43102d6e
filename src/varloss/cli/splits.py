"""The tables `varloss measure --spectrum / --pca` print: the measure numbers per frequency band
and per principal direction, with kept fractions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

# (column header, key of a band / component object)
_COLUMNS = (
    ("var\nreal", "var_real"),
    ("kept\nrecon", "kept_reconstructed"),
    ("kept\ngen", "kept_generated"),
    ("loss\nrecon", "variance_loss_reconstructed"),
    ("loss\ngen", "variance_loss_generated"),
    ("\nmse", "mse"),
    ("\nbias²", "bias2"),
    ("cov\nterm", "cov_term"),
)


def _cell(value: float | None, whole: float | None) -> str:
    """A kept fraction as a percentage, anything else as a percentage of the real variance."""
    if value is None or not whole:
        return "—"
    return f"{value / whole:.1%}"


def _table(
    title: str, first: str, rows: list[tuple[str, Mapping[str, Any]]], var_real: float
) -> Table:
    present = [(h, k) for h, k in _COLUMNS if any(row.get(k) is not None for _, row in rows)]
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column(first, no_wrap=True, min_width=10)
    for header, _ in present:
        table.add_column(header, justify="right", no_wrap=True, min_width=6)
    for label, row in rows:
        cells = [_cell(row.get(k), 1.0 if k.startswith("kept") else var_real) for _, k in present]
        table.add_row(label, *cells)
    return table


def _print(table: Table) -> None:
    # nine columns: at least 100 characters wide (wider than a pipe's default of 80)
    console = Console()
    Console(width=max(console.width, 100)).print(table)


def print_spectrum_table(spectrum: Mapping[str, Any]) -> None:
    """One row per radial frequency band (values are each band's share of the totals)."""
    # start-up cost: see varloss/cli/__init__.py
    from varloss.figures.spectrum import high_frequency_phrase

    rows = [(f"{band['lo']:.2f}–{band['hi']:.2f}", band) for band in spectrum["bands"]]
    rows.append(("total", spectrum["totals"]))
    parts = [
        phrase
        for kind in ("reconstructed", "generated")
        if (phrase := high_frequency_phrase(spectrum, kind, f"the {kind} images")) is not None
    ]
    title = "by radial frequency (cycles/pixel), % of var(real); kept: % of the band's"
    if parts:
        title += "; " + "; ".join(parts)
    _print(_table(title, "band", rows, spectrum["totals"]["var_real"]))


def print_pca_table(pca: Mapping[str, Any]) -> None:
    """One row per principal direction of the real data, then the rest and the totals."""
    rows = [(str(c["index"]), c) for c in pca["components"]]
    rows += [(f"rest ({pca['n_features'] - pca['k']})", pca["rest"]), ("total", pca["totals"])]
    title = "by principal direction of the real data, % of var(real); kept: % of the pc's"
    _print(_table(title, "pc", rows, pca["totals"]["var_real"]))
