"""The figure backend and writer every varloss figure goes through.

`pyplot()` gives matplotlib on the Agg backend (no display needed); `save_figure` writes a figure
atomically (`varloss._io.atomic_path`) and closes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from varloss._io import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (headless).

    Imported on first use, not at module import: `import matplotlib.pyplot` took 1.1 s on the
    2-core development machine, and most imports of varloss (measure, the metric, the CLI's
    --help) draw no figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int | None = None) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi or fig.dpi)
    finally:
        pyplot().close(fig)
    return path
