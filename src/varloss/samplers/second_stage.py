"""The second stage of the two-stage methods: its network (`LatentVAE`) and its training.

`train_second_stage(codes, settings)` is a plain function of the standardised first-stage codes
and the settings, returning the trained weights and what the fit reports (`SecondStageFit`), so it
runs alike in this process and in a worker process (`varloss._background`): `varloss correct`
trains the second stage there, on one core, while it fits and measures the other remedies. It
trains on one torch thread (small MLP steps are fastest on one; with several threads on a busy
machine they were measured 40x slower: 10 ms vs 490 ms per step on 2 shared cores) and draws its
weights, its noise and its orders from its own seeds, so both places give the same weights bit
for bit.

Training: Adam with a cosine schedule over `steps` and a KL warm-up over its first `warmup`
fraction, on reshuffled epochs of the codes; it stops early on its own validation split: the
fraction `validation` of the codes (drawn with the seed) is held out, its loss (the full negative
ELBO, eval mode, the same seeded draws every epoch) is measured after each epoch once the KL
warm-up is over, and training stops when `patience` epochs in a row have not improved on the best
by the fraction `min_delta` of it; the weights of the best epoch are kept. `steps` is then a cap.
`patience=0` trains for all `steps` (on all codes when `validation=0`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from varloss._progress import progress_bar
from varloss.errors import InputError
from varloss.losses import BalancedGaussian, gaussian_kl
from varloss.samplers.latents import seeded_generator


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers through `sizes` with SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(size_in, size_out))
        if index < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class LatentVAE(nn.Module):
    """The second-stage VAE: an MLP VAE on (standardised) first-stage codes.

    Gaussian likelihood with the balanced rule of Asperti & Trentin (2020), the same
    `varloss.losses.BalancedGaussian` the first-stage models use: gamma^2 is a running estimate
    of the reconstruction MSE (mse <- min(mse, momentum mse + (1 - momentum) batch_mse)), so
    reconstruction and KL stay balanced as the fit improves. The running value is a buffer
    (saved with the weights).
    """

    def __init__(
        self, dim: int, latent_dim: int, hidden: Sequence[int] = (256, 256), momentum: float = 0.99
    ) -> None:
        super().__init__()
        self.dim, self.latent_dim, self.momentum = int(dim), int(latent_dim), float(momentum)
        hidden = [int(h) for h in hidden]
        self.encoder = _mlp([self.dim, *hidden, 2 * self.latent_dim])
        self.decoder = _mlp([self.latent_dim, *hidden[::-1], self.dim])
        self.likelihood = BalancedGaussian(momentum=momentum)

    def encode(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(u).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, v: torch.Tensor) -> torch.Tensor:
        return self.decoder(v)

    def loss(
        self, u: torch.Tensor, kl_weight: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample mean of the negative ELBO (KL scaled by `kl_weight`); (loss, mse, kl)."""
        mu, logvar = self.encode(u)
        v = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        u_hat = self.decode(v)
        reconstruction = self.likelihood(u, u_hat)  # in training mode also updates gamma
        mse = (u - u_hat).detach().pow(2).mean()
        kl = gaussian_kl(mu, logvar)
        return (reconstruction + kl_weight * kl).mean(), mse, kl.mean()


@dataclass(frozen=True)
class SecondStageSettings:
    """What the second stage's training depends on (the `TwoStageSampler` parameters that shape
    it), besides the codes: `dim` input dimensions, `latent_dim` its own code size."""

    dim: int
    latent_dim: int
    hidden: tuple[int, ...]
    steps: int
    warmup: float
    train_batch_size: int
    lr: float
    validation: float
    patience: int
    min_delta: float
    seed: int


@dataclass
class SecondStageFit:
    """A trained second stage: its weights (`LatentVAE.state_dict()`, best epoch) and the fit's
    record: epochs trained, best epoch and its validation loss (None without a validation
    split), and the final MSE and KL on the training codes."""

    state: dict[str, torch.Tensor]
    epochs_trained: int
    best_epoch: int | None
    best_validation_loss: float | None
    final_mse: float
    final_kl: float
    seconds: float  # the wall time of training

    def network(self, settings: SecondStageSettings) -> LatentVAE:
        """The trained `LatentVAE` in eval mode."""
        network = LatentVAE(settings.dim, settings.latent_dim, settings.hidden)
        network.load_state_dict(self.state)
        return network.eval()


def train_second_stage(
    codes: torch.Tensor,
    settings: SecondStageSettings,
    on_epoch: Callable[[int, int], Any] | None = None,
    progress: bool = False,
) -> SecondStageFit:
    """Train a `LatentVAE` on `codes` (N x dim float32, standardised): seeded, on one torch
    thread; the caller's thread count and torch random state are given back. `on_epoch(epoch,
    epochs)` is told after each epoch; `progress` shows a bar of the epochs."""
    started = time.perf_counter()
    torch_state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    torch.manual_seed(settings.seed)  # weight init and reparameterisation noise are seeded
    torch.set_num_threads(1)
    try:
        network = LatentVAE(settings.dim, settings.latent_dim, settings.hidden)
        return _Training(network, settings, on_epoch, progress).run(codes, started)
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(torch_state)


