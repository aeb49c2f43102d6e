"""Train a VAE of any family on a data set, then measure its variance loss on the test split.

The whole training split sits in memory (on the GPU when there is one) and batches are index
slices of it: no Dataset/DataLoader per-sample overhead. Every epoch's randomness (shuffling and
the reparameterisation noise) is seeded from (seed, epoch) alone, so a run resumed from the
checkpoint written after epoch k is bitwise identical on CPU to one that never stopped.

Run folder (`out`, names in `varloss.runs`):
    config.json, model.safetensors   the model (`varloss.models.save_model`) + the train settings
    history.csv                      per-epoch loss, reconstruction, KL, MSE, learning rate, seconds
                                     (and val_loss, val_mse with --patience)
    checkpoint/last.pt               model, optimiser and scheduler state after the last epoch
                                     (and the early-stopping state: best loss, epoch and weights)
    samples.png, maps.npz            real / reconstructed / generated grid; per-pixel maps
    report.json                      the `varloss measure` keys on the test split; its presence
                                     marks a finished run
    manifest.json                    SHA-256 of every file above, written last
With `patience` (`varloss.pipelines.early_stopping`) a seeded validation split is held out of the
training images, training stops after `patience` epochs without a better validation loss
(`epochs` is the cap), and the best epoch's weights are saved as the model.
The folder is locked for the whole run; a damaged checkpoint is refused, never trained on; a
damaged model of a finished run is rebuilt from its checkpoint by `resume`.

Under `torchrun` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel, each rank
takes its share of every batch, the evaluation is sharded and merged, and rank 0 writes the files.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from varloss._io import csv_text, fault_point
from varloss._progress import progress_bar
from varloss._threads import choose_threads, threads_kept
from varloss.data import load
from varloss.data.loading import check_split_shapes
from varloss.errors import InputError, TrainingError
from varloss.models import create_model, save_model
from varloss.pipelines.early_stopping import (
    VALIDATION_COLUMNS,
    EarlyStopping,
    split_validation,
)
from varloss.pipelines.evaluate import GRID_SIZE, evaluate
from varloss.pipelines.runtime import (
    Ranks,
    device_name,
    epoch_seed,
    init_ranks,
    pick_device,
    versions,
)
from varloss.pipelines.train_folder import finished_report, load_checkpoint, prepare_folder
from varloss.runs import (
    CHECKPOINT_DIR,
    CHECKPOINT_FILE,
    HISTORY_FILE,
    REPORT_FILE,
    TRAIN_RUN_FILES,
    RunFolder,
)
from varloss.train_config import TrainConfig

__all__ = [
    "GRID_SIZE",
    "HISTORY_COLUMNS",
    "TrainConfig",
    "epoch_seed",
    "evaluate",
    "pick_device",
    "train",
]

log = logging.getLogger("varloss")

# seconds: wall clock of the epoch's training loop; cpu_seconds: CPU time of this process over it
# (all threads), the steadier number when other jobs share the machine.
HISTORY_COLUMNS = ("epoch", "loss", "reconstruction", "kl", "mse", "lr", "seconds", "cpu_seconds")
# A finiteness check per step is free on CPU; on accelerators it would stall the queue every batch.
SYNC_EACH_STEP_DEVICES = ("cpu",)
# What a sealed training run's manifest covers.
SEALED_FILES = (*TRAIN_RUN_FILES, CHECKPOINT_FILE)


def train(
    config: TrainConfig,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    command: str | None = None,
    threads: int | str | None = None,
) -> dict[str, Any]:
    """Train (or resume) the run `config` describes; returns the report dict written to report.json.

    `resume` continues from `out/checkpoint` up to `config.epochs` epochs in total, or until
    `config.patience` stops it (a finished run with as many epochs, or stopped, returns its
    report, after rebuilding any damaged file from the checkpoint); without it an `out` that
    already holds a run is refused unless `force`, which deletes that run first. `command` (the
    CLI passes its command line) is recorded in the report. `threads`: torch's CPU threads for
    the run, `"auto"` (the CLI's default: the faster of one and torch's setting, timed on a
    training step of a copy of the model, `varloss._threads`), a count, or None (left as set);
    the choice is recorded in the report's settings, and the caller's setting given back.
    """
    config.validate()
    device = pick_device(config.device)
    check_split_shapes(config.dataset, data_path=config.data_path)  # before any epoch is spent
    ranks = init_ranks(device)
    folder = RunFolder(config.out)
    # Rank 0 holds the folder's lock for the whole run: a second `varloss train` stops at once.
    with folder.lock() if ranks.main else nullcontext(), threads_kept():
        if resume:  # a finished run with intact files: nothing to do
            finished = finished_report(folder, config, ranks)
            if finished is not None:
                return finished
        checkpoint = prepare_folder(folder, config, resume, force) if ranks.main else None
        ranks.barrier()
        if not ranks.main and resume and folder.exists(CHECKPOINT_FILE):
            checkpoint = load_checkpoint(folder)

        # Data, model, optimiser and schedule; the state of the checkpoint when resuming.
        run = _setup(config, device, ranks, checkpoint)
        threads_used = choose_threads(threads, _training_probe(run, config)).to_dict()
        _train_epochs(run, config, ranks, folder, progress)

        # The trained model: weights, evaluation on the test split, report, and the manifest last.
        if run.stopping is not None and run.stopping.best_model:  # the best epoch's weights
            run.model.load_state_dict(run.stopping.best_model)
        settings = {**_settings(config, run, ranks, device, command), "threads": threads_used}
        if ranks.main:
            extra = {"train": config.to_dict(), "versions": versions()}
            save_model(run.model, folder.path, extra=extra)
            fault_point("model:saved")  # a kill here: no report yet, --resume measures again
        report = evaluate(
            run.model, config, ranks=ranks, out=folder if ranks.main else None, settings=settings
        )
        report["train_seconds"] = sum(row["seconds"] for row in run.history)
        report["final_loss"] = run.history[-1]["loss"] if run.history else None
        report["history"] = run.history
        report["stopped_epoch"] = len(run.history)  # the epochs trained, and whose weights:
        report.update(run.stopping.summary() if run.stopping else {"best_epoch": len(run.history)})
        if ranks.main:
            folder.write_json(REPORT_FILE, report)
            fault_point("report:written")  # a kill here: a finished run, its files recorded
            folder.seal(SEALED_FILES)
        ranks.barrier()
        return report


def _save_checkpoint(folder: RunFolder, run: _Run, config: TrainConfig, epochs_done: int) -> None:
    state = {
        "epoch": epochs_done,
        "config": config.identity(),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "history": run.history,
    }
    if run.stopping is not None:
        state["early_stopping"] = run.stopping.state_dict()
    history = csv_text(run.history, history_columns(config))
    writers = {HISTORY_FILE: lambda tmp: tmp.write_text(history, encoding="utf-8")}
    writers[CHECKPOINT_FILE] = lambda tmp: torch.save(state, tmp)  # last: it commits the epoch
    folder.replace_together(writers, fault="checkpoint")  # a kill between them loses nothing


def _settings(
    config: TrainConfig, run: _Run, ranks: Ranks, device: torch.device, command: str | None
) -> dict[str, Any]:
    """What report.json records about how the run was made."""
    return {
        **({"command": command} if command else {}),
        "train": config.to_dict(),
        "device": str(device),
        "device_name": device_name(device),
        "world_size": ranks.world,
        "torch_threads": torch.get_num_threads(),
        "optimizer": {"name": "Adam", "fused": run.fused},
        "versions": versions(),
        "train_images": run.images.shape[0],
        "train_source": run.train_source,
        "validation": run.stopping.record if run.stopping is not None else None,
    }


def history_columns(config: TrainConfig) -> tuple[str, ...]:
    """history.csv's columns: the validation loss and MSE too when early stopping needs them."""
    return HISTORY_COLUMNS + (VALIDATION_COLUMNS if config.patience is not None else ())


