"""The per-family table of the study: the ratio variance loss / MSE of each family's runs.

One row per (family, reconstruction protocol): the number of runs (and of points, settings that
differ only in their seed counted once), the mean ratio variance_loss_reconstructed / mse over
the runs, its standard deviation (ddof = 1) and a 95% Student-t interval of the mean,
mean ± t(0.975, n - 1) · std / sqrt(n). The t-interval rather than a bootstrap: a family often
has only a handful of runs (3 seeds of one setting, say), where a percentile bootstrap is too
narrow; the t-interval treats the runs as independent draws around the family's mean ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from varloss.variance.protocol import protocol_of

__all__ = ["RATIO_INTERVAL", "family_ratios"]

RATIO_INTERVAL = "student-t 95% interval of the mean over runs"


def family_ratios(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-family table from results rows, sorted by family then protocol (float64).

    Keys of each row: family, reconstruction, n (runs with a finite ratio and MSE > 0), points,
    mean_ratio, std_ratio (None for n < 2), ratio_ci95 ([low, high], None for n < 2), interval
    (`RATIO_INTERVAL`). A row without `reconstruction` counts as `mean`.
    """
    groups: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for row in rows:
        mse, loss = _float(row.get("mse")), _float(row.get("variance_loss_reconstructed"))
        if not (math.isfinite(mse) and math.isfinite(loss) and mse > 0):
            continue
        key = (str(row.get("family")), protocol_of(row).value)
        point = str(row.get("point_id") or row.get("run_id"))
        groups.setdefault(key, []).append((loss / mse, point))
    return [
        _summary(family, protocol, groups[(family, protocol)])
        for family, protocol in sorted(groups)
    ]


def _summary(family: str, protocol: str, entries: list[tuple[float, str]]) -> dict[str, Any]:
    ratios = np.array([ratio for ratio, _ in entries], dtype=np.float64)
    n = int(ratios.size)
    mean = float(ratios.mean())
    std = interval = None
    if n >= 2:
        std = float(ratios.std(ddof=1))
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        interval = [mean - half, mean + half]
    return {
        "family": family,
        "reconstruction": protocol,
        "n": n,
        "points": len({point for _, point in entries}),
        "mean_ratio": mean,
        "std_ratio": std,
        "ratio_ci95": interval,
        "interval": RATIO_INTERVAL,
    }


def _float(value: Any) -> float:
    """A results cell as a float; empty or unreadable cells are NaN (left out)."""
    if value is None or value == "" or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
