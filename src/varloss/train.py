"""Train a VAE of any family on a data set, then measure its variance loss on the test split.

The whole training split sits in memory (on the GPU when there is one) and batches are index
slices of it: no Dataset/DataLoader per-sample overhead. Every epoch's randomness (shuffling and
the reparameterisation noise) is seeded from (seed, epoch) alone, so a run resumed from the
checkpoint written after epoch k is bitwise identical on CPU to one that never stopped.

Run folder (`out`):
    config.json, model.safetensors   the model (`varloss.models.save_model`) + the train settings
    history.csv                      per-epoch loss, reconstruction, KL, MSE, learning rate, seconds
    checkpoint/last.pt               model, optimiser and scheduler state after the last epoch
    samples.png, maps.npz            real / reconstructed / generated grid; per-pixel maps
    report.json                      the `varloss measure` keys on the test split; written LAST,
                                     so its presence marks a finished run

Under `torchrun` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel, each rank
takes its share of every batch, the evaluation is sharded and merged through
`varloss.metrics.VarianceLoss`, and rank 0 writes the files.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import platform
import shutil
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from varloss._io import atomic_torch_save, atomic_write_json, atomic_write_text
from varloss.errors import InputError, TrainingError

REPORT_FILE = "report.json"
HISTORY_FILE = "history.csv"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "last.pt"
SAMPLES_FILE = "samples.png"
MAPS_FILE = "maps.npz"
RUN_FILES = ("config.json", "model.safetensors", REPORT_FILE, HISTORY_FILE, SAMPLES_FILE, MAPS_FILE)
SCHEDULES = ("constant", "cosine", "step")
# FID (domain features) of the prior samples in report.json: "auto" when the data set's domain
# classifier is already cached, "on" trains it first if needed (minutes on a CPU), "off" never.
FID_MODES = ("auto", "on", "off")
# seconds: wall clock of the epoch's training loop; cpu_seconds: CPU time of this process over it
# (all threads), the steadier number when other jobs share the machine.
HISTORY_COLUMNS = ("epoch", "loss", "reconstruction", "kl", "mse", "lr", "seconds", "cpu_seconds")
GRID_SIZE = 12


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in config.json and report.json).

    `hyper` holds the family's hyper-parameters (e.g. `hidden_sizes` for dense, `steps` for draw);
    `loss=None` is the family's default likelihood; `limit` trains on the first N training images;
    `eval_limit` evaluates on the first N test images (None: the whole test split).
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

    def validate(self) -> None:
        """Reject settings that cannot work, naming the setting and what was expected."""
        for name in ("epochs", "latent", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 2):
                raise InputError(f"{name} must be an integer of at least 2, got {value!r}.")
        if not (isinstance(self.lr, int | float) and self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive number, got {self.lr!r}.")
        if self.fid not in FID_MODES:
            raise InputError(f"fid must be one of {', '.join(FID_MODES)}, got {self.fid!r}.")
        if self.schedule not in SCHEDULES:
            raise InputError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}."
            )

    def identity(self) -> dict[str, Any]:
        """Settings that must match for a checkpoint to be resumed (all but epochs and device)."""
        data = dataclasses.asdict(self)
        for key in ("epochs", "out", "device", "compile", "data_path", "fid"):
            data.pop(key)
        return data


# ----------------------------------------------------------------------------------------------
# Devices, seeds, distributed set-up


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU; under torchrun each rank takes its local GPU."""
    if requested in ("auto", "", None):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {requested!r} was asked for but CUDA is not available here.")
        if requested == "cuda" and "LOCAL_RANK" in os.environ:
            requested = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    try:
        return torch.device(requested)
    except RuntimeError:
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {requested!r}.") from None


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffling and noise: a function of (seed, epoch) only."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return _Dist(world=dist.get_world_size(), rank=dist.get_rank())


def _barrier(dist_info: _Dist) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


# ----------------------------------------------------------------------------------------------
# The run folder


