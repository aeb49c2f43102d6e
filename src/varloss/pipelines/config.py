"""`TrainConfig`: everything that determines a training run, checked at the boundary.

It lives apart from the loop so that `evaluate` and the study's run specs can use it without
importing the trainer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from varloss.errors import InputError
from varloss.variance.protocol import Reconstruction

SCHEDULES = ("constant", "cosine", "step")
# FID (domain features) of the prior samples in report.json: "auto" when the data set's domain
# classifier is already cached, "on" trains it first if needed (minutes on a CPU), "off" never.
FID_MODES = ("auto", "on", "off")
# Settings that may change between a run and its resumption (they do not change what is trained).
# `reconstruction` only changes how the trained model is measured: resuming a finished run with
# the other protocol measures it again without training (the study derives its twin runs so).
RESUMABLE_CHANGES = ("epochs", "out", "device", "compile", "data_path", "fid", "reconstruction")
# Settings added later: at these values they are left out of a run's identity, so that runs
# written before them still resume (and their study run ids stay the same).
LATER_DEFAULTS = {
    "reconstruction": Reconstruction.MEAN.value,
    "patience": None,
    "validation": 0.1,
    "min_delta": 0.0,
}
# Early-stopping settings that mean nothing (and are left out of the identity) without patience.
PATIENCE_SETTINGS = ("validation", "min_delta")


def drop_later_defaults(data: dict[str, Any], patience: int | None) -> dict[str, Any]:
    """`data` (settings by name) without the LATER_DEFAULTS at their default or None, nor the
    PATIENCE_SETTINGS without patience: what identified a run before these settings existed (a
    checkpoint's identity, a study's run id). Changes `data` and returns it."""
    for key, default in LATER_DEFAULTS.items():
        if key in data and (
            data[key] in (default, None) or (key in PATIENCE_SETTINGS and patience is None)
        ):
            data.pop(key)
    return data


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in config.json and report.json).

    `family` is the model family (`varloss train --family`); `hyper` holds its hyper-parameters
    (e.g. `hidden_sizes` for dense, `steps` for draw); `loss=None` is the family's default
    likelihood; `limit` trains on the first N training images; `eval_limit` evaluates on the first
    N test images (None: the whole test split); `fid` is one of FID_MODES.

    `reconstruction` is how the test split is reconstructed: `mean`, decode(mu), or `sample`,
    decode(mu + sigma * eps) with one seeded draw per image. `patience=N` stops training when the
    validation loss has not improved for N epochs (`epochs` is then the cap) and keeps the best
    epoch's weights; the validation split is the fraction `validation` of the training images
    (after `limit`), drawn with a seed derived from `seed`. An epoch counts as an improvement only
    when it lowers the best validation loss by more than the fraction `min_delta` of it (0: any
    decrease), so that `patience` stops a run whose loss only creeps down. Without patience there
    is no validation split: the model trains on every training image.
    """

    family: str = "dense"
    dataset: str = "mnist"
    epochs: int = 10
    latent: int = 2
    seed: int = 0
    out: str = "runs/train"
    loss: str | None = None
    limit: int | None = None
    batch_size: int = 100
    lr: float = 1e-3
    schedule: str = "constant"
    device: str = "auto"
    compile: bool = False
    bf16: bool = False
    hyper: dict[str, Any] = field(default_factory=dict)
    data_path: str | None = None
    eval_limit: int | None = None
    fid: str = "auto"
    reconstruction: str = Reconstruction.MEAN.value
    patience: int | None = None
    validation: float = 0.1
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.fid, bool):  # a switch, as `correct(fid=True)` takes it
            self.fid = "on" if self.fid else "off"

    def validate(self) -> None:
        """Reject settings that cannot work, naming the setting and what was expected."""
        for name in ("epochs", "latent", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 2
            ):
                raise InputError(f"{name} must be an integer of at least 2, got {value!r}.")
        if not (isinstance(self.lr, int | float) and self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive number, got {self.lr!r}.")
        if self.fid not in FID_MODES:
            raise InputError(f"fid must be one of {', '.join(FID_MODES)}, got {self.fid!r}.")
        if self.schedule not in SCHEDULES:
            raise InputError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}.")
        if not isinstance(self.hyper, dict):
            raise InputError(f"hyper must be a dict of hyper-parameters, got {self.hyper!r}.")
        if self.data_path is not None and not isinstance(self.data_path, str):
            raise InputError(f"data_path must be a path, got {self.data_path!r}.")
        Reconstruction.parse(self.reconstruction)
        patience = self.patience
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
        ):
            raise InputError(f"patience must be a positive integer or None, got {patience!r}.")
        validation = self.validation
        if isinstance(validation, bool) or not (
            isinstance(validation, int | float) and 0 < validation < 1
        ):
            raise InputError(
                f"validation must be a fraction of the training images between 0 and 1 "
                f"(exclusive), got {validation!r}."
            )
        min_delta = self.min_delta
        if isinstance(min_delta, bool) or not (
            isinstance(min_delta, int | float) and 0 <= min_delta < 1
        ):
            raise InputError(
                f"min_delta must be a relative improvement of the validation loss, at least 0 and "
                f"below 1 (e.g. 0.002 for 0.2%), got {min_delta!r}."
            )

    def identity(self) -> dict[str, Any]:
        """Settings that must match for a checkpoint to be resumed (all but RESUMABLE_CHANGES)."""
        data = dataclasses.asdict(self)
        for key in RESUMABLE_CHANGES:
            data.pop(key)
        return drop_later_defaults(data, self.patience)

    def trains_like(self, identity: dict[str, Any]) -> bool:
        """Whether a checkpoint's recorded `identity` trains the same model as this config
        (checkpoints written before `reconstruction` was a resumable change recorded it)."""
        kept = {k: v for k, v in identity.items() if k not in RESUMABLE_CHANGES}
        return kept == self.identity()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
