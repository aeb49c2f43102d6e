"""`varloss train`: train one VAE into a run folder, then measure it on the test split."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import typing
from collections.abc import Callable, Mapping
from typing import Any

import typer

from varloss._io import check_output_path
from varloss._words import count, duration
from varloss.cli.app import command, command_line
from varloss.cli.common import THREADS_OPTION, print_variance_table, threads_option
from varloss.errors import InputError
from varloss.train_config import SettingError, TrainConfig, option_of

KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY


def check_hyper_settings(family: str, pairs: list[str] | None) -> dict:
    """--set pairs checked against the family's config types before any work is done."""
    from varloss.models import MODEL_FAMILIES, check_hyper, load_plugins, parse_settings  # 0.3 s

    hyper = parse_settings(pairs)
    load_plugins()
    if family in MODEL_FAMILIES:  # an unknown family is named by the trainer itself
        check_hyper(MODEL_FAMILIES[family].config_class, hyper, family)
    return hyper  # as the user wrote it (lists stay lists in config.json)


def _config_option(spec: dataclasses.Field, annotation: Any) -> inspect.Parameter:
    """The typer option of one TrainConfig field, from the field's metadata: its flags, help
    and default (none where the CLI requires it); `hyper` is given as repeated --set pairs."""
    flags, help_text = spec.metadata["flags"], spec.metadata["help"]
    if spec.name == "hyper":
        annotation, default = list[str] | None, None
    else:
        default = ... if spec.metadata["option_required"] else spec.default
    option = typer.Option(default, *flags, help=help_text)
    return inspect.Parameter(spec.name, KEYWORD_ONLY, default=option, annotation=annotation)


def with_config_options(command_function: Callable[..., None]) -> Callable[..., None]:
    """Give `command_function(settings, **own_options)` one option per TrainConfig field
    (before its own options); it receives them as `settings`, a dict by field name, to build
    its TrainConfig with `train_config`."""
    types = typing.get_type_hints(TrainConfig)
    specs = dataclasses.fields(TrainConfig)
    own = inspect.signature(command_function).parameters.values()
    own_options = [p.replace(kind=KEYWORD_ONLY) for p in own if p.name != "settings"]

    @functools.wraps(command_function)
    def command_with_config(**options: Any) -> None:
        settings = {spec.name: options.pop(spec.name) for spec in specs}
        command_function(settings, **options)

    parameters = [_config_option(spec, types[spec.name]) for spec in specs]
    command_with_config.__signature__ = inspect.Signature([*parameters, *own_options])
    return command_with_config


def train_config(settings: Mapping[str, Any]) -> TrainConfig:
    """The TrainConfig of train_command's settings (by field name), checked before any work is
    done: each setting by its rule (the sentence names its option), the --out folder and the
    --set types."""
    check_output_path(settings["out"], "--out", folder=True)
    values = {**settings, "hyper": check_hyper_settings(settings["family"], settings["hyper"])}
    try:
        return TrainConfig(**values)
    except SettingError as error:
        raise InputError(error.naming(option_of(error.name))) from None


@command("train", fid="on")
@with_config_options
def train_command(
    settings: dict[str, Any],
    threads: str = THREADS_OPTION,
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's checkpoint."),
    force: bool = typer.Option(False, "--force", help="Overwrite a run already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html at the end."),
) -> None:
    """Train a VAE, then measure its variance loss on the test split (report.json in --out).

    Runs under `torchrun --nproc_per_node N -m varloss train ...` with DistributedDataParallel.
    The options before --threads are the TrainConfig fields (`with_config_options`).
    """
    # start-up cost: see varloss/cli/__init__.py
    from varloss.pipelines.train import train
    from varloss.report import write_report

    threads_asked = threads_option(threads)  # checked before any work, like the settings
    config = train_config(settings)
    command_text = command_line()
    result = train(
        config,
        resume=resume,
        force=force,
        progress=not quiet,
        command=command_text,
        threads=threads_asked,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print_variance_table(result, title=f"{config.family} on {config.dataset}: test split")
    trained = count(len(result["history"]), "epoch")
    typer.echo(f"trained {trained} in {duration(result['train_seconds'])}; wrote {config.out}")
    if report:
        typer.echo(f"report: {write_report(config.out, command=command_text)}")
