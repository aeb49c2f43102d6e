"""`varloss train`: train one VAE into a run folder, then measure it on the test split."""

from __future__ import annotations

import os
from typing import Any

import torch
import typer

from varloss._io import check_output_path
from varloss.cli.app import command, command_line
from varloss.cli.common import print_variance_table
from varloss.errors import InputError
from varloss.pipelines.config import FID_MODES, TrainConfig
from varloss.variance.protocol import Reconstruction


def check_hyper_settings(family: str, pairs: list[str] | None) -> dict:
    """--set pairs checked against the family's config types before any work is done."""
    from varloss.models import MODEL_FAMILIES, check_hyper, load_plugins, parse_settings  # 0.3 s

    hyper = parse_settings(pairs)
    load_plugins()
    if family in MODEL_FAMILIES:  # an unknown family is named by the trainer itself
        check_hyper(MODEL_FAMILIES[family].config_class, hyper, family)
    return hyper  # as the user wrote it (lists stay lists in config.json)


# train_command's options that are TrainConfig fields of the same name
CONFIG_OPTIONS = (
    "dataset",
    "epochs",
    "latent",
    "seed",
    "out",
    "loss",
    "limit",
    "eval_limit",
    "batch_size",
    "lr",
    "schedule",
    "device",
    "bf16",
    "data_path",
    "fid",
    "reconstruction",
    "patience",
    "validation",
    "min_delta",
)


def train_config(options: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of train_command's options (by parameter name), checked before any work
    is done: family, --fid, --threads, the --out folder and the --set types."""
    family = options["family"] or "dense"
    if options["fid"] not in FID_MODES:
        raise InputError(f"--fid must be one of {', '.join(FID_MODES)}, got {options['fid']!r}.")
    threads = options["threads"]
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be a positive integer, got {threads}.")
    check_output_path(options["out"], "--out", folder=True)
    return TrainConfig(
        family=family,
        compile=options["compile_model"],
        hyper=check_hyper_settings(family, options["hyper"]),
        **{name: options[name] for name in CONFIG_OPTIONS},
    )


@command("train", fid="on")
def train_command(
    family: str = typer.Option(
        None, "--family", "-f", help="Model family: {families} (default: dense)."
    ),
    dataset: str = typer.Option(
        "mnist", "--dataset", "-d", help="Data set ({datasets}) or folder:PATH / npz:PATH[:KEY]."
    ),
    epochs: int = typer.Option(10, "--epochs", "-e", help="Epochs in total (also with --resume)."),
    latent: int = typer.Option(2, "--latent", "-z", help="Latent dimensions."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, shuffling and evaluation."),
    out: str = typer.Option(..., "--out", "-o", help="Run folder to write."),
    loss: str = typer.Option(None, "--loss", help="{losses} (default: the family's)."),
    limit: int = typer.Option(None, "--limit", help="Train on the first N training images."),
    eval_limit: int = typer.Option(
        None, "--eval-limit", help="Evaluate on the first N test images."
    ),
    batch_size: int = typer.Option(100, "--batch-size", help="Images per batch."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    schedule: str = typer.Option("constant", "--schedule", help="constant, cosine or step."),
    hyper: list[str] = typer.Option(
        None,
        "--set",
        help="Model hyper-parameter KEY=VALUE (JSON values, checked against the family's "
        "config types), repeatable, e.g. --set hidden_sizes=[512,256].",
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda:N."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model (GPU)."),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast (GPU)."),
    threads: int = typer.Option(
        None, "--threads", help="CPU threads for torch (default: torch's; 1 on a busy machine)."
    ),
    data_path: str = typer.Option(None, "--data-path", help="Where the data set lives."),
    fid: str = typer.Option(
        "auto",
        "--fid",
        help="FID (domain features) of the samples: auto (if the classifier is cached), on "
        "(train it if needed; also --fid alone), off.",
    ),
    reconstruction: str = typer.Option(
        Reconstruction.MEAN.value, "--reconstruction", help=f"{Reconstruction.choices()}."
    ),
    patience: int = typer.Option(
        None, "--patience", help="Stop after N epochs without a better validation loss."
    ),
    validation: float = typer.Option(
        0.1, "--validation", help="With --patience: fraction of training images held out."
    ),
    min_delta: float = typer.Option(
        0.0, "--min-delta", help="With --patience: smaller relative gains do not count, e.g. 0.002"
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's checkpoint."),
    force: bool = typer.Option(False, "--force", help="Overwrite a run already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html at the end."),
) -> None:
    """Train a VAE, then measure its variance loss on the test split (report.json in --out).

    Runs under `torchrun --nproc_per_node N -m varloss train ...` with DistributedDataParallel.
    """
    # start-up cost: see varloss/cli/__init__.py
    from varloss.pipelines.train import train
    from varloss.report import write_report

    config = train_config(dict(locals()))
    if threads is not None:
        torch.set_num_threads(threads)
    command_text = command_line()
    result = train(config, resume=resume, force=force, progress=not quiet, command=command_text)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print_variance_table(result, title=f"{config.family} on {dataset}: test split")
    typer.echo(
        f"trained {len(result['history'])} epochs in {result['train_seconds']:.1f} s; wrote {out}"
    )
    if report:
        typer.echo(f"report: {write_report(out, command=command_text)}")