class _Training:
    """One run of `train_second_stage`: the loop, its validation split and its epochs."""

    def __init__(
        self,
        network: LatentVAE,
        settings: SecondStageSettings,
        on_epoch: Callable[[int, int], Any] | None,
        progress: bool,
    ) -> None:
        self.network, self.settings = network, settings
        self.on_epoch, self.progress = on_epoch, progress

    def split(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(codes to train on, held-out codes or None): `validation` of them, seeded."""
        s = self.settings
        held_out = round(s.validation * inputs.shape[0]) if s.patience else 0
        if held_out == 0:
            return inputs, None
        if inputs.shape[0] - held_out < 2:
            raise InputError(
                f"validation {s.validation} of {inputs.shape[0]} codes leaves fewer than 2 "
                "to train the second stage on."
            )
        order = torch.randperm(inputs.shape[0], generator=seeded_generator(s.seed + 3))
        return inputs[order[held_out:].sort().values], inputs[order[:held_out].sort().values]

    @torch.no_grad()
    def validation_loss(self, codes: torch.Tensor) -> float:
        """The full negative ELBO of the held-out codes, eval mode, the same draws each call."""
        self.network.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed + 4)
            loss, _, _ = self.network.loss(codes)
        self.network.train()
        return float(loss)

    def run(self, inputs: torch.Tensor, started: float) -> SecondStageFit:
        """Adam with a cosine schedule and a KL warm-up, on reshuffled epochs of `inputs`,
        stopped early on the validation split (`_Patience`)."""
        s = self.settings
        inputs, held_out = self.split(inputs)
        patience = _Patience(s.patience, s.min_delta)
        network = self.network
        network.train()
        optimizer = torch.optim.Adam(network.parameters(), lr=s.lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, s.steps)
        order_generator = seeded_generator(s.seed + 2)
        order = torch.randperm(inputs.shape[0], generator=order_generator)
        position = 0
        warmup = int(s.warmup * s.steps)
        # an epoch: one pass over the shuffled codes (a last partial batch is left out)
        epochs = math.ceil(s.steps / max(1, inputs.shape[0] // s.train_batch_size))
        bar = progress_bar(
            total=epochs,
            desc="second stage",
            unit="epoch",
            disable=not self.progress,
            leave=False,
        )
        epoch = 0
        for step in range(s.steps):
            if position + s.train_batch_size > inputs.shape[0]:  # a new epoch: reshuffle
                epoch = self.epoch_done(bar, epoch, epochs)
                # judged once the KL weight is 1: before, the loss is another objective
                if held_out is not None and step >= warmup:
                    if patience.stop(self.validation_loss(held_out), epoch, network):
                        break
                order = torch.randperm(inputs.shape[0], generator=order_generator)
                position = 0
            batch = inputs[order[position : position + s.train_batch_size]]
            position += s.train_batch_size
            # KL warm-up: start as an autoencoder so the second stage does not collapse onto
            # its prior (a near-Gaussian input makes the collapsed solution a local optimum).
            kl_weight = min(1.0, (step + 1) / warmup) if warmup else 1.0
            loss, mse, kl = network.loss(batch, kl_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if step % 100 == 0:
                bar.set_postfix(mse=f"{mse.item():.4f}", kl=f"{kl.item():.2f}", refresh=False)
        else:
            epoch = self.epoch_done(bar, epoch, epochs)  # the last one
            if held_out is not None:
                patience.stop(self.validation_loss(held_out), epoch, network)
        bar.close()
        patience.restore(network)
        network.eval()
        with torch.no_grad():
            _, mse, kl = network.loss(inputs)
        return SecondStageFit(
            state=network.state_dict(),
            epochs_trained=epoch,
            best_epoch=patience.best_epoch,
            best_validation_loss=patience.best,
            final_mse=mse.item(),
            final_kl=kl.item(),
            seconds=time.perf_counter() - started,
        )

    def epoch_done(self, bar: Any, epoch: int, epochs: int) -> int:
        """Epoch `epoch + 1` of `epochs` ended: the bar and `on_epoch` are told; returns it."""
        bar.update(1)
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, epochs)
        return epoch + 1


class _Patience:
    """Early stopping: the best validation loss, its epoch and weights, epochs since."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.since = 0

    def stop(self, loss: float, epoch: int, network: nn.Module) -> bool:
        """Record epoch `epoch`'s loss; True once `patience` epochs in a row did not improve on
        the best by `min_delta` of it. The lowest loss's weights are kept in any case."""
        if self.best is None or loss < self.best:
            improved = self.best is None or loss < self.best - self.min_delta * abs(self.best)
            self.best, self.best_epoch = loss, epoch
            self.best_state = copy.deepcopy(network.state_dict())
            self.since = 0 if improved else self.since + 1
        else:
            self.since += 1
        return self.patience > 0 and self.since >= self.patience

    def restore(self, network: nn.Module) -> None:
        """Put the best epoch's weights back (nothing without a validation split)."""
        if self.best_state is not None:
            network.load_state_dict(self.best_state)
