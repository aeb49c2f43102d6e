"""A training run's folder before training: the report of a finished run (rebuilt from its
checkpoint when a file is damaged), what `--resume` continues from, what `--force` may remove,
and the checkpoint read back verified. The trainer (`pipelines/train.py`) writes; this module
decides what the folder it finds means.
"""

from __future__ import annotations

import logging
from typing import Any

from varloss._io import fault_point
from varloss.errors import InputError
from varloss.pipelines.early_stopping import stopped_in
from varloss.pipelines.runtime import Ranks
from varloss.run_removal import remove_train_run
from varloss.runs import (
    CHECKPOINT_DIR,
    CHECKPOINT_FILE,
    HISTORY_FILE,
    MANIFEST_FILE,
    REPORT_FILE,
    TRAIN_RUN_FILES,
    RunFolder,
)
from varloss.train_config import TrainConfig
from varloss.variance.protocol import protocol_of

log = logging.getLogger("varloss")


def finished_report(folder: RunFolder, config: TrainConfig, ranks: Ranks) -> dict | None:
    """The report of a finished run of exactly `config`, or None when it must (re)run.

    A damaged config.json, model.safetensors, report.json, samples.png or maps.npz of a finished
    run is rebuilt from its (verified) checkpoint by the normal path, which says so; a report of
    the other reconstruction protocol is measured again the same way (nothing is trained).
    """
    if not (folder.exists(REPORT_FILE) and folder.exists(CHECKPOINT_FILE)):
        return None
    checkpoint = load_checkpoint(folder)
    ended = checkpoint["epoch"] == config.epochs or (
        stopped_in(checkpoint, config) and checkpoint["epoch"] <= config.epochs
    )
    if not ended or not config.trains_like(checkpoint["config"]):
        return None  # prepare_folder explains what differs, or resumes
    rebuilding = f"rebuilding the run from {folder.file(CHECKPOINT_FILE)} (epoch {config.epochs})"
    try:
        if folder.manifest() is None:  # nothing vouches for the files: rebuild and seal them
            raise InputError(
                f"{folder.path} has no {MANIFEST_FILE} (written before varloss checked its run "
                f"folders); {rebuilding}."
            )
        for name in TRAIN_RUN_FILES:
            folder.verify(name, required=True, advice=rebuilding)
        report = folder.read_json(REPORT_FILE, advice=rebuilding)
    except InputError as damage:
        if ranks.main:
            log.warning("%s", damage)
        return None
    measured = protocol_of(report)  # older reports: decode(mu)
    return report if measured == config.reconstruction else None  # else: measure it again


def prepare_folder(
    folder: RunFolder, config: TrainConfig, resume: bool, force: bool
) -> dict[str, Any] | None:
    """Check what the folder holds; returns the checkpoint to resume from, or None to start."""
    holds_run = any(
        folder.file(name).exists() for name in (*TRAIN_RUN_FILES, CHECKPOINT_DIR, MANIFEST_FILE)
    )
    out = folder.path
    if resume:
        if not folder.exists(CHECKPOINT_FILE):
            if folder.exists(REPORT_FILE):
                raise InputError(
                    f"out {out} holds a finished run without a checkpoint; nothing to resume."
                )
            return None  # nothing written yet: resuming is starting
        checkpoint = load_checkpoint(folder)
        mine = config.identity()
        differ = sorted(k for k in mine if checkpoint["config"].get(k) != mine[k])
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
        # Unfinished again until the new report is written: the report goes first (a kill
        # before the manifest forgets it leaves an entry without its file, which the next resume
        # removes again), then the manifest vouches only for checkpoint and history; the rest is
        # rewritten at the end.
        folder.file(REPORT_FILE).unlink(missing_ok=True)
        fault_point("resume:report-removed")
        folder.forget(*(name for name in TRAIN_RUN_FILES if name != HISTORY_FILE))
        fault_point("resume:entries-dropped")
        return checkpoint
    if holds_run:
        if not force:
            raise InputError(
                f"out {out} already holds a run; pass --resume to continue it or --force to "
                "overwrite it."
            )
        remove_train_run(folder, what="--out")  # only what varloss wrote, correct/ included
    return None


def load_checkpoint(folder: RunFolder) -> dict[str, Any]:
    """The checkpoint, verified against its recorded SHA-256 first: never resume damaged state."""
    checkpoint = folder.read_torch(CHECKPOINT_FILE)
    keys = {"epoch", "config", "model", "optimizer", "scheduler", "history"}
    if not isinstance(checkpoint, dict) or not keys <= set(checkpoint):
        raise InputError(
            f"{folder.file(CHECKPOINT_FILE)} is not a varloss training checkpoint; it cannot be "
            "resumed, start the run afresh with --force."
        )
    return checkpoint
