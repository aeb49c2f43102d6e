"""Moving between a VAE's images and its latent codes: the helpers every sampler shares.

Encoding and decoding run in batches on the model's device and return CPU tensors; the
statistics are float64. `model_fingerprint` is the identity a saved sampler records of the
model it was fitted on (the first 16 hex digits of `varloss._hashing.sha256_state`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from varloss._hashing import sha256_state
from varloss.data import to_images
from varloss.errors import InputError
from varloss.stats import MomentAccumulator, feature_mean
from varloss.variance import model_device
from varloss.variance.protocol import standard_normal_rows

if TYPE_CHECKING:
    from varloss._background import Worker

FINGERPRINT_LENGTH = 16


def model_fingerprint(model: nn.Module) -> str:
    """A short SHA-256 of the model's state dict, so a saved sampler knows which model it fits."""
    return sha256_state(model.state_dict())[:FINGERPRINT_LENGTH]


def training_images(train_images: Any) -> torch.Tensor:
    """An ImageSet, tensor or array of at least 2 images as float32 N x C x H x W on the CPU.

    Arrays go through `varloss.data.to_images` (uint8 scaled, channels-last moved).
    """
    images = to_images(getattr(train_images, "images", train_images), name="train_images")
    if images.ndim != 4 or images.shape[0] < 2:
        raise InputError(
            "train_images must hold at least 2 images (N x C x H x W, N x H x W or "
            f"N x H x W x C), got shape {tuple(images.shape)}."
        )
    return images.to("cpu")