def _prepare_folder(config: TrainConfig, out: Path, resume: bool, force: bool) -> dict | None:
    """Check what `out` holds; returns the checkpoint to resume from, or None for a fresh start."""
    checkpoint_path = out / CHECKPOINT_DIR / CHECKPOINT_FILE
    holds_run = out.is_dir() and any((out / name).exists() for name in (*RUN_FILES, CHECKPOINT_DIR))
    if resume:
        if not checkpoint_path.is_file():
            if holds_run and (out / REPORT_FILE).is_file():
                raise InputError(
                    f"out {out} holds a finished run without a checkpoint; nothing to resume."
                )
            return None  # nothing written yet: resuming is starting
        checkpoint = _load_checkpoint(checkpoint_path)
        saved = checkpoint["config"]
        mine = config.identity()
        differ = sorted(k for k in mine if saved.get(k) != mine[k])
        if differ:
            raise InputError(
                f"out {out} holds a run with other settings ({', '.join(differ)}); resume it with "
                "the same settings, or start afresh with --force."
            )
        if checkpoint["epoch"] > config.epochs:
            raise InputError(
                f"out {out} already trained {checkpoint['epoch']} epochs, more than --epochs "
                f"{config.epochs}; ask for at least {checkpoint['epoch']}."
            )
        if checkpoint["epoch"] < config.epochs:
            (out / REPORT_FILE).unlink(missing_ok=True)  # the run is unfinished again
        return checkpoint
    if holds_run:
        if not force:
            raise InputError(
                f"out {out} already holds a run; pass --resume to continue it or --force to "
                "overwrite it."
            )
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return None


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged checkpoint is a user-facing problem
        raise InputError(
            f"checkpoint {path} could not be read ({error}); use --force to restart."
        ) from None


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k) for k in HISTORY_COLUMNS})
    atomic_write_text(path, text.getvalue())


