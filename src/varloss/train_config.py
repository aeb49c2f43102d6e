"""`TrainConfig`: the train settings, in one home. Everything that determines a training run.

Each field carries its `varloss train` option, help and rule in its metadata (`setting`), and the
rest derives from them: the CLI's options (`varloss.cli.train`), the study spec's run fields
(`varloss.pipelines.study.spec.RunSpec`), the check on construction (one sentence naming the bad
setting), and the equivalent command a run page prints (`TrainConfig.command_line`, which
retrains the same model). Recorded settings (config.json's `train`, report.json's
`settings.train`) are read back in one place, `TrainConfig.from_dict`.

It sits below the pipelines and the report (its own layer in pyproject's import-linter
contracts) so that the trainer, the study, the report pages and the CLI all reach it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from varloss.errors import InputError
from varloss.variance.protocol import FID_MODES, Reconstruction

__all__ = [
    "LATER_DEFAULTS",
    "RESUMABLE_CHANGES",
    "SCHEDULES",
    "STUDY_DEFAULT",
    "STUDY_OPTIONAL",
    "STUDY_REQUIRED",
    "SettingError",
    "TrainConfig",
    "drop_later_defaults",
    "equivalent_command",
    "option_of",
    "setting",
]

SCHEDULES = ("constant", "cosine", "step")
# Settings that may change between a run and its resumption (they do not change what is trained).
# `reconstruction` only changes how the trained model is measured: resuming a finished run with
# the other protocol measures it again without training (the study derives its twin runs so).
RESUMABLE_CHANGES = ("epochs", "out", "device", "compile", "data_path", "fid", "reconstruction")
# Settings added later: at these values they are left out of a run's identity, so that runs
# written before them still resume (and their study run ids stay the same). They are also the
# values `from_dict` gives records written before the setting existed.
LATER_DEFAULTS = {
    "reconstruction": Reconstruction.MEAN.value,
    "patience": None,
    "validation": 0.1,
    "min_delta": 0.0,
    "schedule": "constant",  # a study field since the standard preset gave DRAW a schedule
}
# Early-stopping settings that mean nothing (and are left out of the identity) without patience.
PATIENCE_SETTINGS = ("validation", "min_delta")

# How a setting appears in a study spec's runs (`study` in a field's metadata; None: not at all):
STUDY_REQUIRED = "required"  # every run must give it
STUDY_DEFAULT = "default"  # the TrainConfig default when a run leaves it out
# None when a run leaves it out (the trainer's default), so that the run id, which hashes the
# run's settings as given, stays what it was before a default was written down.
STUDY_OPTIONAL = "optional"


class SettingError(InputError):
    """A train setting refused by its rule: `str()` names the setting by its field name;
    `naming(label)` says the same sentence with another name for it (a CLI option)."""

    def __init__(self, name: str, expects: str, value: Any) -> None:
        self.name, self.expects, self.value = name, expects, value
        super().__init__(self.naming(name))

    def naming(self, label: str) -> str:
        return f"{label} must be {self.expects}, got {self.value!r}."


def setting(
    default: Any,
    *flags: str,
    help: str,
    expects: str,
    accepts: Callable[[Any], bool],
    study: str | None = None,
    option_required: bool = False,
) -> Any:
    """A TrainConfig field: its default, its `varloss train` option (`flags`, the long one
    first) and `help`, the rule its values follow (`accepts`, said as `expects` in the error),
    how a study spec's runs give it (`study`), and whether the CLI requires the option."""
    metadata = {
        "flags": flags,
        "help": help,
        "expects": expects,
        "accepts": accepts,
        "study": study,
        "option_required": option_required,
    }
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# ---- the rules (a bool is never a number: YAML's `yes` is not an epoch count) ----------------


