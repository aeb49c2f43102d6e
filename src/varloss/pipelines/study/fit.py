"""fit.json: the study's results rows through the study maths (`varloss.variance.fit`: least
squares with bootstrap intervals; `varloss.variance.ratios`: the per-family table) into a
`varloss.records.FitRecord`, with what produced it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from varloss.pipelines.study.spec import StudySpec
from varloss.records import FitRecord, ResultsRow
from varloss.variance.fit import BOOTSTRAP, fitted_line
from varloss.variance.ratios import family_ratios

__all__ = ["fit_results"]


def fit_results(
    rows: Sequence[ResultsRow],
    spec: StudySpec | None = None,
    settings: Mapping[str, Any] | None = None,
) -> FitRecord:
    """fit.json: variance loss against MSE for reconstructions and generated samples, by least
    squares with an intercept and through the origin, each with its bootstrap interval, the
    per-family ratio table and what produced them (the spec, and `settings`: the command, the
    executor and its jobs and threads)."""
    mse = _column(rows, "mse")
    reconstructed = _column(rows, "variance_loss_reconstructed")
    generated = _column(rows, "variance_loss_generated")
    recorded: dict[str, Any] = {"spec": spec.source} if spec is not None else {}
    return FitRecord(
        reconstructed=fitted_line(mse, reconstructed),
        generated=fitted_line(mse, generated),
        origin=fitted_line(mse, reconstructed, through_origin=True),
        generated_origin=fitted_line(mse, generated, through_origin=True),
        bootstrap=dict(BOOTSTRAP),
        family_ratios=tuple(family_ratios(rows)),
        n_runs=len(rows),
        n_points=len({row.point for row in rows}),
        reconstruction=tuple(sorted({str(row.reconstruction) for row in rows})),
        families=tuple(sorted({row.family for row in rows})),
        datasets=tuple(sorted({row.dataset for row in rows})),
        name=spec.name if spec is not None else None,
        preset=spec.preset if spec is not None else None,
        quick=spec.quick if spec is not None else False,
        n_runs_planned=len(spec.runs) if spec is not None else None,
        settings={**recorded, **(settings or {})},
    )


def _column(rows: Sequence[ResultsRow], name: str) -> np.ndarray:
    """One metric of every row as float64; not recorded is NaN (left out of the fits)."""
    return np.array([getattr(row, name) for row in rows], dtype=np.float64)
