"""The study's outputs: one results row per finished run (results.csv), what a study call
produced (`StudyResult`) and the lines printed at the end.

A row is read from the run's own folder (report.json, written by the trainer only once a run has
finished), so rows are gathered the same way whichever executor trained the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from varloss._words import count, duration
from varloss.models import MODEL_FAMILIES
from varloss.pipelines.study.spec import RunSpec, StudySpec
from varloss.records import (
    METRIC_COLUMNS,
    RESULT_COLUMNS,
    SETTING_COLUMNS,
    FitRecord,
    ReportRecord,
    ResultsRow,
    read_report,
    write_results,
)
from varloss.records.values import number
from varloss.runs import RUN_TIMING_FILE, RunFolder

__all__ = [
    "METRIC_COLUMNS",
    "RESULT_COLUMNS",
    "SETTING_COLUMNS",
    "StudyResult",
    "collect_row",
    "summary_lines",
    "write_results",
]


@dataclass
class StudyResult:
    """What a study call produced: rows of finished runs, the fit and the file paths."""

    out: Path
    rows: list[ResultsRow]
    fit: FitRecord
    results_path: Path
    fit_path: Path
    figure_path: Path | None
    ran: list[str]
    skipped: list[str]
    failed: dict[str, str]
    seconds: float
    spec: StudySpec
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every run of the spec has finished."""
        return len(self.rows) == len(self.spec.runs)


def collect_row(run: RunSpec, run_dir: str | Path) -> ResultsRow:
    """The results row of a finished run: its settings and the metrics of its report.json."""
    folder = RunFolder(run_dir)
    report = read_report(folder)
    return ResultsRow(
        run_id=run.run_id,
        family=run.family,
        dataset=run.dataset,
        latent=run.latent,
        epochs=run.epochs,
        loss=run.loss or MODEL_FAMILIES[run.family].config_class.default_loss,
        reconstruction=report.reconstruction,
        seed=run.seed,
        limit=run.limit,
        point_id=run.point_id,
        **report.measures,
        high_frequency_share_reconstructed=report.high_frequency_share.get("reconstructed"),
        high_frequency_share_generated=report.high_frequency_share.get("generated"),
        train_seconds=_train_seconds(report, folder),
        best_epoch=report.best_epoch,
        stopped_epoch=report.stopped_epoch,
        early_stopped=report.early_stopped,
    )


def _train_seconds(report: ReportRecord, folder: RunFolder) -> float | None:
    """Training time recorded by the trainer, else the time the study measured around it."""
    if report.train_seconds is None and folder.exists(RUN_TIMING_FILE):
        timing = folder.read_json(RUN_TIMING_FILE)
        if isinstance(timing, dict):
            return number(timing.get("study_seconds"), f"{folder.file(RUN_TIMING_FILE)}")
    return report.train_seconds


def summary_lines(result: StudyResult) -> list[str]:
    """A few lines for the terminal: what ran, the fit and where the files are."""
    spec = result.spec
    lines = [
        f"study {spec.name}{' (QUICK version)' if spec.quick else ''}: "
        f"{len(result.rows)}/{len(spec.runs)} runs finished "
        f"({len(result.ran)} trained now, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed"
        + (f", {len(result.unavailable)} left out" if result.unavailable else "")
        + f") in {duration(result.seconds)}"
    ]
    lines += [_fit_line(result.fit, key, label) for key, label in _FIT_LABELS]
    lines += [f"failed: {run_id}: {message}" for run_id, message in result.failed.items()]
    reasons: dict[str, list[str]] = {}
    for run_id, reason in result.unavailable.items():
        reasons.setdefault(reason, []).append(run_id)
    for reason, run_ids in reasons.items():
        lines.append(f"left out {count(len(run_ids), 'run')}, data set unavailable: {reason}")
    if result.figure_path is not None:
        lines.append(f"figure: {result.figure_path} (and {result.figure_path.with_suffix('.svg')})")
    lines.append(f"results: {result.results_path}")
    lines.append(f"fit: {result.fit_path}")
    return lines


# (fit.json key, label) of the two fits printed; the origin fit of each is named in _ORIGIN
_FIT_LABELS = (
    ("reconstructed", "variance loss (reconstructions) vs MSE"),
    ("generated", "variance loss (generated samples) vs MSE"),
)
_ORIGIN = {"reconstructed": "origin", "generated": "generated_origin"}


def _fit_line(fit: FitRecord, key: str, label: str) -> str:
    values = fit.line(key)
    if values.slope is None:
        return f"{label}: not enough runs to fit (n={values.n})"
    if values.r2 is None:
        return f"{label}: slope {values.slope:.3f}, R² n/a (n={values.n})"
    origin = fit.line(_ORIGIN[key])
    through = f"{origin.slope:.3f}" if origin.slope is not None else "n/a"
    interval = values.slope_ci95
    ci = f" (95% bootstrap interval {interval[0]:.3f} to {interval[1]:.3f})" if interval else ""
    intercept = f"{values.intercept:.2e}" if values.intercept is not None else "n/a"
    return (
        f"{label}: slope {values.slope:.3f}{ci}, intercept {intercept}, "
        f"R² {values.r2:.3f} (n={values.n}); through the origin: slope {through}"
    )