# ----------------------------------------------------------------------------------------------
# Training


@dataclass
class _Run:
    """The state a training run carries from epoch to epoch."""

    images: torch.Tensor  # the whole training split, on the device
    train_source: str
    model: torch.nn.Module  # what is saved
    network: torch.nn.Module  # what is called: the model, under DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    history: list[dict[str, float]]
    start_epoch: int
    steps_per_epoch: int
    fused: bool
    autocast: Any
    stopping: EarlyStopping | None  # with --patience: the validation split and the rule


def _setup(
    config: TrainConfig, device: torch.device, ranks: Ranks, checkpoint: dict[str, Any] | None
) -> _Run:
    train_set = load(config.dataset, "train", data_path=config.data_path, limit=config.limit)
    images = train_set.images.to(device)
    n = images.shape[0]
    if n < 2:
        raise InputError(
            f"dataset {config.dataset} has {n} training images; at least 2 are needed."
        )
    stopping = None
    if config.patience is not None:  # hold out the seeded validation split
        images, held_out, record = split_validation(images, config)
        stopping = EarlyStopping.create(config, held_out, record)
        n = images.shape[0]
    torch.manual_seed(config.seed)
    model = create_model(
        config.family, tuple(images.shape[1:]), config.latent, config.loss, **config.hyper
    ).to(device)
    # The fused kernel updates every tensor in one pass: about 20% faster steps for small
    # networks on CPU (measured), same update rule.
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)
    steps_per_epoch = math.ceil(n / config.batch_size)
    scheduler = _scheduler(optimizer, config.schedule, config.epochs * steps_per_epoch)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        history = [dict(row) for row in checkpoint["history"]]
        start_epoch = int(checkpoint["epoch"])
        if stopping is not None:
            stopping.load_state_dict(checkpoint["early_stopping"])
    network: torch.nn.Module = model
    if ranks.world > 1:
        network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        network = torch.compile(network)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if config.bf16
        else nullcontext()
    )
    return _Run(
        images, train_set.source, model, network, optimizer, scheduler, history, start_epoch,
        steps_per_epoch, fused, autocast, stopping,
    )  # fmt: skip


