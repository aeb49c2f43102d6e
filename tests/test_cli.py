"""The `varloss` command itself: one meaning per flag, help texts read from the registries, and
bad input (odd output paths, --set values of the wrong type) refused with one sentence on
stderr, a non-zero exit and nothing written. Commands run in-process through `run`, the
console-script entry point, with the pipelines they call replaced where only the parsing is
under test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import varloss.pipelines.correct as correct_pipeline
import varloss.pipelines.train as train_pipeline
from varloss._io import check_output_path
from varloss.cli import run
from varloss.errors import InputError
from varloss.losses import LIKELIHOODS
from varloss.models import MODEL_FAMILIES
from varloss.quality import extractor_names


def invoke(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `varloss ARGS`, as the installed script runs it."""
    monkeypatch.setattr(sys, "argv", ["varloss", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        run()
    captured = capsys.readouterr()
    code = stop.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


def assert_one_sentence_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture()
def image_files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    real, generated = tmp_path / "real.npy", tmp_path / "generated.npy"
    np.save(real, rng.random((20, 1, 4, 4), dtype=np.float32))
    np.save(generated, rng.random((20, 1, 4, 4), dtype=np.float32) * 0.5)
    return real, generated


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ---- odd output paths: refused before any work, nothing written ----


@pytest.mark.parametrize(
    "flag, make_target, expected",
    [
        ("--json", lambda tmp: tmp / "a-folder", "is a folder"),
        ("--maps", lambda tmp: tmp / "a-folder" / "maps.png", "is a folder"),
        ("--json", lambda tmp: tmp / "real.npy" / "out.json", "which is a file"),
        ("--maps", lambda tmp: tmp / "real.npy" / "deeper" / "maps.png", "which is a file"),
        ("--json", lambda tmp: Path("/proc/varloss-test.json"), "refuses new files"),
        ("--json", lambda tmp: Path("/dev/null"), "not a regular file"),
    ],
)
def test_measure_refuses_odd_output_paths(
    monkeypatch, capsys, tmp_path, image_files, flag, make_target, expected
) -> None:
    real, generated = image_files
    (tmp_path / "a-folder" / "maps.png").mkdir(parents=True)
    before = listing(tmp_path)
    target = make_target(tmp_path)
    args = ["measure", "--real", str(real), "--generated", str(generated), flag, str(target)]
    code, out, err = invoke(monkeypatch, capsys, *args)
    assert_one_sentence_error(code, err, flag, expected)
    assert listing(tmp_path) == before
    assert out == ""  # refused before measuring: no table printed


def test_fid_and_train_refuse_odd_output_paths(monkeypatch, capsys, tmp_path, image_files) -> None:
    real, generated = image_files
    args = ["fid", "--real", str(real), "--generated", str(generated), "--json", str(tmp_path)]
    code, _, err = invoke(monkeypatch, capsys, *args)
    assert_one_sentence_error(code, err, "--json", "is a folder")
    before = listing(tmp_path)
    code, _, err = invoke(monkeypatch, capsys, "train", "--out", str(real), "--dataset", "digits")
    assert_one_sentence_error(code, err, "--out", "is a file; expected a folder")
    code, _, err = invoke(
        monkeypatch, capsys, "train", "--out", str(real / "run"), "--dataset", "digits"
    )
    assert_one_sentence_error(code, err, "--out", "which is a file")
    assert listing(tmp_path) == before


def test_check_output_path_accepts_new_files_and_folders(tmp_path) -> None:
    assert check_output_path(tmp_path / "new" / "deeper" / "out.json", "--json") == (
        tmp_path / "new" / "deeper" / "out.json"
    )
    assert not (tmp_path / "new").exists()  # checked, not created
    (tmp_path / "old.json").write_text("{}")
    check_output_path(tmp_path / "old.json", "--json")  # an existing file is overwritten later
    check_output_path(tmp_path, "--out", folder=True)
    assert listing(tmp_path) == {"old.json"}  # the write probe left nothing behind
    with pytest.raises(InputError, match="ends with a path separator"):
        check_output_path(f"{tmp_path}/newdir/", "--json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_output_path_refuses_a_read_only_folder(tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(InputError, match="refuses new files"):
        check_output_path(locked / "out.json", "--json")


# ---- --set: checked against the family config's field types, not coerced ----


@pytest.fixture()
def fake_train(monkeypatch):
    """Replace the trainer: record the config it was given and return a minimal report."""
    calls = []

    def train(config, **options):
        calls.append(config)
        return {"history": [], "train_seconds": 0.0, "var_real": 0.1}

    monkeypatch.setattr(train_pipeline, "train", train)
    return calls


@pytest.mark.parametrize(
    "setting, fragments",
    [
        ("hidden_sizes=64", ("hidden_sizes", "tuple[int, ...]", "got 64")),
        ('hidden_sizes="64"', ("hidden_sizes", 'got "64"')),
        ("hidden_sizes=[1.5]", ("hidden_sizes", "got [1.5]")),
        ("activation=1", ("activation", "must be str")),
        ("latent=abc", ("['latent'] are unknown", "hidden_sizes")),
        ("novalue", ("must be KEY=VALUE",)),
    ],
)
def test_train_refuses_set_values_of_the_wrong_type(
    monkeypatch, capsys, tmp_path, fake_train, setting, fragments
) -> None:
    args = ["train", "--family", "dense", "--out", str(tmp_path / "run"), "--set", setting]
    code, _, err = invoke(monkeypatch, capsys, *args, "--no-report")
    assert_one_sentence_error(code, err, *fragments)
    assert fake_train == [] and not (tmp_path / "run").exists()


def test_train_says_its_epochs_and_time_right(monkeypatch, capsys, tmp_path) -> None:
    def train(config, **options):
        return {"history": [{"epoch": 0}], "train_seconds": 75.2, "var_real": 0.1}

    monkeypatch.setattr(train_pipeline, "train", train)
    args = ["train", "--family", "dense", "--out", str(tmp_path / "run"), "--no-report"]
    code, out, err = invoke(monkeypatch, capsys, *args)
    assert code == 0, err
    assert f"trained 1 epoch in 1 min 15 s; wrote {tmp_path / 'run'}" in " ".join(out.split())


def test_train_passes_well_typed_settings_and_family(monkeypatch, capsys, tmp_path, fake_train):
    settings = ["hidden_sizes=[64,32]", "kl_weight=1", "activation=elu"]
    args = ["train", "--family", "dense", "--out", str(tmp_path / "run"), "--no-report"]
    for setting in settings:
        args += ["--set", setting]
    code, _, err = invoke(monkeypatch, capsys, *args, "--fid")
    assert code == 0, err
    (config,) = fake_train
    assert config.family == "dense" and config.fid == "on"
    assert config.hyper == {"hidden_sizes": [64, 32], "kl_weight": 1, "activation": "elu"}


def test_train_family_defaults_to_dense_and_model_is_not_an_option(
    monkeypatch, capsys, tmp_path, fake_train
):
    out = str(tmp_path / "run")
    code, _, err = invoke(monkeypatch, capsys, "train", "--out", out, "--no-report")
    assert code == 0 and fake_train[0].family == "dense", err
    code, _, err = invoke(monkeypatch, capsys, "train", "--model", "conv", "--out", out)
    assert code != 0 and "--model" in err and len(fake_train) == 1


def test_train_refuses_bad_settings_naming_their_option(monkeypatch, capsys, tmp_path, fake_train):
    """TrainConfig's rule refuses the value; the sentence names the option the user typed."""
    out = str(tmp_path / "run")
    for args, expected in [
        (["--fid", "sometimes"], "--fid must be one of auto, on, off, inception, got 'sometimes'."),
        (["--epochs", "0"], "--epochs must be a positive integer, got 0."),
        (["--limit", "1"], "--limit must be an integer of at least 2, got 1."),
        (["--validation", "1.5"], "--validation must be a fraction of the training images"),
        (["--reconstruction", "posterior"], "--reconstruction must be one of mean, sample"),
    ]:
        code, _, err = invoke(monkeypatch, capsys, "train", "--out", out, *args)
        assert_one_sentence_error(code, err, expected)
    assert fake_train == [] and not (tmp_path / "run").exists()


# ---- correct's --fid: auto|on|off and bare --fid ----


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], "auto"),
        (["--fid"], "on"),
        (["--fid", "off"], "off"),
        (["--fid", "on", "--method", "prior"], "on"),
        (["--fid", "--method", "prior"], "on"),
    ],
)
def test_correct_fid_modes(monkeypatch, capsys, tmp_path, flags, expected) -> None:
    calls = []

    def correct(run_dir, method="all", out=None, *, fid="auto", **options):
        calls.append(fid)
        baseline = {"var_real": 0.1, "var_generated": 0.05, "fid_reason": None}
        return {"settings": {"run_dir": run_dir}, "baseline": baseline, "methods": {}}

    monkeypatch.setattr(correct_pipeline, "correct", correct)
    code, _, err = invoke(monkeypatch, capsys, "correct", str(tmp_path), *flags, "--no-report")
    assert code == 0, err
    assert calls == [expected]


