"""fit.json of a study as a typed record: the four fitted relations of variance loss against MSE
(`varloss.variance.fit.LineFit`), the per-family ratio table (`varloss.variance.ratios`) and
what produced them.

`FitRecord.from_json` is the one migration step for older files: fits without intervals have
None for them, a file without the per-family table gets it from the study's results rows (the
same `family_ratios` the study ran, noted in `migrated`), and the protocols of a study from
before they were recorded are `protocol_of`'s fallback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from varloss.errors import InputError
from varloss.records.report import read_object
from varloss.records.results import ResultsRow
from varloss.records.values import flag, integer, interval, mapping, number, text
from varloss.runs import FIT_FILE, RunFolder
from varloss.variance.fit import LineFit
from varloss.variance.protocol import protocol_of
from varloss.variance.ratios import RATIO_INTERVAL, FamilyRatio, family_ratios

__all__ = ["FIT_LINES", "FitRecord", "read_fit"]

# The fitted relations of fit.json: reconstructions and generated samples, with an intercept
# and through the origin.
FIT_LINES = ("reconstructed", "generated", "origin", "generated_origin")
_X, _Y = "mse", "variance_loss_reconstructed / variance_loss_generated"


@dataclass(frozen=True)
class FitRecord:
    """fit.json: the fits, the per-family table, the study's extent and its settings."""

    reconstructed: LineFit
    generated: LineFit
    origin: LineFit
    generated_origin: LineFit
    family_ratios: tuple[FamilyRatio, ...] = ()
    n_runs: int = 0
    n_points: int | None = None  # None: an older file, without rows to count them from
    reconstruction: tuple[str, ...] = ()  # the protocols of the runs
    families: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    bootstrap: dict[str, Any] | None = None  # the settings behind the *_ci95 intervals
    name: str | None = None
    preset: str | None = None
    quick: bool = False
    n_runs_planned: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    # what the migration filled in for an older file (not written back)
    migrated: tuple[str, ...] = field(default=(), compare=False)

    def line(self, key: str) -> LineFit:
        """One of FIT_LINES."""
        return getattr(self, key)

    def to_json(self) -> dict[str, Any]:
        """fit.json's object (intervals as [low, high] lists)."""
        return {
            "x": _X,
            "y": _Y,
            **{key: _plain(asdict(self.line(key))) for key in FIT_LINES},
            "bootstrap": self.bootstrap,
            "family_ratios": [_plain(asdict(row)) for row in self.family_ratios],
            "n_runs": self.n_runs,
            "n_points": self.n_points,
            "reconstruction": list(self.reconstruction),
            "families": list(self.families),
            "datasets": list(self.datasets),
            "name": self.name,
            "preset": self.preset,
            "quick": self.quick,
            "n_runs_planned": self.n_runs_planned,
            "settings": self.settings,
        }

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, Any],
        where: str = FIT_FILE,
        rows: Sequence[ResultsRow] | None = None,
    ) -> FitRecord:
        """Parse (and migrate) a fit.json object; `rows` (the study's results) give what an
        older file lacks: the per-family table, the number of points and the protocols."""
        data, migrated = _migrate(data, rows)
        table = data.get("family_ratios")
        if not isinstance(table, list):
            raise InputError(f"{where} key family_ratios: expected a list, got {table!r}.")
        return cls(
            **{key: _line_fit(data.get(key), f"{where} key {key}") for key in FIT_LINES},
            family_ratios=tuple(
                _family_ratio(row, f"{where} key family_ratios[{index}]")
                for index, row in enumerate(table)
            ),
            n_runs=integer(data.get("n_runs"), f"{where} key n_runs") or 0,
            n_points=integer(data.get("n_points"), f"{where} key n_points"),
            reconstruction=_texts(data.get("reconstruction"), f"{where} key reconstruction"),
            families=_texts(data.get("families") or [], f"{where} key families"),
            datasets=_texts(data.get("datasets") or [], f"{where} key datasets"),
            bootstrap=mapping(data.get("bootstrap"), f"{where} key bootstrap") or None,
            name=text(data.get("name"), f"{where} key name"),
            preset=text(data.get("preset"), f"{where} key preset"),
            quick=bool(flag(data.get("quick"), f"{where} key quick")),
            n_runs_planned=integer(data.get("n_runs_planned"), f"{where} key n_runs_planned"),
            settings=mapping(data.get("settings"), f"{where} key settings"),
            migrated=migrated,
        )


