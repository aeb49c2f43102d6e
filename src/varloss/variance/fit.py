"""Variance loss against MSE across runs, by least squares (float64): the study's maths.

`fit_line` fits y = slope * x + intercept, `fit_origin` y = slope * x; both report R² against
the mean, so the two can be compared (the origin fit's R² is negative when it is worse than the
mean). `bootstrap_line` gives each fit its 95% interval: the runs are resampled with replacement
(seeded), the line refitted on each resample, and the 2.5 and 97.5 percentiles of the refitted
slopes and intercepts are the interval (percentile bootstrap; fit.json records its settings).
`fitted_line` is a fit with its interval, as fit.json holds it (`varloss.records.FitRecord`).

A library module: it computes and returns; the study pipeline (`varloss.pipelines.study`) calls
it on its results rows and writes fit.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from varloss.errors import InputError

__all__ = [
    "BOOTSTRAP",
    "BootstrapInterval",
    "LineFit",
    "bootstrap_line",
    "fit_line",
    "fit_origin",
    "fitted_line",
    "r2",
]

# The bootstrap behind every *_ci95 of fit.json (recorded there as "bootstrap").
BOOTSTRAP = {"method": "percentile", "unit": "run", "resamples": 2000, "seed": 0, "level": 0.95}

Interval = tuple[float, float]


@dataclass(frozen=True)
class LineFit:
    """One fitted relation: slope, intercept (0 through the origin), R² against the mean and the
    number of finite points; with `fitted_line`, the 95% bootstrap intervals too. None where
    the points cannot give a number (too few, constant x, constant y for R²)."""

    slope: float | None
    intercept: float | None
    r2: float | None
    n: int
    slope_ci95: Interval | None = None
    intercept_ci95: Interval | None = None
    # resamples the intervals are made of; None when no bootstrap was run (or recorded)
    bootstrap_resamples_used: int | None = None


@dataclass(frozen=True)
class BootstrapInterval:
    """The 95% percentile-bootstrap intervals of a fit (None: too few points or no usable draw)."""

    slope_ci95: Interval | None
    intercept_ci95: Interval | None
    resamples_used: int


def fit_line(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> LineFit:
    """Least-squares y = slope * x + intercept (float64) with R² = 1 - SS_res / SS_tot.

    Pairs with a non-finite value are left out; fewer than 2 points or a constant x give
    None for the fitted numbers.
    """
    xs, ys = _finite_pairs(x, y)
    if xs.size < 2 or np.ptp(xs) == 0:
        return LineFit(slope=None, intercept=None, r2=None, n=int(xs.size))
    design = np.column_stack([xs, np.ones_like(xs)])
    (slope, intercept), *_ = np.linalg.lstsq(design, ys, rcond=None)
    residual = ys - (slope * xs + intercept)
    return LineFit(float(slope), float(intercept), r2(ys, residual), int(xs.size))


def fit_origin(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> LineFit:
    """Least-squares y = slope * x through the origin; R² against the mean (as for the line),
    so it can be compared with `fit_line` and is negative when the origin fit is worse than
    the mean."""
    xs, ys = _finite_pairs(x, y)
    if xs.size < 1 or not np.any(xs):
        return LineFit(slope=None, intercept=0.0, r2=None, n=int(xs.size))
    (slope,), *_ = np.linalg.lstsq(xs[:, None], ys, rcond=None)
    fitted_r2 = r2(ys, ys - slope * xs) if xs.size >= 2 else None
    return LineFit(float(slope), 0.0, fitted_r2, int(xs.size))


def fitted_line(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    through_origin: bool = False,
) -> LineFit:
    """`fit_line` (or `fit_origin`) with its `bootstrap_line` intervals (BOOTSTRAP settings)."""
    line = fit_origin(x, y) if through_origin else fit_line(x, y)
    interval = bootstrap_line(x, y, through_origin=through_origin)
    return replace(
        line,
        slope_ci95=interval.slope_ci95,
        intercept_ci95=interval.intercept_ci95,
        bootstrap_resamples_used=interval.resamples_used,
    )


def bootstrap_line(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    through_origin: bool = False,
    resamples: int = BOOTSTRAP["resamples"],
    seed: int = BOOTSTRAP["seed"],
) -> BootstrapInterval:
    """95% percentile-bootstrap intervals of the least-squares slope and intercept (float64).

    The (x, y) pairs (one per run; non-finite ones left out) are drawn with replacement
    `resamples` times with numpy's generator seeded by `seed`, and the line (or the line through
    the origin) is refitted on each draw in closed form. Draws whose x is constant cannot be
    fitted and are left out (`resamples_used` says how many were kept). Fewer than 3 pairs give
    None; so does the intercept through the origin (it is fixed at 0).
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise InputError(f"bootstrap resamples must be a positive integer, got {resamples!r}.")
    xs, ys = _finite_pairs(x, y)
    none = BootstrapInterval(slope_ci95=None, intercept_ci95=None, resamples_used=0)
    if xs.size < 3:
        return none
    index = np.random.default_rng(seed).integers(0, xs.size, size=(resamples, xs.size))
    bx, by = xs[index], ys[index]  # one resample per row
    if through_origin:
        keep = np.any(bx != 0, axis=1)
        slopes = np.sum(bx * by, axis=1)[keep] / np.sum(bx * bx, axis=1)[keep]
        intercepts = None
    else:
        keep = np.ptp(bx, axis=1) > 0
        bx, by = bx[keep], by[keep]
        dx = bx - bx.mean(axis=1, keepdims=True)
        slopes = np.sum(dx * (by - by.mean(axis=1, keepdims=True)), axis=1) / np.sum(dx**2, axis=1)
        intercepts = by.mean(axis=1) - slopes * bx.mean(axis=1)
    if slopes.size == 0:
        return none
    return BootstrapInterval(
        slope_ci95=_percentiles(slopes),
        intercept_ci95=_percentiles(intercepts) if intercepts is not None else None,
        resamples_used=int(slopes.size),
    )


def _percentiles(values: np.ndarray) -> Interval:
    """The central 95% of `values`: (2.5th, 97.5th) percentile (numpy's linear interpolation)."""
    low, high = np.percentile(values, [2.5, 97.5])
    return (float(low), float(high))


def r2(ys: np.ndarray, residual: np.ndarray) -> float | None:
    """1 - SS_res / SS_tot, None when y is constant (SS_tot = 0)."""
    total = float(np.sum((ys - ys.mean()) ** 2))
    if total == 0:
        return None
    return 1.0 - float(np.sum(residual**2)) / total


def _finite_pairs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    xs = np.asarray(x, dtype=np.float64).ravel()
    ys = np.asarray(y, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise ValueError(f"x and y differ in length: {xs.size} and {ys.size}")
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]