def _integer(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _optional(rule: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or rule(value)


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and value in choices


def _name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike)


_POSITIVE = {"expects": "a positive integer", "accepts": lambda v: _integer(v, 1)}
_SUBSET = {
    "expects": "an integer of at least 2",
    "accepts": _optional(lambda v: _integer(v, 2)),
}
_RECONSTRUCTIONS = tuple(member.value for member in Reconstruction)


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in config.json and report.json);
    checked on construction, every bad setting refused in one sentence that names it.

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

    The fields are in the order `varloss train --help` lists their options.
    """

    family: str = setting(
        "dense", "--family", "-f",
        help="Model family: {families}.",
        expects="a model family name", accepts=_name, study=STUDY_REQUIRED,
    )  # fmt: skip
    dataset: str = setting(
        "mnist", "--dataset", "-d",
        help="Data set ({datasets}) or folder:PATH / npz:PATH[:KEY].",
        expects="a data set name", accepts=_name, study=STUDY_REQUIRED,
    )  # fmt: skip
    epochs: int = setting(
        10, "--epochs", "-e",
        help="Epochs in total (also with --resume).", **_POSITIVE, study=STUDY_REQUIRED,
    )  # fmt: skip
    latent: int = setting(
        2, "--latent", "-z", help="Latent dimensions.", **_POSITIVE, study=STUDY_REQUIRED
    )
    seed: int = setting(
        0, "--seed",
        help="Seed of initialisation, shuffling and evaluation.",
        expects="a non-negative integer", accepts=lambda v: _integer(v, 0), study=STUDY_DEFAULT,
    )  # fmt: skip
    out: str = setting(
        "runs/train", "--out", "-o",
        help="Run folder to write.", expects="a path", accepts=_path, option_required=True,
    )  # fmt: skip
    loss: str | None = setting(
        None, "--loss",
        help="{losses} (default: the family's).",
        expects="a likelihood name or None", accepts=_optional(_name), study=STUDY_DEFAULT,
    )  # fmt: skip
    limit: int | None = setting(
        None, "--limit", help="Train on the first N training images.", **_SUBSET,
        study=STUDY_DEFAULT,
    )  # fmt: skip
    eval_limit: int | None = setting(
        None, "--eval-limit", help="Evaluate on the first N test images.", **_SUBSET
    )
    batch_size: int = setting(
        100, "--batch-size", help="Images per batch.", **_POSITIVE, study=STUDY_OPTIONAL
    )
    lr: float = setting(
        1e-3, "--lr",
        help="Adam learning rate.",
        expects="a positive number", accepts=lambda v: _number(v) and v > 0, study=STUDY_OPTIONAL,
    )  # fmt: skip
    schedule: str = setting(
        "constant", "--schedule",
        help="constant, cosine or step.",
        expects=f"one of {', '.join(SCHEDULES)}", accepts=_one_of(SCHEDULES),
        study=STUDY_DEFAULT,
    )  # fmt: skip
    hyper: dict[str, Any] = setting(
        {}, "--set",
        help="Model hyper-parameter KEY=VALUE (JSON values, checked against the family's "
        "config types), repeatable, e.g. --set hidden_sizes=[512,256].",
        expects="a dict of hyper-parameters", accepts=lambda v: isinstance(v, dict),
        study=STUDY_DEFAULT,
    )  # fmt: skip
    device: str = setting(
        "auto", "--device",
        help="auto (CUDA if present), cpu, cuda:N.", expects="a device name", accepts=_name,
    )  # fmt: skip
    compile: bool = setting(
        False, "--compile",
        help="torch.compile the model (GPU).",
        expects="True or False", accepts=lambda v: isinstance(v, bool),
    )  # fmt: skip
    bf16: bool = setting(
        False, "--bf16",
        help="bfloat16 autocast (GPU).", expects="True or False",
        accepts=lambda v: isinstance(v, bool),
    )  # fmt: skip
    data_path: str | None = setting(
        None, "--data-path",
        help="Where the data set lives.",
        expects="a path", accepts=_optional(_path), study=STUDY_DEFAULT,
    )  # fmt: skip
    fid: str = setting(
        "auto", "--fid",
        help="FID (domain features) of the samples: auto (if the classifier is cached), on "
        "(train it if needed; also --fid alone), off; or inception (the papers' Inception-v3: "
        "`varloss weights fetch inception` once).",
        expects=f"one of {', '.join(FID_MODES)}", accepts=_one_of(FID_MODES),
    )  # fmt: skip
    reconstruction: str = setting(
        Reconstruction.MEAN.value, "--reconstruction",
        help=f"{Reconstruction.choices()}.",
        expects=f"one of {', '.join(_RECONSTRUCTIONS)}", accepts=_one_of(_RECONSTRUCTIONS),
        study=STUDY_DEFAULT,
    )  # fmt: skip
    patience: int | None = setting(
        None, "--patience",
        help="Stop after N epochs without a better validation loss.",
        expects="a positive integer or None", accepts=_optional(lambda v: _integer(v, 1)),
        study=STUDY_DEFAULT,
    )  # fmt: skip
    validation: float = setting(
        0.1, "--validation",
        help="With --patience: fraction of training images held out.",
        expects="a fraction of the training images between 0 and 1 (exclusive)",
        accepts=lambda v: _number(v) and 0 < v < 1, study=STUDY_OPTIONAL,
    )  # fmt: skip
    min_delta: float = setting(
        0.0, "--min-delta",
        help="With --patience: smaller relative gains do not count, e.g. 0.002",
        expects="a relative improvement of the validation loss, at least 0 and below 1 "
        "(e.g. 0.002 for 0.2%)",
        accepts=lambda v: _number(v) and 0 <= v < 1, study=STUDY_OPTIONAL,
    )  # fmt: skip

    def __post_init__(self) -> None:
        if isinstance(self.fid, bool):  # a switch, as `correct(fid=True)` takes it
            self.fid = "on" if self.fid else "off"
        if isinstance(self.reconstruction, Reconstruction):
            self.reconstruction = self.reconstruction.value
        for name in ("out", "data_path"):  # paths are recorded as text
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Refuse the first setting its rule refuses (SettingError: one sentence naming it).
        Done on construction; again by the trainer, in case a setting was changed since."""
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if not spec.metadata["accepts"](value):
                raise SettingError(spec.name, spec.metadata["expects"], value)

    @classmethod
    def from_dict(cls, recorded: Mapping[str, Any]) -> TrainConfig:
        """The config of recorded settings (config.json's `train`, report.json's
        `settings.train`): the one place older and newer records are read. A setting a record
        lacks takes the value runs had before it existed (LATER_DEFAULTS), else its default;
        a key this version does not know is left out; a recorded `fid` switch becomes a mode."""
        names = {spec.name for spec in dataclasses.fields(cls)}
        return cls(**{**LATER_DEFAULTS, **{k: v for k, v in recorded.items() if k in names}})

    def command_line(self) -> str:
        """The `varloss train` command that trains this config again: the settings that define
        a run (family, data set, epochs, latent size: those a study run must give) and `--out`
        (the CLI requires it) always, every other setting that is not its default, `--set
        KEY=VALUE` per hyper-parameter (JSON values, as the CLI reads them). Running it writes
        the same settings into config.json; give another `--out` to keep the recorded run."""
        argv = ["varloss", "train"]
        for spec in dataclasses.fields(self):
            value, flag = getattr(self, spec.name), spec.metadata["flags"][0]
            always = spec.metadata["option_required"] or spec.metadata["study"] == STUDY_REQUIRED
            if spec.name == "hyper":
                for key, inner in value.items():
                    argv += [flag, f"{key}={json.dumps(inner)}"]
            elif value == _default(spec) and not always:
                continue
            elif isinstance(value, bool):  # a flag: its default is False
                argv.append(flag)
            else:
                argv += [flag, str(value)]
        return shlex.join(argv)

    def identity(self) -> dict[str, Any]:
        """Settings that must match for a checkpoint to be resumed (all but RESUMABLE_CHANGES)."""
        data = dataclasses.asdict(self)
        for key in RESUMABLE_CHANGES:
            data.pop(key)
        return drop_later_defaults(data, self.patience)

    def trains_like(self, identity: dict[str, Any]) -> bool:
        """Whether a checkpoint's recorded `identity` trains the same model as this config
        (checkpoints written before `reconstruction` was a resumable change recorded it, and
        those written before a LATER_DEFAULTS setting left its default out recorded it too)."""
        kept = {k: v for k, v in identity.items() if k not in RESUMABLE_CHANGES}
        return drop_later_defaults(kept, kept.get("patience")) == self.identity()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _default(spec: dataclasses.Field) -> Any:
    """A field's default value (a fresh one for the factory-made `hyper`)."""
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def option_of(name: str) -> str:
    """The `varloss train` option of the TrainConfig field `name` (its long flag)."""
    return TrainConfig.__dataclass_fields__[name].metadata["flags"][0]


def equivalent_command(recorded: Mapping[str, Any]) -> str | None:
    """The `varloss train` command of recorded train settings (see `TrainConfig.command_line`),
    or None when they are not a train run's (no family or data set) or break a rule."""
    if not recorded.get("family") or not recorded.get("dataset"):
        return None
    try:
        return TrainConfig.from_dict(recorded).command_line()
    except InputError:
        return None


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
