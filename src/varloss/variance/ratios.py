"""The per-family table of the study: the ratio variance loss / MSE of each family's runs.

One row per (family, reconstruction protocol): the number of runs (and of points, settings that
differ only in their seed counted once), the mean ratio variance_loss_reconstructed / mse over
the runs, its standard deviation (ddof = 1) and a 95% Student-t interval of the mean,
mean ± t(0.975, n - 1) · std / sqrt(n). The t-interval rather than a bootstrap: a family often
has only a handful of runs (3 seeds of one setting, say), where a percentile bootstrap is too
narrow; the t-interval treats the runs as independent draws around the family's mean ratio.

A library module: the study pipeline computes the table into fit.json, and the study page reads
it from there (`varloss.records.FitRecord.family_ratios`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import stats

__all__ = ["RATIO_INTERVAL", "FamilyRatio", "RatioRun", "family_ratios"]

RATIO_INTERVAL = "student-t 95% interval of the mean over runs"


class RatioRun(Protocol):
    """What the table needs of a run (a `varloss.records.ResultsRow` has it)."""

    @property
    def family(self) -> str: ...
    @property
    def reconstruction(self) -> str: ...
    @property
    def point(self) -> str: ...
    @property
    def mse(self) -> float | None: ...
    @property
    def variance_loss_reconstructed(self) -> float | None: ...


@dataclass(frozen=True)
class FamilyRatio:
    """One row of the table: n runs with a finite ratio and MSE > 0 over `points` points; the
    standard deviation and the interval are None for n < 2."""

    family: str
    reconstruction: str
    n: int
    points: int
    mean_ratio: float
    std_ratio: float | None
    ratio_ci95: tuple[float, float] | None
    interval: str = RATIO_INTERVAL


def family_ratios(runs: Iterable[RatioRun]) -> list[FamilyRatio]:
    """The per-family table of `runs`, sorted by family then protocol (float64). Runs whose MSE
    or variance loss is missing or not finite, or whose MSE is not positive, are left out."""
    groups: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for run in runs:
        mse, loss = run.mse, run.variance_loss_reconstructed
        if mse is None or loss is None or not (math.isfinite(mse) and math.isfinite(loss)):
            continue
        if mse <= 0:
            continue
        key = (str(run.family), str(run.reconstruction))
        groups.setdefault(key, []).append((loss / mse, str(run.point)))
    return [
        _summary(family, protocol, groups[(family, protocol)])
        for family, protocol in sorted(groups)
    ]


def _summary(family: str, protocol: str, entries: list[tuple[float, str]]) -> FamilyRatio:
    ratios = np.array([ratio for ratio, _ in entries], dtype=np.float64)
    n = int(ratios.size)
    mean = float(ratios.mean())
    std = interval = None
    if n >= 2:
        std = float(ratios.std(ddof=1))
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        interval = (mean - half, mean + half)
    return FamilyRatio(
        family=family,
        reconstruction=protocol,
        n=n,
        points=len({point for _, point in entries}),
        mean_ratio=mean,
        std_ratio=std,
        ratio_ci95=interval,
    )