def _migrate(
    data: Mapping[str, Any], rows: Sequence[ResultsRow] | None
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The one migration step of older fit.json files: the keys they lack, filled in from the
    study's results rows where there are rows (the same maths the study runs), else empty; the
    protocols of a study without them are `protocol_of`'s fallback. Returns the object in the
    current format and the keys filled in. Fits without intervals need nothing: None."""
    data, filled = dict(data), []
    if data.get("family_ratios") is None:
        table = family_ratios(rows) if rows is not None else []
        data["family_ratios"] = [asdict(row) for row in table]
        filled += ["family_ratios"] if rows is not None else []
    if data.get("n_points") is None and rows is not None:
        data["n_points"] = len({row.point for row in rows})
        filled.append("n_points")
    if data.get("reconstruction") is None:
        recorded = [{"reconstruction": row.reconstruction} for row in rows or []] or [{}]
        data["reconstruction"] = sorted({str(protocol_of(record)) for record in recorded})
        filled.append("reconstruction")
    return data, tuple(filled)


def read_fit(
    folder: RunFolder | str | os.PathLike[str], rows: Sequence[ResultsRow] | None = None
) -> FitRecord:
    """The fit.json of the study in `folder` (verified against its manifest), migrated with the
    study's results rows when it is an older file."""
    folder = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    return FitRecord.from_json(read_object(folder, FIT_FILE), str(folder.file(FIT_FILE)), rows)


def _line_fit(value: Any, where: str) -> LineFit:
    entry = mapping(value, where)
    return LineFit(
        slope=number(entry.get("slope"), f"{where}.slope"),
        intercept=number(entry.get("intercept"), f"{where}.intercept"),
        r2=number(entry.get("r2"), f"{where}.r2"),
        n=integer(entry.get("n"), f"{where}.n") or 0,
        slope_ci95=interval(entry.get("slope_ci95"), f"{where}.slope_ci95"),
        intercept_ci95=interval(entry.get("intercept_ci95"), f"{where}.intercept_ci95"),
        bootstrap_resamples_used=integer(
            entry.get("bootstrap_resamples_used"), f"{where}.bootstrap_resamples_used"
        ),
    )


def _family_ratio(value: Any, where: str) -> FamilyRatio:
    entry = mapping(value, where)
    mean = number(entry.get("mean_ratio"), f"{where}.mean_ratio")
    family = text(entry.get("family"), f"{where}.family", required=True)
    if mean is None:
        raise _bad_entry(where, "mean_ratio")
    return FamilyRatio(
        family=str(family),
        reconstruction=str(protocol_of(entry)),
        n=integer(entry.get("n"), f"{where}.n") or 0,
        points=integer(entry.get("points"), f"{where}.points") or 0,
        mean_ratio=mean,
        std_ratio=number(entry.get("std_ratio"), f"{where}.std_ratio"),
        ratio_ci95=interval(entry.get("ratio_ci95"), f"{where}.ratio_ci95"),
        interval=text(entry.get("interval"), f"{where}.interval") or RATIO_INTERVAL,
    )


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise InputError(f"{where}: expected a list, got {value!r}.")
    return tuple(str(text(item, where, required=True)) for item in value)


def _bad_entry(where: str, key: str) -> Exception:
    return InputError(f"{where}.{key}: expected a number, found none.")


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: fit.json as JSON writes it (and reads it back)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
