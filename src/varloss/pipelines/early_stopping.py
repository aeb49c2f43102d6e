"""Training to convergence: a seeded validation split, the validation loss, and patience.

With `TrainConfig.patience = N` the trainer holds out the fraction `validation` of the training
images (after `limit`; which ones is drawn from the run's `Stream.VALIDATION_SPLIT`), measures
the negative ELBO of that split after every epoch (eval mode, the same posterior draws each epoch,
from the run's `Stream.VALIDATION_DRAWS`, so two epochs differ only by their weights), and
stops once N epochs in a row have not improved on the best by more than the fraction `min_delta`
of it (Keras's min_delta, made relative so that one value fits losses of any scale). The
weights of the epoch with the lowest validation loss become the run's model, even when that
epoch's gain was too small to reset the count. Everything the rule needs (best loss, best epoch,
epochs since, the last counted loss, best weights) is in the checkpoint, so a resumed run stops
where an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from varloss.errors import InputError
from varloss.train_config import TrainConfig
from varloss.variance.protocol import Stream, stream_seed

__all__ = ["VALIDATION_COLUMNS", "EarlyStopping", "split_validation", "validation_loss"]

# history.csv columns added by early stopping: the validation split's loss and MSE per pixel.
VALIDATION_COLUMNS = ("val_loss", "val_mse")
VALIDATION_BATCH = 500  # images per forward pass of the validation loss (no gradients kept)


def split_validation(
    images: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(training images, validation images, what the report records about the split).

    The validation images are round(validation * N) of the N training images, drawn without
    replacement by a generator seeded with the run's validation-split stream (`stream_seed(seed,
    Stream.VALIDATION_SPLIT)`, the value epoch_seed(seed, -3) always had); both parts keep their
    order.
    """
    n = images.shape[0]
    n_validation = round(n * float(config.validation))
    if n_validation < 1 or n - n_validation < 2:
        raise InputError(
            f"validation {config.validation} of {n} training images leaves {n_validation} for "
            f"validation and {n - n_validation} for training; at least 1 and 2 are needed."
        )
    seed = stream_seed(config.seed, Stream.VALIDATION_SPLIT)
    order = torch.randperm(n, generator=torch.Generator(device="cpu").manual_seed(seed))
    held_out = order[:n_validation].sort().values.to(images.device)
    kept = order[n_validation:].sort().values.to(images.device)
    record = {"fraction": float(config.validation), "images": n_validation, "seed": seed}
    return images[kept], images[held_out], record


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, images: torch.Tensor, seed: int, autocast: Any
) -> dict[str, float]:
    """Mean negative ELBO and MSE per pixel of `images` in eval mode, under posterior draws
    seeded with `seed` (the global RNG is restored afterwards)."""
    was_training = model.training
    model.eval()
    device = images.device
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in images.split(VALIDATION_BATCH):
            with autocast:
                terms = model(batch)
            sums += torch.stack([terms.loss, terms.mse]).to(torch.float64) * batch.shape[0]
    model.train(was_training)
    loss, mse = (sums / images.shape[0]).tolist()
    return {"val_loss": loss, "val_mse": mse}


@dataclass
class EarlyStopping:
    """The patience rule over the validation loss, and the best weights seen so far."""

    patience: int
    images: torch.Tensor  # the validation split, on the training device
    record: dict[str, Any]  # fraction, images, seed: what the report says about the split
    noise_seed: int
    min_delta: float = 0.0  # a gain below this fraction of the reference loss does not count
    best_loss: float = math.inf  # the lowest validation loss seen (its weights are kept)
    best_epoch: int = 0
    since_best: int = 0  # epochs since the last gain that counted
    reference_loss: float = math.inf  # the loss of the last gain that counted
    best_model: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def create(cls, config: TrainConfig, images: torch.Tensor, record: dict[str, Any]):
        """The rule for `config` (patience) on the validation `images`."""
        noise_seed = stream_seed(config.seed, Stream.VALIDATION_DRAWS)
        return cls(int(config.patience), images, record, noise_seed, float(config.min_delta))

    @property
    def stopped(self) -> bool:
        """True once `patience` epochs in a row have not improved enough on the best."""
        return self.since_best >= self.patience

    def observe(self, model: torch.nn.Module, epoch: int, autocast: Any) -> dict[str, float]:
        """The validation loss after `epoch` (1-based); a better one keeps a copy of the weights.
        Returns the history row's validation columns."""
        row = validation_loss(model, self.images, self.noise_seed, autocast)
        loss = row["val_loss"]
        if loss < self.best_loss:  # NaN never improves
            self.best_loss, self.best_epoch = loss, epoch
            self.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if loss < _counted_below(self.reference_loss, self.min_delta):
            self.reference_loss, self.since_best = loss, 0
        else:
            self.since_best += 1
        return row

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds to resume the rule exactly."""
        return {
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "since_best": self.since_best,
            "reference_loss": self.reference_loss,
            "best_model": self.best_model,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss = float(state["best_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.since_best = int(state["since_best"])
        self.best_model = dict(state["best_model"])
        # checkpoints written before min_delta: every gain counted, the reference was the best
        self.reference_loss = float(state.get("reference_loss", self.best_loss))

    def summary(self) -> dict[str, Any]:
        """The report's keys: where training stopped and which epoch's weights were kept."""
        return {
            "best_epoch": self.best_epoch,
            "best_validation_loss": self.best_loss,
            "early_stopped": self.stopped,
        }


def _counted_below(reference: float, min_delta: float) -> float:
    """The loss an epoch must beat for its gain to count (any finite loss beats no reference)."""
    return reference - min_delta * abs(reference) if math.isfinite(reference) else math.inf


def stopped_in(checkpoint: dict[str, Any], config: TrainConfig) -> bool:
    """True when `checkpoint` is a run that early stopping already ended (it trains no further)."""
    state = checkpoint.get("early_stopping")
    return bool(state) and config.patience is not None and state["since_best"] >= config.patience
