"""results.csv of a study as typed rows: one `ResultsRow` per finished run.

`ResultsRow.from_csv_row` is the one migration step for older files: columns they lack are None
(point_id, reconstruction, the spectrum shares, best/stopped epoch, early_stopped), the protocol
falls back through `varloss.variance.protocol.protocol_of` (older studies were all `mean`), and
booleans are read in any spelling earlier files used. `to_csv_row` writes what `from_csv_row`
reads back unchanged (floats by repr, so float64 round-trips exactly).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from varloss.errors import InputError
from varloss.records.report import MEASURE_KEYS, SPECTRUM_KINDS
from varloss.records.values import flag, integer, number, text
from varloss.runs import RESULTS_FILE, RunFolder
from varloss.variance.protocol import Reconstruction, protocol_of

__all__ = [
    "EPOCH_COLUMNS",
    "METRIC_COLUMNS",
    "REPORT_COLUMNS",
    "RESULT_COLUMNS",
    "SETTING_COLUMNS",
    "SPECTRUM_COLUMNS",
    "STOPPED_COLUMN",
    "ResultsRow",
    "read_results",
    "write_results",
]

# point_id: the run id without the seed (runs that differ only in their seed are one point);
# reconstruction: the run's protocol, `mean` (decode(mu)) or `sample` (decode(mu + sigma * eps))
SETTING_COLUMNS = [
    "run_id", "family", "dataset", "latent", "epochs", "loss", "reconstruction", "seed", "limit",
    "point_id",
]  # fmt: skip
# the keys of the run's report.json (varloss measure's names), then the training time
REPORT_COLUMNS = list(MEASURE_KEYS)
# the share of each variance loss above half the Nyquist radius (report.json's spectrum)
SPECTRUM_COLUMNS = [f"high_frequency_share_{kind}" for kind in SPECTRUM_KINDS]
# when training stopped and which epoch's weights the run kept (early stopping: --patience)
EPOCH_COLUMNS = ["best_epoch", "stopped_epoch"]
# True when early stopping ended the run, False when it reached its epoch cap, blank without it
STOPPED_COLUMN = "early_stopped"
METRIC_COLUMNS = [
    *REPORT_COLUMNS, *SPECTRUM_COLUMNS, "train_seconds", *EPOCH_COLUMNS, STOPPED_COLUMN
]  # fmt: skip
RESULT_COLUMNS = SETTING_COLUMNS + METRIC_COLUMNS

# The settings that make a point of an older study (no point_id column): all but run id and seed.
_POINT_SETTINGS = ("family", "dataset", "latent", "epochs", "loss", "limit", "reconstruction")


@dataclass(frozen=True)
class ResultsRow:
    """One finished run of a study: its settings and its metrics (None: not recorded)."""

    run_id: str
    family: str
    dataset: str
    latent: int
    epochs: int
    loss: str | None
    seed: int
    reconstruction: Reconstruction = Reconstruction.MEAN
    limit: int | None = None
    point_id: str | None = None  # None in studies from before seeds were grouped into points
    mse: float | None = None
    var_real: float | None = None
    var_reconstructed: float | None = None
    var_generated: float | None = None
    variance_loss_reconstructed: float | None = None
    variance_loss_generated: float | None = None
    bias2: float | None = None
    cov_term: float | None = None
    high_frequency_share_reconstructed: float | None = None
    high_frequency_share_generated: float | None = None
    train_seconds: float | None = None
    best_epoch: int | None = None
    stopped_epoch: int | None = None
    early_stopped: bool | None = None

    def __post_init__(self) -> None:
        # the protocol as the enum, whether it was given by name or parsed from a cell
        object.__setattr__(self, "reconstruction", Reconstruction.parse(self.reconstruction))

    @property
    def point(self) -> str:
        """The point the run belongs to: its point_id, else (older studies) its settings other
        than run id and seed. Runs of one point are drawn as one marker and counted once."""
        if self.point_id:
            return self.point_id
        return "/".join(f"{name}={getattr(self, name)}" for name in _POINT_SETTINGS)

    def values(self) -> dict[str, Any]:
        """The row as {column: typed value} in RESULT_COLUMNS order (the protocol as its name)."""
        return {
            column: str(value) if isinstance(value, Reconstruction) else value
            for column in RESULT_COLUMNS
            for value in [getattr(self, column)]
        }

    def to_csv_row(self) -> dict[str, str]:
        """The row as results.csv cells: floats by repr (float64 round-trips), None empty."""
        return {column: _cell(value) for column, value in self.values().items()}

    @classmethod
    def from_csv_row(cls, cells: Mapping[str, Any], where: str = RESULTS_FILE) -> ResultsRow:
        """Parse (and migrate) one results.csv row; `where` names it in errors. Columns the
        row lacks are None; a blank required setting is an InputError."""
        values: dict[str, Any] = {}
        for column, parse in _PARSERS.items():
            at = f"{where}, column {column}"
            value = parse(cells.get(column), at)
            if value is None and column in _REQUIRED:
                raise InputError(f"{at}: expected a value, found none.")
            values[column] = value
        return cls(**values)


def _protocol(value: Any, where: str) -> Reconstruction:
    """The row's protocol: the one fallback of `protocol_of` for rows without it (`mean`)."""
    try:
        return protocol_of({"reconstruction": value})
    except InputError as error:
        raise InputError(f"{where}: {error}") from None


def _text(value: Any, where: str) -> str | None:
    return text(value, where)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


# How each column is read: the one parser of its kind (`varloss.records.values`).
_PARSERS = {
    **{column: _text for column in ("run_id", "family", "dataset", "loss", "point_id")},
    **{column: integer for column in ("latent", "epochs", "seed", "limit", *EPOCH_COLUMNS)},
    "reconstruction": _protocol,
    **{column: number for column in (*REPORT_COLUMNS, *SPECTRUM_COLUMNS, "train_seconds")},
    STOPPED_COLUMN: flag,
}
_REQUIRED = ("run_id", "family", "dataset", "latent", "epochs", "seed")


def read_results(
    folder: RunFolder | str | os.PathLike[str], name: str = RESULTS_FILE
) -> list[ResultsRow]:
    """The rows of `folder/name` (verified against the folder's manifest), parsed and migrated."""
    folder = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    path = folder.file(name)
    return [
        ResultsRow.from_csv_row(cells, f"{path} line {line}")
        for line, cells in enumerate(folder.read_csv(name, typed=False), start=2)
    ]


def write_results(rows: Iterable[ResultsRow], path: str | Path) -> Path:
    """Write results.csv (one row per finished run, RESULT_COLUMNS order) atomically."""
    path = Path(path)
    cells = [row.to_csv_row() for row in rows]
    return RunFolder(path.parent).write_csv(path.name, cells, RESULT_COLUMNS)