def _training_probe(run: _Run, config: TrainConfig) -> Callable[[], None] | None:
    """What `--threads auto` times: one training step on the first batch, taken by copies of the
    model and optimiser (the run's weights, optimiser state and random streams stay as they
    were). None on accelerators, where torch's CPU threads do not run the steps."""
    if run.images.device.type != "cpu":
        return None
    batch = run.images[: config.batch_size]

    @functools.cache  # copied at the first call: nothing is copied unless auto times it
    def copies() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model = copy.deepcopy(run.model).train()
        return model, torch.optim.Adam(model.parameters(), lr=config.lr, fused=run.fused)

    def step() -> None:
        model, optimizer = copies()
        with run.autocast:
            terms = model(batch)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()

    return step


def _scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int):
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)),
        )
    if schedule == "step":  # divide by 10 at 50% and 75% of training
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: 0.1 ** ((step >= total_steps // 2) + (step >= 3 * total_steps // 4)),
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _train_epochs(
    run: _Run, config: TrainConfig, ranks: Ranks, folder: RunFolder, progress: bool
) -> None:
    """The epochs still to train, each followed by its checkpoint and history.csv (rank 0)."""
    bar = progress_bar(
        total=config.epochs * run.steps_per_epoch,
        initial=run.start_epoch * run.steps_per_epoch,
        disable=not (progress and ranks.main),
        desc=f"{config.family} on {config.dataset}",
        unit="batch",
        dynamic_ncols=True,
        leave=True,
    )
    try:
        for epoch in range(run.start_epoch, config.epochs):
            if run.stopping is not None and run.stopping.stopped:
                break  # patience ran out (also when a run that had stopped is resumed)
            row = _train_epoch(run, config, ranks, epoch, bar, folder)
            if run.stopping is not None:  # validation loss; a better one keeps the weights
                row.update(run.stopping.observe(run.model, epoch + 1, run.autocast))
            run.history.append(row)
            if ranks.main:  # after every epoch: history and checkpoint, replaced together
                _save_checkpoint(folder, run, config, epoch + 1)
    finally:
        bar.close()


def _train_epoch(
    run: _Run, config: TrainConfig, ranks: Ranks, epoch: int, bar: Any, folder: RunFolder
) -> dict[str, float]:
    """One pass over the shuffled training split; returns the epoch's history row."""
    started, cpu_started = time.perf_counter(), time.process_time()
    device, n = run.images.device, run.images.shape[0]
    run.model.train()
    generator = torch.Generator(device="cpu").manual_seed(epoch_seed(config.seed, epoch))
    order = torch.randperm(n, generator=generator).to(device)
    torch.manual_seed(epoch_seed(config.seed, epoch) + ranks.rank)  # the noise
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, reconstruction, kl, mse
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    sync_each_step = device.type in SYNC_EACH_STEP_DEVICES
    for step in range(run.steps_per_epoch):
        batch = order[step * config.batch_size : (step + 1) * config.batch_size]
        if ranks.world > 1:
            batch = batch.tensor_split(ranks.world)[ranks.rank]
        x = run.images[batch]
        with run.autocast:
            terms = run.network(x)
        if sync_each_step:
            if not torch.isfinite(terms.loss):
                _diverged(float(terms.loss.detach()), epoch, step, folder)
        else:  # no host sync per step on accelerators: remember the first bad batch
            bad = ~torch.isfinite(terms.loss.detach()) & (first_bad < 0)
            first_bad = torch.where(bad, step, first_bad)
            if (step % 20 == 19 or step == run.steps_per_epoch - 1) and int(first_bad) >= 0:
                _diverged("non-finite", epoch, int(first_bad), folder)
        run.optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        values = torch.stack([terms.loss, terms.reconstruction, terms.kl, terms.mse]).detach()
        values = values.to(torch.float64)
        sums += values * x.shape[0]
        bar.update(1)
        if step % 20 == 0 or step == run.steps_per_epoch - 1:
            loss, _, kl, mse = values.tolist()
            bar.set_postfix(
                epoch=f"{epoch + 1}/{config.epochs}",
                loss=f"{loss:.4g}",
                mse=f"{mse:.4g}",
                kl=f"{kl:.4g}",
                refresh=False,
            )
    loss, reconstruction, kl, mse = (ranks.sum(sums) / n).tolist()
    return {
        "epoch": epoch + 1,
        "loss": loss,
        "reconstruction": reconstruction,
        "kl": kl,
        "mse": mse,
        "lr": float(run.optimizer.param_groups[0]["lr"]),
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }


def _diverged(loss: float | str, epoch: int, step: int, folder: RunFolder) -> None:
    raise TrainingError(
        f"training diverged: the loss became {loss} at epoch {epoch + 1}, batch {step + 1}; the "
        f"last good checkpoint ({'none yet' if epoch == 0 else f'epoch {epoch}'}) is kept in "
        f"{folder.file(CHECKPOINT_DIR)} — lower --lr or change --loss, then --resume."
    )
