"""The study's outputs: one results row per finished run (results.csv), what a study call
produced (`StudyResult`) and the lines printed at the end.

A row is read from the run's own folder (report.json, written by the trainer only once a run has
finished), so rows are gathered the same way whichever executor trained the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from varloss.models import MODEL_FAMILIES
from varloss.pipelines.study.spec import RunSpec, StudySpec
from varloss.runs import CONFIG_FILE, REPORT_FILE, RUN_TIMING_FILE, RunFolder
from varloss.variance.protocol import protocol_of, recorded_protocol

__all__ = [
    "METRIC_COLUMNS",
    "RESULT_COLUMNS",
    "SETTING_COLUMNS",
    "StudyResult",
    "collect_row",
    "summary_lines",
    "write_results",
]

# point_id: the run id without the seed (runs that differ only in their seed are one point);
# reconstruction: the run's protocol, `mean` (decode(mu)) or `sample` (decode(mu + sigma * eps))
SETTING_COLUMNS = [
    "run_id", "family", "dataset", "latent", "epochs", "loss", "reconstruction", "seed", "limit",
    "point_id",
]  # fmt: skip
# the keys of the run's report.json (varloss measure's names), then the training time
REPORT_COLUMNS = [
    "mse",
    "var_real",
    "var_reconstructed",
    "var_generated",
    "variance_loss_reconstructed",
    "variance_loss_generated",
    "bias2",
    "cov_term",
]
# the share of each variance loss above half the Nyquist radius (report.json's spectrum)
SPECTRUM_COLUMNS = ["high_frequency_share_reconstructed", "high_frequency_share_generated"]
# when training stopped and which epoch's weights the run kept (early stopping: --patience)
EPOCH_COLUMNS = ["best_epoch", "stopped_epoch"]
# True when early stopping ended the run, False when it reached its epoch cap, blank without it
STOPPED_COLUMN = "early_stopped"
METRIC_COLUMNS = [
    *REPORT_COLUMNS, *SPECTRUM_COLUMNS, "train_seconds", *EPOCH_COLUMNS, STOPPED_COLUMN
]  # fmt: skip
RESULT_COLUMNS = SETTING_COLUMNS + METRIC_COLUMNS


@dataclass
class StudyResult:
    """What a study call produced: rows of finished runs, the fit and the file paths."""

    out: Path
    rows: list[dict[str, Any]]
    fit: dict[str, Any]
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


def collect_row(run: RunSpec, run_dir: str | Path) -> dict[str, Any]:
    """The results row of a finished run: its settings and the metrics of its report.json."""
    folder = RunFolder(run_dir)
    report = folder.read_json(REPORT_FILE)
    row: dict[str, Any] = {
        "run_id": run.run_id,
        "family": run.family,
        "dataset": run.dataset,
        "latent": run.latent,
        "epochs": run.epochs,
        "loss": run.loss or MODEL_FAMILIES[run.family].config_class.default_loss,
        "reconstruction": _reconstruction(report, folder),
        "seed": run.seed,
        "limit": run.limit if run.limit is not None else "",
        "point_id": run.point_id,
    }
    for key in REPORT_COLUMNS:
        value = report.get(key)
        row[key] = float(value) if isinstance(value, int | float) else math.nan
    row.update(_high_frequency_shares(report))
    row["train_seconds"] = _train_seconds(report, folder)
    for key in EPOCH_COLUMNS:  # blank for runs from before these were recorded
        value = report.get(key)
        row[key] = value if isinstance(value, int) and not isinstance(value, bool) else ""
    stopped = report.get(STOPPED_COLUMN)
    row[STOPPED_COLUMN] = stopped if isinstance(stopped, bool) else ""
    return row


def _reconstruction(report: Mapping[str, Any], folder: RunFolder) -> str:
    """The run's reconstruction protocol: the one report.json's evaluation used, else in
    config.json's train settings, else `mean` (runs from before the protocol was recorded)."""
    train = folder.read_json(CONFIG_FILE).get("train") if folder.exists(CONFIG_FILE) else None
    return (recorded_protocol(report) or protocol_of(train)).value


def _high_frequency_shares(report: Mapping[str, Any]) -> dict[str, float]:
    """The SPECTRUM_COLUMNS of a run; NaN for runs from before report.json had a spectrum."""
    share = (report.get("spectrum") or {}).get("high_frequency_share") or {}
    return {
        f"high_frequency_share_{kind}": float(value) if isinstance(value, int | float) else math.nan
        for kind in ("reconstructed", "generated")
        for value in [share.get(kind)]
    }


def _train_seconds(report: Mapping[str, Any], folder: RunFolder) -> float:
    """Training time recorded by the trainer, else the time the study measured around it."""
    value = report.get("train_seconds")
    if not isinstance(value, int | float) and folder.exists(RUN_TIMING_FILE):
        value = folder.read_json(RUN_TIMING_FILE).get("study_seconds")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def write_results(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write results.csv (one row per finished run, RESULT_COLUMNS order) atomically."""
    path = Path(path)
    cells = [{k: _csv_value(row.get(k, "")) for k in RESULT_COLUMNS} for row in rows]
    return RunFolder(path.parent).write_csv(path.name, cells, RESULT_COLUMNS)


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)  # repr round-trips float64 exactly
    return value


def summary_lines(result: StudyResult) -> list[str]:
    """A few lines for the terminal: what ran, the fit and where the files are."""
    spec = result.spec
    lines = [
        f"study {spec.name}{' (QUICK version)' if spec.quick else ''}: "
        f"{len(result.rows)}/{len(spec.runs)} runs finished "
        f"({len(result.ran)} trained now, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed"
        + (f", {len(result.unavailable)} left out" if result.unavailable else "")
        + f") in {result.seconds:.0f} s"
    ]
    lines += [_fit_line(result.fit, key, label) for key, label in _FIT_LABELS]
    lines += [f"failed: {run_id}: {message}" for run_id, message in result.failed.items()]
    reasons: dict[str, list[str]] = {}
    for run_id, reason in result.unavailable.items():
        reasons.setdefault(reason, []).append(run_id)
    for reason, run_ids in reasons.items():
        runs = f"{len(run_ids)} run{'s' if len(run_ids) != 1 else ''}"
        lines.append(f"left out {runs}, data set unavailable: {reason}")
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


def _fit_line(fit: Mapping[str, Any], key: str, label: str) -> str:
    values = fit.get(key) or {}
    if values.get("slope") is None:
        return f"{label}: not enough runs to fit (n={values.get('n', 0)})"
    r2 = values.get("r2")
    if r2 is None:
        return f"{label}: slope {values['slope']:.3f}, R² n/a (n={values['n']})"
    origin = fit.get(_ORIGIN[key]) or {}
    through = f"{origin['slope']:.3f}" if origin.get("slope") is not None else "n/a"
    interval = values.get("slope_ci95")
    ci = f" (95% bootstrap interval {interval[0]:.3f} to {interval[1]:.3f})" if interval else ""
    return (
        f"{label}: slope {values['slope']:.3f}{ci}, intercept {values['intercept']:.2e}, "
        f"R² {r2:.3f} (n={values['n']}); through the origin: slope {through}"
    )
