"""TrainConfig, the one home of the train settings: checked on construction, read back from
older records in one place, and the source of `varloss train`'s options, the study's run fields
and the equivalent command a run page prints, which trains the same model again."""

from __future__ import annotations

import dataclasses
import html
import json
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import varloss.pipelines.train as train_pipeline
from varloss.cli import app
from varloss.errors import InputError
from varloss.pipelines.study import RUN_FIELDS, RunSpec, load_spec
from varloss.pipelines.study.executors import execute_run
from varloss.report import write_report
from varloss.report.pages.train import build as build_train_page
from varloss.runs import CONFIG_FILE, REPORT_FILE
from varloss.train_config import (
    STUDY_OPTIONAL,
    STUDY_REQUIRED,
    SettingError,
    TrainConfig,
    equivalent_command,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A value other than the default for every TrainConfig field. A field added without an entry
# here (and so without a test that its option carries it) fails
# test_every_field_has_an_option_and_a_non_default_sample.
NON_DEFAULT = {
    "family": "conv",
    "dataset": "digits",
    "epochs": 3,
    "latent": 5,
    "seed": 7,
    "out": "elsewhere/run",
    "loss": "gaussian",
    "limit": 300,
    "eval_limit": 120,
    "batch_size": 32,
    "lr": 0.0025,
    "schedule": "cosine",
    "hyper": {"base_channels": 4, "hidden": 16},
    "device": "cpu",
    "compile": True,
    "bf16": True,
    "data_path": "some/data folder",  # a space: the command must quote it
    "fid": "off",
    "reconstruction": "sample",
    "patience": 4,
    "validation": 0.25,
    "min_delta": 0.002,
}


@pytest.fixture()
def fake_train(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """The trainer replaced: the configs `varloss train` would train."""
    calls: list[TrainConfig] = []

    def train(config: TrainConfig, **options: object) -> dict:
        calls.append(config)
        return {"history": [], "train_seconds": 0.0}

    monkeypatch.setattr(train_pipeline, "train", train)
    return calls


def parsed_by_the_cli(command: str, monkeypatch: pytest.MonkeyPatch, calls: list) -> TrainConfig:
    """The TrainConfig `varloss train` builds from `command` (nothing is trained)."""
    argv = shlex.split(command)
    assert argv[:2] == ["varloss", "train"]
    args = [*argv[1:], "--no-report", "-q"]
    monkeypatch.setattr(sys, "argv", argv)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return calls.pop()


def test_every_field_has_an_option_and_a_non_default_sample() -> None:
    fields = dataclasses.fields(TrainConfig)
    assert set(NON_DEFAULT) == {spec.name for spec in fields}
    flags = [spec.metadata["flags"][0] for spec in fields]
    assert len(set(flags)) == len(flags) and all(flag.startswith("--") for flag in flags)
    assert all(spec.metadata["help"] for spec in fields)
    default = TrainConfig()
    for name, value in NON_DEFAULT.items():
        assert getattr(default, name) != value, name
        # a flag can only switch a setting on: booleans must default to False
        assert not isinstance(value, bool) or getattr(default, name) is False


@pytest.mark.parametrize("name", list(NON_DEFAULT))
def test_the_command_of_each_setting_builds_the_same_config(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_train: list
) -> None:
    monkeypatch.chdir(tmp_path)
    # conv's hyper-parameters need conv; any other setting alone
    config = TrainConfig(
        **{name: NON_DEFAULT[name], **({"family": "conv"} if name == "hyper" else {})}
    )
    command = config.command_line()
    argv = shlex.split(command)
    flag = dataclasses.fields(TrainConfig)[list(NON_DEFAULT).index(name)].metadata["flags"][0]
    assert flag in argv
    assert parsed_by_the_cli(command, monkeypatch, fake_train).to_dict() == config.to_dict()


def test_the_command_of_all_settings_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_train: list
) -> None:
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(**NON_DEFAULT)
    command = config.command_line()
    assert "--out elsewhere/run" in command and "--data-path 'some/data folder'" in command
    assert "--set base_channels=4 --set hidden=16" in command
    assert parsed_by_the_cli(command, monkeypatch, fake_train).to_dict() == config.to_dict()
    # the settings that define a run always, the other defaults left out
    assert TrainConfig(out="run").command_line() == (
        "varloss train --family dense --dataset mnist --epochs 10 --latent 2 --out run"
    )


def test_construction_refuses_each_bad_setting_in_one_sentence_naming_it() -> None:
    for name, value, expected in [
        ("epochs", 0, "epochs must be a positive integer, got 0."),
        ("latent", True, "latent must be a positive integer, got True."),
        ("seed", -1, "seed must be a non-negative integer, got -1."),
        ("limit", 1, "limit must be an integer of at least 2, got 1."),
        ("lr", float("nan"), "lr must be a positive number, got nan."),
        ("schedule", "linear", "schedule must be one of constant, cosine, step, got 'linear'."),
        ("fid", "sometimes", "fid must be one of auto, on, off, inception, got 'sometimes'."),
        ("reconstruction", "median", "reconstruction must be one of mean, sample, got 'median'."),
        ("hyper", [1], "hyper must be a dict of hyper-parameters, got [1]."),
        ("family", "", "family must be a model family name, got ''."),
        ("compile", "yes", "compile must be True or False, got 'yes'."),
        ("out", 3, "out must be a path, got 3."),
    ]:
        with pytest.raises(SettingError) as raised:
            TrainConfig(**{name: value})
        assert str(raised.value) == expected
        assert raised.value.name == name and isinstance(raised.value, InputError)
    # the trainer checks again: a setting changed after construction is caught before training
    config = TrainConfig()
    config.epochs = 0
    with pytest.raises(SettingError, match="epochs must be a positive integer"):
        config.validate()
    assert TrainConfig(out=Path("a") / "b", fid=False).to_dict()["out"] == str(Path("a/b"))
    assert TrainConfig(fid=True).fid == "on"


def test_from_dict_reads_older_and_newer_records() -> None:
    # written before reconstruction, patience, validation and min_delta existed, with the fid
    # switch of the time and a key this version does not know
    old = {"family": "dense", "dataset": "mnist", "epochs": 5, "latent": 2, "seed": 1}
    old |= {"out": "runs/old", "fid": False, "hyper": {}, "retired_setting": 3}
    config = TrainConfig.from_dict(old)
    assert (config.reconstruction, config.patience, config.validation) == ("mean", None, 0.1)
    assert (config.min_delta, config.fid, config.epochs) == (0.0, "off", 5)
    # a record of this version reads back to itself
    full = TrainConfig(**NON_DEFAULT)
    assert TrainConfig.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    # pages: no command for what is not a train record, or for settings that break a rule
    assert equivalent_command({"dataset": "mnist"}) is None
    assert equivalent_command({**old, "epochs": 0}) is None
    assert equivalent_command(old) == (
        "varloss train --family dense --dataset mnist --epochs 5 --latent 2 --seed 1 "
        "--out runs/old --fid off"
    )


def test_study_run_fields_are_the_train_config_fields_the_metadata_names() -> None:
    trainer = {spec.name: spec for spec in dataclasses.fields(TrainConfig)}
    study = {name for name, spec in trainer.items() if spec.metadata["study"] is not None}
    assert set(RUN_FIELDS) == study
    assert {"out", "device", "fid", "eval_limit"}.isdisjoint(RUN_FIELDS)
    for spec in dataclasses.fields(RunSpec):
        kind = trainer[spec.name].metadata["study"]
        if kind == STUDY_REQUIRED:
            assert (
                spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
            )
        elif kind == STUDY_OPTIONAL:
            assert spec.default is None
        elif spec.default_factory is not dataclasses.MISSING:
            assert spec.default_factory() == trainer[spec.name].default_factory()
        else:
            assert spec.default == trainer[spec.name].default, spec.name


@pytest.mark.slow  # trains a small convolutional VAE twice on digits: several seconds
def test_a_standard_study_run_page_prints_a_command_that_trains_the_same_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standard preset's conv run (its batch size, learning rate, sampled reconstructions,
    patience, min_delta and hyper-parameters), made small: digits, 2 epochs, 300 images."""
    standard = load_spec("standard")
    run = next(r for r in standard.runs if r.family == "conv")
    assert (run.reconstruction, run.patience, run.min_delta, run.hyper) == (
        "sample", 3, 0.002, {"base_channels": 16, "hidden": 128},
    )  # fmt: skip
    small = RunSpec(**{**run.to_dict(), "dataset": "digits", "epochs": 2, "limit": 300})
    study_dir = tmp_path / "study-run"
    execute_run(small.to_dict(), str(study_dir))  # as a study's executor trains it
    # the run's page: no recorded command, so the equivalent one is shown
    facts = dict(build_train_page(study_dir, None)["settings"]["key_facts"])
    assert "command" not in facts
    command = facts["command (equivalent)"]
    page = html.unescape(write_report(study_dir).read_text())
    assert command in page
    for option in ("--reconstruction sample", "--patience 3", "--min-delta 0.002"):
        assert option in command
    assert "--set base_channels=16 --set hidden=128" in command
    assert "--batch-size 64" in command and "--limit 300" in command

    # run it, into another folder (the recorded one holds the study's run)
    argv = shlex.split(command)
    again = tmp_path / "again"
    argv[argv.index("--out") + 1] = str(again)
    monkeypatch.setattr(sys, "argv", argv)
    result = CliRunner().invoke(app, [*argv[1:], "-q"])
    assert result.exit_code == 0, (result.output, result.exception)

    studied = json.loads((study_dir / CONFIG_FILE).read_text())
    retrained = json.loads((again / CONFIG_FILE).read_text())
    assert retrained["train"].pop("out") == str(again)
    assert studied["train"].pop("out") == str(study_dir)
    assert retrained["train"] == studied["train"]
    assert retrained["model"] == studied["model"]
    # the same model: the same seeded training gives the same numbers
    first, second = (json.loads((d / REPORT_FILE).read_text()) for d in (study_dir, again))
    for key in ("mse", "var_reconstructed", "var_generated", "final_loss", "best_epoch"):
        assert second[key] == first[key], key
