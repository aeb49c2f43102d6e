"""Moving between a VAE's images and its latent codes: the helpers every sampler shares.

Encoding and decoding run in batches on the model's device and return CPU tensors; the
statistics are float64. `model_fingerprint` is the identity a saved sampler records of the
model it was fitted on (the first 16 hex digits of `varloss._hashing.sha256_state`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from varloss._hashing import sha256_state
from varloss.data import to_images
from varloss.errors import InputError
from varloss.variance import model_device
from varloss.variance.protocol import standard_normal_rows

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
    """Mean over pixels of the per-pixel variance across samples (float64, ddof=0)."""
    flat = images.reshape(images.shape[0], -1).to(torch.float64)
    return float(flat.var(0, correction=0).mean())


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`: every sampler's fit draws from one of these."""
    return torch.Generator().manual_seed(int(seed))


def standard_normal(n: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    """n x dim float32 draws of N(0, 1) from `generator`, by the rows rule of the evaluation
    streams (`varloss.variance.protocol`): a generator seeded with a run's evaluation-code stream
    gives the prior codes `varloss train` decoded."""
    return standard_normal_rows(n, dim, generator)


def check_sample_count(n: int) -> int:
    """`n` as an int when it is a positive integer; InputError otherwise."""
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or int(n) < 1:
        raise InputError(f"n (number of samples) must be a positive integer, got {n!r}.")
    return int(n)