# ---- help texts: the registries as they are, plugins included ----


def test_help_lists_the_registries(monkeypatch, capsys) -> None:
    code, out, _ = invoke(monkeypatch, capsys, "train", "--help")
    flat = " ".join(out.replace("│", " ").split())
    assert code == 0
    assert "Model family: " + ", ".join(MODEL_FAMILIES) in flat
    assert ", ".join(LIKELIHOODS) + " (default: the family's)" in flat
    code, out, _ = invoke(monkeypatch, capsys, "fid", "--help")
    assert "Feature extractor: " + ", ".join(extractor_names()) in " ".join(
        out.replace("│", " ").split()
    )


def test_help_lists_plugin_families(monkeypatch, capsys, tmp_path) -> None:
    plugin = tmp_path / "help_plugin.py"
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "from typing import ClassVar\n"
        "from varloss.models import VAE, ModelConfig, register\n"
        "@dataclass\n"
        "class HelpConfig(ModelConfig):\n"
        "    family: ClassVar[str] = 'helpfamily'\n"
        "@register\n"
        "class HelpVAE(VAE):\n"
        "    config_class = HelpConfig\n"
    )
    monkeypatch.setenv("VARLOSS_PLUGINS", "")  # --plugin adds to it; restored afterwards
    _, before, _ = invoke(monkeypatch, capsys, "train", "--help")
    assert "helpfamily" not in before
    try:
        code, out, err = invoke(monkeypatch, capsys, "--plugin", str(plugin), "train", "--help")
    finally:
        if "helpfamily" in MODEL_FAMILIES:
            MODEL_FAMILIES.unregister("helpfamily")
    assert code == 0, err
    assert "helpfamily" in out


