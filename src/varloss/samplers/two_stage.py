"""`two-stage`: a second, small VAE learns the distribution of the first stage's codes mu.

Dai & Wipf (2019), with the balanced reconstruction/KL rule of Asperti & Trentin (2020) in latent
space. The second stage loses variance as well, so by default its generated codes are
renormalised per dimension to the statistics of the first stage's aggregate posterior: mean
E[mu] and, by the law of total variance, variance Var(mu) + E[sigma^2] (the variance of a
sampled code z = mu + sigma eps). `target="spherical"` maps to N(0, I) instead;
`renormalize=False` shows the raw second stage.

The second stage (`varloss.samplers.second_stage`) stops early on its own validation split;
`steps` is a cap, and the cosine schedule runs over it. Given a `SharedFit` with a worker process
(`varloss correct` on two or more cores), `start` trains it there while the caller fits the other
remedies, and `fit` collects it: the same weights, bit for bit, as training here. A second stage
of fewer than `BACKGROUND_ROWS` code rows (steps x batch) trains here: the worker's start (about
3 s: Python, torch and the modules it needs) would cost more than it saves.

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
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from varloss.errors import InputError
from varloss.samplers.base import Sampler, register
from varloss.samplers.latents import (
    SharedFit,
    aggregate_posterior_stats,
    check_sample_count,
    encode_dataset,
    renormalize_latents,
    seeded_generator,
    standard_normal,
)
from varloss.samplers.second_stage import (
    LatentVAE,
    SecondStageSettings,
    train_second_stage,
)
from varloss.variance import measure
from varloss.variance.protocol import Stream, stream_seed

_STD_FLOOR = 1e-8  # keeps standardisation finite for a code dimension that never varies
# code rows (steps x batch) from which the second stage trains in a worker when one is given:
# 750 steps of 512, about 3 s of one core, what the worker's start costs
BACKGROUND_ROWS = 384_000


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
    # Adam's first construction imports torch._dynamo (about 1 s): the worker does it early
    background_modules = ("varloss.samplers.second_stage", "torch._dynamo")

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

    def _second_stage_settings(self, dim: int) -> SecondStageSettings:
        return SecondStageSettings(
            dim=dim,
            latent_dim=self.second_latent_dim or dim,
            hidden=tuple(self.hidden),
            steps=self.steps,
            warmup=self.warmup,
            train_batch_size=self.train_batch_size,
            lr=self.lr,
            validation=self.validation,
            patience=self.patience,
            min_delta=self.min_delta,
            seed=self.seed,
        )

    def _job(self, shared: SharedFit) -> tuple[torch.Tensor, SecondStageSettings, tuple]:
        """(the standardised float32 codes of the training images the second stage trains on, its
        settings, the key its training goes by in `shared`'s worker). The codes mu are shared
        with gmm; their mean and spread are kept for the standardisation."""
        mu, _ = shared.encoded(self.batch_size)
        self.code_mean = mu.mean(0)
        self.code_std = mu.std(0, correction=0).clamp_min(_STD_FLOOR)
        codes = ((mu - self.code_mean) / self.code_std).to(torch.float32)
        settings = self._second_stage_settings(codes.shape[1])
        return codes, settings, ("second-stage", settings, int(self.batch_size))

    def runs_in_background(self) -> bool:
        return self.steps * self.train_batch_size >= BACKGROUND_ROWS

    def start(self, shared: SharedFit) -> bool:
        """Start training the second stage in `shared`'s worker process (`_fit` collects it)."""
        if not self.runs_in_background():
            return False
        codes, settings, key = self._job(shared)
        return shared.submit(
            key,
            "varloss.samplers.second_stage:train_second_stage",
            callback="on_epoch",
            codes=codes,
            settings=settings,
        )

    def _fit(self, model: nn.Module, images: torch.Tensor) -> None:
        codes, settings, key = self._job(self.shared)
        self.aggregate = aggregate_posterior_stats(*self.shared.encoded(self.batch_size))
        try:
            trained = self.shared.collect(key, self.on_epoch)  # started in a worker by `start`
        except RuntimeError as error:  # the worker failed (killed, out of memory): train here
            warnings.warn(f"{error}\nThe second stage is trained in this process.", stacklevel=2)
            trained = None
        if trained is None:
            trained = train_second_stage(codes, settings, self.on_epoch, self.progress)
        else:
            self.background_seconds = trained.seconds
        self.network = trained.network(settings)
        self.epochs_trained, self.best_epoch = trained.epochs_trained, trained.best_epoch
        self.best_validation_loss = trained.best_validation_loss
        self.final_mse, self.final_kl = trained.final_mse, trained.final_kl
        raw = self._raw_codes(self.n_renorm, seeded_generator(self.seed + 1))
        self.generated_mean = raw.mean(0)
        self.generated_std = raw.std(0, correction=0).clamp_min(_STD_FLOOR)

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


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries whose key starts with `prefix`, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
