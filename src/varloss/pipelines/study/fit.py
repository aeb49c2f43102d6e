"""fit.json: variance loss against MSE across the study's runs, by least squares (float64).

`fit_line` fits y = slope * x + intercept, `fit_origin` y = slope * x; both report R² against
the mean, so the two can be compared (the origin fit's R² is negative when it is worse than the
mean).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from varloss.pipelines.study.spec import StudySpec

__all__ = ["fit_line", "fit_origin", "fit_results", "r2"]


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
    squares with an intercept and through the origin, plus what produced them."""

    def column(name: str) -> np.ndarray:
        return np.array([_float(row.get(name)) for row in rows], dtype=np.float64)

    mse = column("mse")
    reconstructed = column("variance_loss_reconstructed")
    generated = column("variance_loss_generated")
    fit: dict[str, Any] = {
        "x": "mse",
        "y": "variance_loss_reconstructed / variance_loss_generated",
        "reconstructed": fit_line(mse, reconstructed),
        "generated": fit_line(mse, generated),
        "origin": fit_origin(mse, reconstructed),
        "generated_origin": fit_origin(mse, generated),
        "n_runs": len(rows),
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
