"""Deprecated: the trainer moved to `varloss.pipelines.train` (and `varloss.pipelines.evaluate`).

`from varloss.train import TrainConfig, train, evaluate` keeps working with a DeprecationWarning.
"""

from __future__ import annotations

import warnings

from varloss.pipelines.config import FID_MODES, SCHEDULES, TrainConfig
from varloss.pipelines.evaluate import GRID_SIZE, evaluate
from varloss.pipelines.runtime import epoch_seed, pick_device
from varloss.pipelines.train import HISTORY_COLUMNS, SYNC_EACH_STEP_DEVICES, train
from varloss.runs import (
    CHECKPOINT_DIR,
    HISTORY_FILE,
    MAPS_FILE,
    REPORT_FILE,
    SAMPLES_FILE,
)
from varloss.runs import TRAIN_RUN_FILES as RUN_FILES

CHECKPOINT_FILE = "last.pt"  # inside CHECKPOINT_DIR (varloss.runs.CHECKPOINT_FILE is the full name)

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_FILE",
    "FID_MODES",
    "GRID_SIZE",
    "HISTORY_COLUMNS",
    "HISTORY_FILE",
    "MAPS_FILE",
    "REPORT_FILE",
    "RUN_FILES",
    "SAMPLES_FILE",
    "SCHEDULES",
    "SYNC_EACH_STEP_DEVICES",
    "TrainConfig",
    "epoch_seed",
    "evaluate",
    "pick_device",
    "train",
]

warnings.warn(
    "varloss.train is deprecated; use varloss.pipelines.train", DeprecationWarning, stacklevel=2
)
