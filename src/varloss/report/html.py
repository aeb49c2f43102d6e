"""The page's building blocks: figures, cells and tables handed to the Jinja2 template, number
formatting, data URIs, and the rendering itself.

Everything the page shows is embedded (images as base64 data URIs, the CSS inline), so the file
opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


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
    # Shown on hover (e.g. a run's full id beside its short label, why a ratio is undefined).
    title: str | None = None


@dataclass
class Table:
    """A table with a header row; `sortable` adds the inline click-to-sort script."""

    columns: list[str]
    rows: list[list[Cell]]
    sortable: bool = False
    id: str = ""
    numeric_columns: list[bool] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# numbers


def number(value: Any) -> float | None:
    """`value` as a float when it is a number or a numeric string (CSV cells), else None."""
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


def fmt(value: Any, digits: int = 4) -> str:
    """Format a number for the page: `digits` significant digits, a dash for missing values."""
    as_float = number(value)
    if as_float is None:
        return "–" if value is None else str(value)
    if as_float == 0:
        return "0"
    if not math.isfinite(as_float):
        return str(as_float)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(int(value))
    return f"{as_float:.{digits}g}"


def num_cell(value: Any, percent: bool = False) -> Cell:
    """A right-aligned numeric cell: 4 significant digits (or a percentage), the raw value kept."""
    as_float = number(value)
    if as_float is None:
        return Cell("–", None, numeric=True)
    if percent:
        return Cell(f"{as_float:.1%}", as_float, numeric=True)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return Cell(value.strip(), as_float, numeric=True)
    return Cell(fmt(value if not isinstance(value, str) else as_float), as_float, numeric=True)


# ---------------------------------------------------------------------------------------------
# images


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_uri(data: bytes) -> str:
    """PNG bytes as a data URI."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def file_figure(path: Path, *, title: str, caption: str = "", alt: str = "") -> Figure:
    """Embed an image file; small pixel grids get an integer upscale so they stay legible."""
    data = path.read_bytes()
    width = None
    if data[:8] == _PNG_SIGNATURE:
        natural = int.from_bytes(data[16:20], "big")  # IHDR width, big-endian
        factor = min(4, 720 // natural) if natural else 1
        if factor >= 2:
            width = natural * factor
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    uri = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
    return Figure(title=title, data_uri=uri, caption=caption, alt=alt, width=width)


# ---------------------------------------------------------------------------------------------
# rendering

# What every page context may leave out, with its empty value.
_DEFAULTS: dict[str, Any] = {
    "subtitle": "",
    "notices": [],
    "sentences": [],
    "headline": None,
    "maps": None,
    "spectrum": None,
    "grids": [],
    "curves": None,
    "correct": None,
    "study": None,
    "settings": None,
    "links": [],
    "source": None,
}


def render(context: dict[str, Any]) -> str:
    """The page: `varloss/templates/report.html` with the CSS inlined."""
    environment = Environment(
        loader=PackageLoader("varloss", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["fmt"] = fmt
    css = environment.loader.get_source(environment, "report.css")[0]
    return environment.get_template("report.html").render(**{**_DEFAULTS, **context, "css": css})
