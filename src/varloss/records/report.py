"""report.json of a training run (`varloss train`) as a typed record: the measure keys, the
protocol the evaluation used, training time and early stopping, the spectrum and the settings.

`ReportRecord.from_json` is the one migration step for older reports: keys they lack are None
(no spectrum, no best/stopped epoch, no early-stopping flag), and their protocol is the one
`varloss.variance.protocol.protocol_of` gives, with the train settings of config.json as the
second place to look (runs whose report did not record the evaluation's protocol).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from varloss.errors import InputError
from varloss.records.values import flag, integer, mapping, number
from varloss.runs import CONFIG_FILE, REPORT_FILE, RunFolder
from varloss.variance.protocol import Reconstruction, protocol_of, recorded_protocol

__all__ = ["MEASURE_KEYS", "ReportRecord", "read_object", "read_report"]

# The `varloss measure` keys of a report (VarianceReport's names), in results.csv's order.
MEASURE_KEYS = (
    "mse",
    "var_real",
    "var_reconstructed",
    "var_generated",
    "variance_loss_reconstructed",
    "variance_loss_generated",
    "bias2",
    "cov_term",
)
# The two variance losses whose share above half the Nyquist radius the spectrum records.
SPECTRUM_KINDS = ("reconstructed", "generated")


@dataclass(frozen=True)
class ReportRecord:
    """What readers use of a training run's report.json; `data` is the object as written (the
    pages' headline table shows every measure key it holds)."""

    measures: dict[str, float | None]  # MEASURE_KEYS -> value, None when not recorded
    reconstruction: Reconstruction
    train_seconds: float | None = None
    best_epoch: int | None = None  # whose weights the run kept
    stopped_epoch: int | None = None  # the epochs trained
    early_stopped: bool | None = None  # None: trained without --patience, or an older report
    spectrum: dict[str, Any] | None = None
    high_frequency_share: dict[str, float | None] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> dict[str, Any]:
        """The train settings recorded with the report ({} for older reports)."""
        return dict(self.settings.get("train") or {})

    @property
    def evaluation(self) -> dict[str, Any]:
        """The evaluation settings (split, protocol, sample counts); {} for older reports."""
        return dict(self.settings.get("evaluation") or {})

    @classmethod
    def from_json(
        cls,
        data: Mapping[str, Any],
        where: str = REPORT_FILE,
        train_settings: Mapping[str, Any] | None = None,
    ) -> ReportRecord:
        """Parse (and migrate) a report.json object; `train_settings` (config.json's `train`)
        is where the protocol is looked for when the report does not name it."""
        settings = mapping(data.get("settings"), f"{where} key settings")
        spectrum = mapping(data.get("spectrum"), f"{where} key spectrum") or None
        shares = mapping((spectrum or {}).get("high_frequency_share"), f"{where} spectrum share")
        # the report's evaluation (or its settings), then config.json's train settings, then
        # the one fallback of older records (`mean`)
        reconstruction = recorded_protocol(data) or protocol_of(train_settings)
        return cls(
            measures={key: number(data.get(key), f"{where} key {key}") for key in MEASURE_KEYS},
            reconstruction=reconstruction,
            train_seconds=number(data.get("train_seconds"), f"{where} key train_seconds"),
            best_epoch=integer(data.get("best_epoch"), f"{where} key best_epoch"),
            stopped_epoch=integer(data.get("stopped_epoch"), f"{where} key stopped_epoch"),
            early_stopped=flag(data.get("early_stopped"), f"{where} key early_stopped"),
            spectrum=spectrum,
            high_frequency_share={
                kind: number(shares.get(kind), f"{where} high_frequency_share.{kind}")
                for kind in SPECTRUM_KINDS
            },
            settings=settings,
            data=dict(data),
        )


def read_report(folder: RunFolder | str | os.PathLike[str]) -> ReportRecord:
    """The report.json of the run in `folder` (verified against its manifest), with config.json's
    train settings for the protocol of older reports. One sentence when it is not an object."""
    folder = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    data = read_object(folder, REPORT_FILE)
    train = None
    if folder.exists(CONFIG_FILE):
        train = mapping(read_object(folder, CONFIG_FILE).get("train"), f"{CONFIG_FILE} train")
    return ReportRecord.from_json(data, str(folder.file(REPORT_FILE)), train)


def read_object(folder: RunFolder, name: str) -> dict[str, Any]:
    """The JSON object in `folder/name` (verified); InputError when it is not an object."""
    data = folder.read_json(name)
    if not isinstance(data, dict):
        raise InputError(f"{folder.file(name)} must hold a JSON object, got {type(data).__name__}.")
    return data


def fid_number(result: Any) -> float | None:
    """The FID of a `varloss.quality.fid` result as a report or a `correct` row holds it (its
    "fid" entry): None where there is no result, no value, NaN (JSON's null) or a word such as
    "n/a", so every table, sort and gain reads the same number or the same absence."""
    if not isinstance(result, Mapping):
        return None
    try:
        return number(result.get("fid"), "the FID result's 'fid'")
    except InputError:  # a word such as "n/a" where a number was expected: no FID to show
        return None