def test_operating_system_errors_are_one_sentence(monkeypatch, capsys, tmp_path) -> None:
    import varloss.report

    def refused(directory, **options):
        raise PermissionError(13, "Permission denied", str(tmp_path / "report.html"))

    monkeypatch.setattr(varloss.report, "write_report", refused)
    code, _, err = invoke(monkeypatch, capsys, "report", str(tmp_path))
    assert code == 1 and "Traceback" not in err
    assert err.strip() == f"error: Permission denied ({tmp_path / 'report.html'})"


@pytest.mark.slow
def test_python_dash_m_varloss_is_the_command() -> None:
    import subprocess

    from varloss import __version__

    result = subprocess.run(
        [sys.executable, "-m", "varloss", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == f"varloss {__version__}"


def test_no_help_text_is_swallowed_as_rich_markup() -> None:
    """Rich reads `[default: x]` in a help string as a markup tag and prints nothing of it (the
    `correct` options once lost their defaults this way): every help text is markup-free."""
    import re

    import click
    import typer

    from varloss.cli.app import app

    tag = re.compile(r"(?<!\\)\[[a-z#/@][^\[]*?\]")

    def walk(command: click.Command, path: str) -> list[str]:
        found = [
            f"{path} {param.opts[0]}: {param.help!r}"
            for param in command.params
            if getattr(param, "help", None) and tag.search(param.help)
        ]
        if command.help and tag.search(command.help):
            found.append(f"{path}: {command.help!r}")
        for name, sub in getattr(command, "commands", {}).items():
            found += walk(sub, f"{path} {name}")
        return found

    assert walk(typer.main.get_command(app), "varloss") == []


def test_command_help_paragraphs_are_reflowed_to_the_terminal(monkeypatch, capsys) -> None:
    """A docstring's source line breaks do not reach the help: at 200 columns a paragraph of
    fid's help is one line (typer's rich help kept them, and an 80-column terminal wrapped
    each source line again into ragged pairs)."""
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = invoke(monkeypatch, capsys, "fid", "--help")
    assert code == 0
    lines = [line.strip() for line in out.splitlines()]
    features = [line for line in lines if line.startswith("Features: `domain`")]
    # the docstring breaks its source line after "trained by varloss on"
    assert len(features) == 1 and "trained by varloss on first use and cached" in features[0]
