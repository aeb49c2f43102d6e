"""fit.json: variance loss against MSE across the study's runs, by least squares (float64).

`fit_line` fits y = slope * x + intercept, `fit_origin` y = slope * x; both report R² against
the mean, so the two can be compared (the origin fit's R² is negative when it is worse than the
mean). `bootstrap_line` gives each fit its 95% interval: the runs are resampled with replacement
(seeded), the line refitted on each resample, and the 2.5 and 97.5 percentiles of the refitted
slopes and intercepts are the interval (percentile bootstrap; fit.json records its settings).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from varloss.errors import InputError
from varloss.pipelines.study.ratios import family_ratios
from varloss.pipelines.study.spec import StudySpec
from varloss.variance.protocol import protocol_of

__all__ = ["BOOTSTRAP", "bootstrap_line", "fit_line", "fit_origin", "fit_results", "r2"]

# The bootstrap behind every *_ci95 of fit.json (recorded there as "bootstrap").
BOOTSTRAP = {"method": "percentile", "unit": "run", "resamples": 2000, "seed": 0, "level": 0.95}


def fit_line(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Least-squares y = slope * x + intercept (float64) with R² = 1 - SS_res / SS_tot.

    Pairs with a non-finite value are left out; fewer than 2 points or a constant x give
    None for the fitted numbers.
    """
    xs, ys = _finite_pairs(x, y)
    result: dict[str, Any] = {"slope": None, "intercept": None, "r2": None, "n": int(xs.size)}
    if xs.size < 2 or np.ptp(xs) == 0:
        return result
    design = np.column_stack([xs, np.ones_like(xs)])
    (slope, intercept), *_ = np.linalg.lstsq(design, ys, rcond=None)
    residual = ys - (slope * xs + intercept)
    result.update(slope=float(slope), intercept=float(intercept), r2=r2(ys, residual))
    return result


def fit_origin(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Least-squares y = slope * x through the origin; R² against the mean (as for the line),
    so it can be compared with `fit_line` and is negative when the origin fit is worse than
    the mean."""
    xs, ys = _finite_pairs(x, y)
    result: dict[str, Any] = {"slope": None, "intercept": 0.0, "r2": None, "n": int(xs.size)}
    if xs.size < 1 or not np.any(xs):
        return result
    (slope,), *_ = np.linalg.lstsq(xs[:, None], ys, rcond=None)
    result.update(slope=float(slope), r2=r2(ys, ys - slope * xs) if xs.size >= 2 else None)
    return result


def bootstrap_line(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    through_origin: bool = False,
    resamples: int = BOOTSTRAP["resamples"],
    seed: int = BOOTSTRAP["seed"],
) -> dict[str, Any]:
    """95% percentile-bootstrap intervals of the least-squares slope and intercept (float64).

    The (x, y) pairs (one per run; non-finite ones left out) are drawn with replacement
    `resamples` times with numpy's generator seeded by `seed`, and the line (or the line through
    the origin) is refitted on each draw in closed form. Draws whose x is constant cannot be
    fitted and are left out (`bootstrap_resamples_used` says how many were kept). Fewer than 3
    pairs give None; so does the intercept through the origin (it is fixed at 0).
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise InputError(f"bootstrap resamples must be a positive integer, got {resamples!r}.")
    xs, ys = _finite_pairs(x, y)
    result: dict[str, Any] = {
        "slope_ci95": None, "intercept_ci95": None, "bootstrap_resamples_used": 0,
    }  # fmt: skip
    if xs.size < 3:
        return result
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
        return result
    result.update(slope_ci95=_percentiles(slopes), bootstrap_resamples_used=int(slopes.size))
    if intercepts is not None:
        result["intercept_ci95"] = _percentiles(intercepts)
    return result


def _percentiles(values: np.ndarray) -> list[float]:
    """The central 95% of `values`: [2.5th, 97.5th] percentile (numpy's linear interpolation)."""
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


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


def fit_results(rows: Sequence[Mapping[str, Any]], spec: StudySpec | None = None) -> dict[str, Any]:
    """fit.json: variance loss against MSE for reconstructions and generated samples, by least
    squares with an intercept and through the origin, each with its bootstrap interval
    (`bootstrap_line`), the per-family ratio table (`family_ratios`) and what produced them."""

    def column(name: str) -> np.ndarray:
        return np.array([_float(row.get(name)) for row in rows], dtype=np.float64)

    mse = column("mse")
    reconstructed = column("variance_loss_reconstructed")
    generated = column("variance_loss_generated")
    fit: dict[str, Any] = {
        "x": "mse",
        "y": "variance_loss_reconstructed / variance_loss_generated",
        "reconstructed": {**fit_line(mse, reconstructed), **bootstrap_line(mse, reconstructed)},
        "generated": {**fit_line(mse, generated), **bootstrap_line(mse, generated)},
        "origin": {
            **fit_origin(mse, reconstructed),
            **bootstrap_line(mse, reconstructed, through_origin=True),
        },
        "generated_origin": {
            **fit_origin(mse, generated),
            **bootstrap_line(mse, generated, through_origin=True),
        },
        "bootstrap": dict(BOOTSTRAP),
        "family_ratios": family_ratios(rows),
        "n_runs": len(rows),
        "n_points": len({str(row.get("point_id") or row.get("run_id")) for row in rows}),
        "reconstruction": sorted({protocol_of(row).value for row in rows}),
        "families": sorted({str(row.get("family")) for row in rows}),
        "datasets": sorted({str(row.get("dataset")) for row in rows}),
    }
    if spec is not None:
        fit.update(
            name=spec.name,
            preset=spec.preset,
            quick=spec.quick,
            n_runs_planned=len(spec.runs),
            settings={"spec": spec.source},
        )
    return fit


def _float(value: Any) -> float:
    """A results cell as a float; empty or unreadable cells are NaN (left out of the fits)."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