@torch.no_grad()
def encode_dataset(
    model: nn.Module, images: torch.Tensor, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode `images` in batches; return (mu, logvar) as float64 CPU tensors, N x latent_dim."""
    device = model_device(model)
    mus, logvars = [], []
    for start in range(0, images.shape[0], batch_size):
        mu, logvar = model.encode(images[start : start + batch_size].to(device))
        mus.append(mu.detach().to("cpu", torch.float64))
        logvars.append(logvar.detach().to("cpu", torch.float64))
    return torch.cat(mus), torch.cat(logvars)


@torch.no_grad()
def decode_codes(model: nn.Module, codes: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Decode latent codes in batches; return float32 CPU images N x C x H x W."""
    device = model_device(model)
    dtype = next(iter(model.parameters()), torch.empty(0)).dtype
    out = []
    for start in range(0, codes.shape[0], batch_size):
        batch = codes[start : start + batch_size].to(device=device, dtype=dtype)
        out.append(model.decode(batch).detach().to("cpu", torch.float32))
    return torch.cat(out)


def aggregate_posterior_stats(mu: torch.Tensor, logvar: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-dimension mean and variance of a sampled code z = mu + sigma * eps over the data.

    Law of total variance: Var(z) = Var(mu) + E[sigma^2]. Float64, population (ddof=0) moments.
    """
    mu = mu.to(torch.float64)
    mean = mu.mean(0)
    var_mu = mu.var(0, correction=0)
    mean_sigma2 = logvar.to(torch.float64).exp().mean(0)
    return {"mean": mean, "var_mu": var_mu, "mean_sigma2": mean_sigma2, "var": var_mu + mean_sigma2}


def renormalize_latents(
    codes: torch.Tensor,
    source_mean: torch.Tensor,
    source_std: torch.Tensor,
    target_mean: torch.Tensor,
    target_var: torch.Tensor,
) -> torch.Tensor:
    """Standardise codes per dimension with the source moments, then give them the target ones.

    Float64 affine map (codes - source_mean) / source_std * sqrt(target_var) + target_mean.
    """
    codes = codes.to(torch.float64)
    return (codes - source_mean) / source_std * target_var.sqrt() + target_mean


def mean_pixel_variance(images: torch.Tensor) -> float:
    """Mean over pixels of the per-pixel variance across samples (float64, ddof=0), accumulated
    as `varloss.measure` accumulates its sets' (`varloss.stats.MomentAccumulator`): the same
    number `measure` reports for the same images, and 4x faster than torch's float64 `var` over
    dim 0 (0.12 against 0.53 s on 60,000 MNIST-sized images, one thread)."""
    rows = images.detach().reshape(images.shape[0], -1)
    return feature_mean(MomentAccumulator().update(rows).variance())


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`: every sampler's fit draws from one of these."""
    return torch.Generator().manual_seed(int(seed))


def standard_normal(n: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    """n x dim float32 draws of N(0, 1) from `generator`, by the rows rule of the evaluation
    streams (`varloss.variance.protocol`): a generator seeded with a run's evaluation-code stream
    gives the prior codes `varloss train` decoded."""
    return standard_normal_rows(n, dim, generator)


class SharedFit:
    """The work that samplers fitted on one model and one set of training images do alike, done
    once: the images' codes (`encoded`) and seeded decoded prior samples (`prior_decoded`). (Not
    the images in float64: held for a whole `correct` call they would cost 8 bytes a pixel of
    the training set, 1.5 GB for CIFAR-10, to save a conversion of a fraction of a second.)

    `Sampler.fit(model, images, shared=...)` takes one; alone, a sampler makes its own, so a
    sampler asks for what it needs the same way in both cases. `varloss correct` gives one to
    every method it fits: gmm and the second stage encode the training images once between them,
    match, ot and spectral decode their (same, seeded) prior samples once. Each value is keyed
    by everything it depends on; `computed` counts what was really computed, by kind.

    With a `worker` (`varloss._background.Worker`), one slow piece of fitting can run in that
    process while the caller goes on: a sampler's `start` submits it under a key (`submit`) and
    its `fit` collects it (`collect`); without one, or once the worker is taken, `submit` says no
    and the sampler fits in this process.
    """

    def __init__(self, model: nn.Module, train_images: Any, worker: Worker | None = None) -> None:
        self.model = model
        self.source = train_images
        self.images = training_images(train_images)
        self.computed: Counter[str] = Counter()
        self._values: dict[tuple[Any, ...], Any] = {}
        self.worker = worker
        self._submitted: tuple[Any, ...] | None = None  # the key of the worker's call

    def submit(self, key: tuple[Any, ...], target: str, **kwargs: Any) -> bool:
        """Run `target` (`Worker.submit`'s arguments) in the worker under `key`, unless the worker
        runs another key's call or there is none; True when `key`'s call runs there."""
        if self.worker is None or (self.worker.busy and self._submitted != key):
            return False
        if not self.worker.busy:
            self.worker.submit(target, **kwargs)
            self._submitted = key
        return True

    def collect(self, key: tuple[Any, ...], callback: Callable[..., Any] | None = None) -> Any:
        """The value of `key`'s call in the worker (`Worker.result(callback)`), or None when it
        was not submitted there. A value is collected once."""
        if self.worker is None or self._submitted != key:
            return None
        self._submitted = None
        return self.worker.result(callback)

    def serves(self, model: nn.Module, train_images: Any) -> bool:
        """Whether this is the shared work of `model` on `train_images` (the same objects)."""
        return model is self.model and train_images is self.source

    def _once(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        if key not in self._values:
            self._values[key] = compute()
            self.computed[key[0]] += 1
        return self._values[key]

    def encoded(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode_dataset` of the training images: (mu, logvar), float64. Read, never modify."""
        return self._once(
            ("encode", int(batch_size)),
            lambda: encode_dataset(self.model, self.images, batch_size),
        )

    def prior_decoded(self, n: int, seed: int, batch_size: int) -> torch.Tensor:
        """`n` N(0, I) codes drawn from `seeded_generator(seed)`, decoded: float64 images."""

        def decode() -> torch.Tensor:
            codes = standard_normal(n, int(self.model.latent_dim), seeded_generator(seed))
            return decode_codes(self.model, codes, batch_size).to(torch.float64)

        return self._once(("prior-decode", int(n), int(seed), int(batch_size)), decode)


def check_sample_count(n: int) -> int:
    """`n` as an int when it is a positive integer; InputError otherwise."""
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or int(n) < 1:
        raise InputError(f"n (number of samples) must be a positive integer, got {n!r}.")
    return int(n)