def _versions() -> dict[str, str]:
    import numpy

    from varloss import __version__

    return {
        "varloss": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------------------------
# Training


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


def _progress(total: int, initial: int, enabled: bool, desc: str):
    from varloss._progress import progress_bar

    return progress_bar(
        total=total,
        initial=initial,
        disable=not enabled,
        desc=desc,
        unit="batch",
        dynamic_ncols=True,
        leave=True,
    )


# A finiteness check per step is free on CPU; on accelerators it would stall the queue every batch.
SYNC_EACH_STEP_DEVICES = ("cpu",)


def _diverged(loss: float | str, epoch: int, step: int, checkpoint_path: Path) -> None:
    raise TrainingError(
        f"training diverged: the loss became {loss} at epoch {epoch + 1}, batch {step + 1}; the "
        f"last good checkpoint ({'none yet' if epoch == 0 else f'epoch {epoch}'}) is kept in "
        f"{checkpoint_path.parent} — lower --lr or change --loss, then --resume."
    )


def train(
    config: TrainConfig,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train (or resume) the run `config` describes; returns the report dict written to report.json.

    `resume` continues from `out/checkpoint` up to `config.epochs` epochs in total (a finished run
    with as many epochs returns its report); without it an `out` that already holds a run is
    refused unless `force`, which deletes that run first. `command` (the CLI passes its command
    line) is recorded in the report's settings.
    """
    from varloss.data import load
    from varloss.models import create_model, save_model

    config.validate()
    out = Path(config.out)
    device = pick_device(config.device)
    dist_info = _init_distributed(device)
    if (
        resume
        and (out / REPORT_FILE).is_file()
        and (out / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file()
    ):
        checkpoint = _load_checkpoint(out / CHECKPOINT_DIR / CHECKPOINT_FILE)
        if checkpoint["epoch"] == config.epochs and checkpoint["config"] == config.identity():
            import json

            return json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))
    checkpoint = _prepare_folder(config, out, resume, force) if dist_info.main else None
    _barrier(dist_info)
    if dist_info.world > 1 and not dist_info.main and resume:
        path = out / CHECKPOINT_DIR / CHECKPOINT_FILE
        checkpoint = _load_checkpoint(path) if path.is_file() else None

    train_set = load(config.dataset, "train", data_path=config.data_path, limit=config.limit)
    images = train_set.images.to(device)
    n = images.shape[0]
    if n < 2:
        raise InputError(
            f"dataset {config.dataset} has {n} training images; at least 2 are needed."
        )
    torch.manual_seed(config.seed)
    model = create_model(
        config.family, tuple(images.shape[1:]), config.latent, config.loss, **config.hyper
    )
    model.to(device)
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
    train_seconds_before = sum(row["seconds"] for row in history)

    network: torch.nn.Module = model
    if dist_info.world > 1:
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

    bar = _progress(
        config.epochs * steps_per_epoch,
        start_epoch * steps_per_epoch,
        progress and dist_info.main,
        f"{config.family} on {config.dataset}",
    )
    checkpoint_path = out / CHECKPOINT_DIR / CHECKPOINT_FILE
    sync_each_step = device.type in SYNC_EACH_STEP_DEVICES
    try:
        for epoch in range(start_epoch, config.epochs):
            started, cpu_started = time.perf_counter(), time.process_time()
            model.train()
            generator = torch.Generator(device="cpu").manual_seed(epoch_seed(config.seed, epoch))
            order = torch.randperm(n, generator=generator).to(device)
            torch.manual_seed(epoch_seed(config.seed, epoch) + dist_info.rank)  # noise
            sums = torch.zeros(4, dtype=torch.float64, device=device)
            first_bad = torch.full((), -1, dtype=torch.long, device=device)
            for step in range(steps_per_epoch):
                batch = order[step * config.batch_size : (step + 1) * config.batch_size]
                if dist_info.world > 1:
                    batch = batch.tensor_split(dist_info.world)[dist_info.rank]
                x = images[batch]
                with autocast:
                    terms = network(x)
                if sync_each_step:
                    if not torch.isfinite(terms.loss):
                        _diverged(float(terms.loss.detach()), epoch, step, checkpoint_path)
                else:  # no host sync per step on accelerators: remember the first bad batch
                    bad = ~torch.isfinite(terms.loss.detach()) & (first_bad < 0)
                    first_bad = torch.where(bad, step, first_bad)
                    if step % 20 == 19 or step == steps_per_epoch - 1:
                        if int(first_bad) >= 0:
                            _diverged("non-finite", epoch, int(first_bad), checkpoint_path)
                optimizer.zero_grad(set_to_none=True)
                terms.loss.backward()
                optimizer.step()
                scheduler.step()
                values = torch.stack(
                    [
                        terms.loss.detach(),
                        terms.reconstruction.detach(),
                        terms.kl.detach(),
                        terms.mse.detach(),
                    ]
                ).to(torch.float64)
                sums += values * x.shape[0]
                bar.update(1)
                if step % 20 == 0 or step == steps_per_epoch - 1:
                    loss, _, kl, mse = values.tolist()
                    bar.set_postfix(
                        epoch=f"{epoch + 1}/{config.epochs}",
                        loss=f"{loss:.4g}",
                        mse=f"{mse:.4g}",
                        kl=f"{kl:.4g}",
                        refresh=False,
                    )
            if dist_info.world > 1:
                import torch.distributed as dist

                dist.all_reduce(sums)
            means = (sums / n).tolist()
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": means[0],
                    "reconstruction": means[1],
                    "kl": means[2],
                    "mse": means[3],
                    "lr": float(optimizer.param_groups[0]["lr"]),
                    "seconds": time.perf_counter() - started,
                    "cpu_seconds": time.process_time() - cpu_started,
                }
            )
            if dist_info.main:
                atomic_torch_save(
                    checkpoint_path,
                    {
                        "epoch": epoch + 1,
                        "config": config.identity(),
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "history": history,
                    },
                )
                _write_history(out / HISTORY_FILE, history)
    finally:
        bar.close()
    train_seconds = train_seconds_before + sum(row["seconds"] for row in history[start_epoch:])

    settings = {
        **({"command": command} if command else {}),
        "train": dataclasses.asdict(config),
        "device": str(device),
        "device_name": _device_name(device),
        "world_size": dist_info.world,
        "torch_threads": torch.get_num_threads(),
        "optimizer": {"name": "Adam", "fused": fused},
        "versions": _versions(),
        "train_images": n,
        "train_source": train_set.source,
    }
    if dist_info.main:
        save_model(model, out, extra={"train": dataclasses.asdict(config), "versions": _versions()})
    report = evaluate(
        model, config, dist_info=dist_info, out=out if dist_info.main else None, settings=settings
    )
    report["train_seconds"] = train_seconds
    report["final_loss"] = history[-1]["loss"] if history else None
    report["history"] = history
    if dist_info.main:
        atomic_write_json(out / REPORT_FILE, report)
    _barrier(dist_info)
    return report


# ----------------------------------------------------------------------------------------------
# Evaluation


def _batches(tensor: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, tensor.shape[0], size):
        yield tensor[start : start + size]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    config: TrainConfig,
    *,
    dist_info: _Dist | None = None,
    out: Path | None = None,
    settings: dict[str, Any] | None = None,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Seeded evaluation on the test split: real vs reconstructions decode(mu), and real vs as many
    prior samples as test images. Same weights, same config -> the same numbers, bit for bit.

    With `out`, also writes samples.png and maps.npz there.
    """
    from varloss.data import load
    from varloss.figures import save_image_grid
    from varloss.metrics import VarianceLoss

    dist_info = dist_info or _Dist()
    test_set = load(config.dataset, "test", data_path=config.data_path, limit=config.eval_limit)
    device = next(model.parameters()).device
    model.eval()
    real_all = test_set.images
    n_test = real_all.shape[0]
    shard = torch.arange(n_test).tensor_split(dist_info.world)[dist_info.rank]
    real = real_all[shard].to(device)
    generator = torch.Generator(device="cpu").manual_seed(epoch_seed(config.seed, -1))
    # Draw every rank's codes from one stream so the samples do not depend on the world size.
    codes = torch.randn(n_test, model.latent_dim, generator=generator)[shard].to(device)

    want_fid = _fid_wanted(config, dist_info, device)
    kept: list[torch.Tensor] = []
    metric = VarianceLoss().to(device)
    first: dict[str, torch.Tensor] = {}
    for start in range(0, real.shape[0], batch_size):
        x = real[start : start + batch_size]
        reconstructed = model.reconstruct(x).float()
        generated = model.decode(codes[start : start + batch_size]).float()
        metric.update(x, reconstructed=reconstructed, generated=generated)
        if want_fid:
            kept.append(generated.cpu())
        if not first:
            first = {
                "real": x[:GRID_SIZE],
                "reconstructed": reconstructed[:GRID_SIZE],
                "generated": generated[:GRID_SIZE],
            }
    result = metric.sync_report(dims=list(real_all.shape[1:]))
    report = result.to_dict()
    report["settings"] = {
        **(settings or {}),
        "evaluation": {
            "split": "test",
            "test_images": n_test,
            "test_source": test_set.source,
            "reconstructions": "decode(mu)",
            "generated": f"decode(z), z ~ N(0, I), {n_test} codes seeded from seed {config.seed}",
        },
    }
    if want_fid:
        # Under DDP each rank generated a shard of the one seeded stream: rank 0 gets them all.
        generated_all = _gather_on_main(torch.cat(kept), dist_info)
        if dist_info.main:
            report["fid"], report["fid_reason"] = _domain_fid(test_set, generated_all, config)
    elif config.fid != "off":
        report["fid_reason"] = (
            f"no cached domain classifier for {config.dataset} (train one with "
            f"`varloss fid --real {config.dataset}:test ...` or use --fid on)"
        )
    if out is not None:
        save_image_grid(
            {k: v.cpu() for k, v in first.items()},
            out / SAMPLES_FILE,
            title=f"{config.family} on {config.dataset}: real / reconstructed / generated",
        )
        result.save_maps(out / MAPS_FILE)
    return report


def _fid_wanted(config: TrainConfig, dist_info: _Dist, device: torch.device) -> bool:
    """--fid on, or auto with a cached classifier; under DDP every rank must agree (they all
    take part in gathering the samples), so a rank that cannot see the cache turns it off."""
    if config.fid == "off":
        return False
    wanted = config.fid == "on"
    if not wanted:
        from varloss.quality.domain import domain_extractor_available

        wanted = domain_extractor_available(config.dataset)
    if dist_info.world > 1:
        import torch.distributed as dist

        flag = torch.tensor([int(wanted)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        wanted = bool(flag.item())
    return wanted


def _gather_on_main(samples: torch.Tensor, dist_info: _Dist) -> torch.Tensor:
    """Every rank's samples concatenated in rank order on rank 0 (other ranks: their own)."""
    if dist_info.world == 1:
        return samples
    import torch.distributed as dist

    parts: list[Any] | None = [None] * dist_info.world if dist_info.main else None
    dist.gather_object(samples, parts, dst=0)
    return torch.cat(parts) if parts is not None else samples


def _domain_fid(real: Any, generated: torch.Tensor, config: TrainConfig):
    """FID (domain features) of the prior samples against the test split, or None and why."""
    from varloss.quality import fid

    try:
        result = fid(
            real,
            generated.clamp(0.0, 1.0),
            features="domain",
            dataset=config.dataset,
            train_domain=config.fid == "on",
        )
    except InputError as error:
        return None, str(error)
    return result, None
