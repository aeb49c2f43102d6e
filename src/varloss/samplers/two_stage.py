"""`two-stage`: a second, small VAE learns the distribution of the first stage's codes mu.

Dai & Wipf (2019), with the balanced reconstruction/KL rule of Asperti & Trentin (2020) in latent
space. The second stage loses variance as well, so by default its generated codes are
renormalised per dimension to the statistics of the first stage's aggregate posterior: mean
E[mu] and, by the law of total variance, variance Var(mu) + E[sigma^2] (the variance of a
sampled code z = mu + sigma eps). `target="spherical"` maps to N(0, I) instead;
`renormalize=False` shows the raw second stage.

The second stage stops early on its own validation split: the fraction `validation` of the codes
(drawn with the seed) is held out, its loss (the full negative ELBO, eval mode, the same seeded
draws every epoch) is measured after each epoch once the KL warm-up is over, and training stops
when `patience` epochs in a row have not improved on the best by the fraction `min_delta` of
it; the weights of the best epoch are kept. `steps` is then a cap, and the cosine schedule runs
over it. `patience=0` trains for all `steps` (on all codes when `validation=0`).

The defaults (hidden (128, 128), batches of 512, lr 2e-3, at most 3000 steps: ~29 epochs of
MNIST's 54,000 training codes) replaced (256, 256), 256, 1e-3 and 6000 steps (the same ~29
epochs) for `varloss correct`'s speed (issue 23): an epoch costs 0.31 of the old one and the
whole fit 0.37 (12.3 s against 32.0 s on MNIST's 60,000 codes; side by side, one thread, busy
cores). On a dense MNIST latent-8 model (trained 4 epochs on 10,000 images,
the second stage fitted on all 60,000 training codes; `correct` seeds 0 and 1, new against old)
the best validation loss fell (2.46 and 2.60 against 2.89 and 2.85) and `two-stage` improved
(pixel Fréchet 9.71 and 9.80 against 9.92 and 9.94, gap closed 0.238 and 0.225 against 0.215
twice, spectral error 1.93 and 1.95 against 1.95 and 1.93); `two-stage-raw`, the second stage
before renormalisation, was even on seed 0 (pixel Fréchet 10.96 against 10.92, gap closed 0.156
against 0.150, spectral error 2.17 against 2.14) and a little worse on seed 1 (11.15 against
10.93, 0.136 against 0.151, 2.21 against 2.12). Fewer epochs cost the raw second stage more (15
epochs at lr 2e-3: pixel Fréchet 11.76 on seed 0), so the cap stays at ~29 epochs; the
validation loss was still falling there, so early stopping rarely ends it on MNIST.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from varloss._progress import progress_bar
from varloss.errors import InputError
from varloss.losses import BalancedGaussian, gaussian_kl
from varloss.samplers.base import Sampler, register
from varloss.samplers.latents import (
    aggregate_posterior_stats,
    check_sample_count,
    encode_dataset,
    renormalize_latents,
    seeded_generator,
    standard_normal,
)
from varloss.variance import measure
from varloss.variance.protocol import Stream, stream_seed

_STD_FLOOR = 1e-8  # keeps standardisation finite for a code dimension that never varies


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


@register
class TwoStageSampler(Sampler):
    """A second VAE on the first stage's codes mu, with optional renormalisation of its output.

    With `renormalize=True` the generated codes are standardised per dimension (with moments
    measured on `n_renorm` seeded second-stage samples at fit time, so the map is a fixed affine
    one) and mapped to `target`: "aggregate" = the first stage's aggregate posterior (mean E[mu],
    variance Var(mu) + E[sigma^2]) or "spherical" = N(0, I).
    """

    name = "two-stage"
    fits_posterior = True  # on the training codes mu and their aggregate posterior
    TARGETS: ClassVar[tuple[str, ...]] = ("aggregate", "spherical")

    def __init__(
        self,
        renormalize: bool = True,
        target: str = "aggregate",
        latent_dim: int | None = None,
        hidden: Sequence[int] = (128, 128),
        steps: int = 3000,
        warmup: float = 0.2,
        train_batch_size: int = 512,
        lr: float = 2e-3,
        n_renorm: int = 10000,
        validation: float = 0.1,
        patience: int = 3,
        min_delta: float = 1e-3,
        progress: bool = False,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        self._check_target(target)
        if int(steps) < 1:
            raise InputError(f"steps must be a positive integer, got {steps!r}.")
        if not 0.0 <= float(warmup) <= 1.0:
            raise InputError(f"warmup must be a fraction of steps in [0, 1], got {warmup!r}.")
        if not 0.0 <= float(validation) < 1.0:
            raise InputError(f"validation must be a fraction in [0, 1), got {validation!r}.")
        if isinstance(patience, bool) or int(patience) < 0:
            raise InputError(f"patience must be a whole number of epochs >= 0, got {patience!r}.")
        if int(patience) > 0 and float(validation) == 0.0:
            raise InputError("patience needs a validation split: give validation > 0.")
        self.validation, self.patience = float(validation), int(patience)
        self.min_delta = float(min_delta)
        self.renormalize = bool(renormalize)
        self.target = target
        self.second_latent_dim = None if latent_dim is None else int(latent_dim)
        self.hidden = [int(h) for h in hidden]
        self.steps = int(steps)
        self.warmup = float(warmup)
        self.train_batch_size = int(train_batch_size)
        self.lr = float(lr)
        self.n_renorm = int(n_renorm)
        self.progress = bool(progress)
        self.network: LatentVAE | None = None
        self.code_mean: torch.Tensor | None = None  # standardisation of the second stage's input
        self.code_std: torch.Tensor | None = None
        self.aggregate: dict[str, torch.Tensor] = {}
        self.generated_mean: torch.Tensor | None = None  # moments of raw generated codes
        self.generated_std: torch.Tensor | None = None
        self.final_mse: float | None = None
        self.final_kl: float | None = None
        self.epochs_trained: int | None = None
        self.best_epoch: int | None = None
        self.best_validation_loss: float | None = None

    @classmethod
    def _check_target(cls, target: str) -> None:
        if target not in cls.TARGETS:
            raise InputError(f"target must be one of {list(cls.TARGETS)}, got {target!r}.")

    def params(self) -> dict[str, Any]:
        return {
            "renormalize": self.renormalize,
            "target": self.target,
            "latent_dim": self.second_latent_dim,
            "hidden": self.hidden,
            "steps": self.steps,
            "warmup": self.warmup,
            "train_batch_size": self.train_batch_size,
            "lr": self.lr,
            "n_renorm": self.n_renorm,
            "validation": self.validation,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "progress": self.progress,
            **super().params(),
        }

    def _standardised_codes(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The codes mu of `images`, standardised as the second stage sees them (float32)."""
        mu, _ = encode_dataset(model, images, self.batch_size)
        return ((mu - self.code_mean) / self.code_std).to(torch.float32)

    def _fit(self, model: nn.Module, images: torch.Tensor) -> None:
        mu, logvar = self.shared.encoded(self.batch_size)  # shared with gmm
        self.aggregate = aggregate_posterior_stats(mu, logvar)
        self.code_mean = mu.mean(0)
        self.code_std = mu.std(0, correction=0).clamp_min(_STD_FLOOR)
        inputs = ((mu - self.code_mean) / self.code_std).to(torch.float32)
        torch_state = torch.random.get_rng_state()
        threads = torch.get_num_threads()
        torch.manual_seed(self.seed)  # weight init and reparameterisation noise are seeded
        # Small MLP steps are fastest on one thread; with several threads on a busy machine
        # they were measured 40x slower (10 ms vs 490 ms per step on 2 shared cores).
        torch.set_num_threads(1)
        try:
            self.network = LatentVAE(
                mu.shape[1], self.second_latent_dim or mu.shape[1], self.hidden
            )
            self._train(inputs)
        finally:
            torch.set_num_threads(threads)
            torch.random.set_rng_state(torch_state)
        raw = self._raw_codes(self.n_renorm, seeded_generator(self.seed + 1))
        self.generated_mean = raw.mean(0)
        self.generated_std = raw.std(0, correction=0).clamp_min(_STD_FLOOR)

    def _split(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(codes to train on, held-out codes or None): `validation` of them, seeded."""
        held_out = round(self.validation * inputs.shape[0]) if self.patience else 0
        if held_out == 0:
            return inputs, None
        if inputs.shape[0] - held_out < 2:
            raise InputError(
                f"validation {self.validation} of {inputs.shape[0]} codes leaves fewer than 2 "
                "to train the second stage on."
            )
        order = torch.randperm(inputs.shape[0], generator=seeded_generator(self.seed + 3))
        return inputs[order[held_out:].sort().values], inputs[order[:held_out].sort().values]

    @torch.no_grad()
    def _validation_loss(self, codes: torch.Tensor) -> float:
        """The full negative ELBO of the held-out codes, eval mode, the same draws each call."""
        self.network.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 4)
            loss, _, _ = self.network.loss(codes)
        self.network.train()
        return float(loss)

    def _train(self, inputs: torch.Tensor) -> None:
        """Adam with a cosine schedule and a KL warm-up, on reshuffled epochs of `inputs`, stopped
        early on the validation split (`_Patience`)."""
        inputs, held_out = self._split(inputs)
        patience = _Patience(self.patience, self.min_delta)
        network = self.network
        network.train()
        optimizer = torch.optim.Adam(network.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.steps)
        order_generator = seeded_generator(self.seed + 2)
        order = torch.randperm(inputs.shape[0], generator=order_generator)
        position = 0
        warmup = int(self.warmup * self.steps)
        # an epoch: one pass over the shuffled codes (a last partial batch is left out)
        epochs = math.ceil(self.steps / max(1, inputs.shape[0] // self.train_batch_size))
        bar = progress_bar(
            total=epochs,
            desc="second stage",
            unit="epoch",
            disable=not self.progress,
            leave=False,
        )
        epoch = 0
        for step in range(self.steps):
            if position + self.train_batch_size > inputs.shape[0]:  # a new epoch: reshuffle
                epoch = self._epoch_done(bar, epoch, epochs)
                # judged once the KL weight is 1: before, the loss is another objective
                if held_out is not None and step >= warmup:
                    if patience.stop(self._validation_loss(held_out), epoch, network):
                        break
                order = torch.randperm(inputs.shape[0], generator=order_generator)
                position = 0
            batch = inputs[order[position : position + self.train_batch_size]]
            position += self.train_batch_size
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
            epoch = self._epoch_done(bar, epoch, epochs)  # the last one
            if held_out is not None:
                patience.stop(self._validation_loss(held_out), epoch, network)
        bar.close()
        patience.restore(network)
        self.epochs_trained, self.best_epoch = epoch, patience.best_epoch
        self.best_validation_loss = patience.best
        network.eval()
        with torch.no_grad():
            _, mse, kl = network.loss(inputs)
        self.final_mse, self.final_kl = mse.item(), kl.item()

    def _epoch_done(self, bar: Any, epoch: int, epochs: int) -> int:
        """Epoch `epoch + 1` of `epochs` ended: the bar and `on_epoch` are told; returns it."""
        bar.update(1)
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, epochs)
        return epoch + 1

    @torch.no_grad()
    def _raw_codes(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """Second-stage samples mapped back to first-stage code units (float64, no renorm)."""
        v = standard_normal(n, self.network.latent_dim, generator)
        u = self.network.decode(v).to(torch.float64)
        return u * self.code_std + self.code_mean

    @torch.no_grad()
    def latent_sets(
        self, model: nn.Module, images: torch.Tensor, n: int, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """The second stage's own variance loss, in its input's units: `codes` (the first stage's
        codes mu of `images`, standardised as the second stage sees them), their second-stage
        reconstructions decode(mean of q(v | u)) and `n` raw second-stage samples (before any
        renormalisation), float64. `varloss.measure` of the three gives the latent variance loss
        the renormalisation rule makes up for."""
        self._require_model()
        mu, _ = encode_dataset(model, images, self.batch_size)
        codes = (mu - self.code_mean) / self.code_std
        mean, _ = self.network.encode(codes.to(torch.float32))
        draws = standard_normal(check_sample_count(n), mean.shape[1], generator)
        generated = self.network.decode(draws)
        return {
            "codes": codes.to(torch.float64),
            "reconstructed": self.network.decode(mean).to(torch.float64),
            "generated": generated.to(torch.float64),
        }

    def target_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension (mean, variance) the renormalised codes are mapped to."""
        if self.target == "spherical":
            return torch.zeros_like(self.aggregate["mean"]), torch.ones_like(self.aggregate["var"])
        return self.aggregate["mean"], self.aggregate["var"]

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        self._require_model()
        codes = self._raw_codes(check_sample_count(n), generator)
        if self.renormalize:
            mean, var = self.target_moments()
            codes = renormalize_latents(codes, self.generated_mean, self.generated_std, mean, var)
        return codes.to(torch.float32)

    def variant(self, renormalize: bool, target: str = "aggregate") -> TwoStageSampler:
        """The same fitted second stage with another renormalisation setting (no refit)."""
        self._check_target(target)
        other = copy.copy(self)
        other.renormalize, other.target = bool(renormalize), target
        return other

    def reuse(self, fitted: Sampler) -> Sampler | None:
        """`fitted`'s second stage with this sampler's renormalisation, when the two differ in
        nothing else (the two-stage methods share one trained second stage)."""
        if not isinstance(fitted, TwoStageSampler) or not fitted.fitted:
            return None
        variant = fitted.variant(self.renormalize, self.target)
        return variant if variant.params() == self.params() else None

    def diagnostics(
        self, model: nn.Module, test_images: torch.Tensor, n: int, seed: int
    ) -> dict[str, Any]:
        """`latent`: the second stage's variance loss in latent space (standardised codes mu of
        the test images against their second-stage reconstructions and `n` raw samples drawn
        from the second-stage stream of `seed`) and its ratio to the second stage's MSE: the
        quantity the renormalisation rule makes up for."""
        generator = torch.Generator().manual_seed(stream_seed(seed, Stream.SECOND_STAGE_CODES))
        sets = self.latent_sets(model, test_images, n, generator)
        # Codes, not images: declared on one range (their joint span), so measure's check for
        # sets on different scales lets a second stage whose output barely varies through.
        # measure maps that range onto [0, 1]: variances and MSE come back divided by its
        # width squared, and are multiplied back (ratios are scale-free).
        low = min(float(values.min()) for values in sets.values())
        high = max(float(values.max()) for values in sets.values())
        width = high - low if high > low else 1.0
        report = measure(
            sets["codes"], sets["reconstructed"], sets["generated"], value_range=(low, high)
        )
        scale = {key: width**2 for key in _LATENT_KEYS if not key.startswith("ratio")}
        return {
            "latent": {
                "space": "first-stage codes mu of the test images, standardised per dimension",
                "n_codes": report.n_real,
                "latent_dim": int(sets["codes"].shape[1]),
                "var_codes": report.var_real * width**2,
                **{key: getattr(report, key) * scale.get(key, 1.0) for key in _LATENT_KEYS},
                "renormalized": self.renormalize,
            }
        }

    def _fitted_scalars(self) -> dict[str, Any]:
        return {
            "second_stage_mse": self.final_mse,
            "second_stage_kl": self.final_kl,
            "second_stage_epochs": self.epochs_trained,
            "second_stage_best_epoch": self.best_epoch,
            "second_stage_validation_loss": self.best_validation_loss,
        }

    def _state(self) -> dict[str, torch.Tensor]:
        state = {f"network.{key}": value for key, value in self.network.state_dict().items()}
        state.update(
            code_mean=self.code_mean,
            code_std=self.code_std,
            generated_mean=self.generated_mean,
            generated_std=self.generated_std,
        )
        state.update({f"aggregate.{key}": value for key, value in self.aggregate.items()})
        return state

    def _set_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        self.code_mean, self.code_std = tensors["code_mean"], tensors["code_std"]
        self.generated_mean = tensors["generated_mean"]
        self.generated_std = tensors["generated_std"]
        self.aggregate = _with_prefix(tensors, "aggregate.")
        dim = self.code_mean.shape[0]
        self.network = LatentVAE(dim, self.second_latent_dim or dim, self.hidden)
        self.network.load_state_dict(_with_prefix(tensors, "network."))
        self.network.eval()
        self.final_mse = scalars.get("second_stage_mse")
        self.final_kl = scalars.get("second_stage_kl")
        self.epochs_trained = scalars.get("second_stage_epochs")
        self.best_epoch = scalars.get("second_stage_best_epoch")
        self.best_validation_loss = scalars.get("second_stage_validation_loss")


_LATENT_KEYS = (
    "var_reconstructed",
    "var_generated",
    "variance_loss_reconstructed",
    "variance_loss_generated",
    "mse",
    "ratio_reconstructed",
    "ratio_generated",
)


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


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries whose key starts with `prefix`, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
