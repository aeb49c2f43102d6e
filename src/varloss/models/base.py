"""The common VAE interface every family implements, its typed config and the loss terms.

A family subclasses `ModelConfig` (adding its hyper-parameters) and `VAE` (implementing `encode`
and `decode_logits`; every decoder ends in a sigmoid, which `decode` applies, so the Bernoulli
loss can be computed from the logits: exact and cheaper than on probabilities). Iterative
families whose posterior depends on the decoder state (DRAW, ConvDRAW) override `forward` too,
through their shared base `varloss.models.iterative.IterativeVAE`; their `encode` then follows the
deterministic path z_t = mu_t, so that `decode(encode(x)[0])` is exactly the model's
reconstruction.

Two reconstruction protocols: `mean` is decode(mu), the deterministic reconstruction; `sample`
is decode(mu + sigma * eps) with one standard-normal draw per image, as the training loss (and
F. Chollet's Keras VAE) reconstructs. `reconstruct(x, noise)` takes
those draws as an N x latent_dim tensor, so that a caller seeds them and they do not depend on
how the images are batched; iterative families use the row's per-step slices along their own
sampled posterior path, as in training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from varloss.errors import InputError
from varloss.losses import Likelihood, create_likelihood, gaussian_kl

__all__ = ["LossTerms", "ModelConfig", "VAE"]


@dataclass
class ModelConfig:
    """Settings shared by every family. Subclasses add hyper-parameters with defaults.

    `loss` names a likelihood of `varloss.losses`; `kl_weight=None` means that loss's default
    (1, or Asperti & Trentin's k for `balanced`); `loss_options` are the loss's own settings
    (`sigma` for gaussian, `log_gamma` (initial) for learned-gamma, `momentum`/`initial_mse`
    for balanced, `min_log_sigma` for sigma).
    """

    family: ClassVar[str] = ""
    default_loss: ClassVar[str] = "bernoulli"

    image_shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 2
    loss: str = ""
    kl_weight: float | None = None
    loss_options: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = tuple(int(v) for v in self.image_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(
                f"image_shape must be (channels, height, width), got {self.image_shape!r}."
            )
        self.image_shape = shape  # type: ignore[assignment]
        if int(self.latent_dim) < 1:
            raise InputError(f"latent_dim must be a positive integer, got {self.latent_dim!r}.")
        self.latent_dim = int(self.latent_dim)
        if not self.loss:
            self.loss = self.default_loss
        self.loss_options = dict(self.loss_options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict including the family name (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["image_shape"] = list(self.image_shape)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return {"family": self.family, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys are rejected with the list of valid ones."""
        data = {k: v for k, v in data.items() if k != "family"}
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InputError(
                f"{cls.family} model settings {unknown} are unknown; valid: {', '.join(names)}."
            )
        values: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, list):
                value = tuple(value)
            values[key] = value
        return cls(**values)


@dataclass
class LossTerms:
    """What `VAE.forward` returns. All per-sample means over the batch except `mse` (per pixel)."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    mse: torch.Tensor
    x_hat: torch.Tensor


class VAE(nn.Module):
    """Base class of every family: encoder, decoder, likelihood and the loss to minimise."""

    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.image_shape: tuple[int, int, int] = tuple(config.image_shape)  # type: ignore[assignment]
        self.latent_dim = int(config.latent_dim)
        self.likelihood: Likelihood = create_likelihood(
            config.loss, self.image_shape, self.latent_dim, config.kl_weight, **config.loss_options
        )

    @property
    def family(self) -> str:
        return self.config.family

    # -- what a family implements -------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mu, logvar), each N x latent_dim."""
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output before the sigmoid, N x C x H x W, for codes N x latent_dim."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder mean image N x C x H x W in [0, 1] for codes N x latent_dim."""
        return torch.sigmoid(self.decode_logits(z))

    # -- shared behaviour ---------------------------------------------------------------------
    def check_images(self, x: torch.Tensor) -> None:
        """Reject a batch whose per-sample shape is not the model's image_shape."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise InputError(
                f"images must have shape N x {' x '.join(map(str, self.image_shape))} for this "
                f"{self.family} model, got {tuple(x.shape)}."
            )

    def check_codes(self, z: torch.Tensor) -> None:
        """Reject codes that are not N x latent_dim."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise InputError(
                f"latent codes must have shape N x {self.latent_dim}, got {tuple(z.shape)}."
            )

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I): `noise` (as many values as mu, reshaped
        to it) when given, else drawn from the global torch RNG."""
        eps = torch.randn_like(mu) if noise is None else noise.to(mu).reshape(mu.shape)
        return mu + eps * torch.exp(0.5 * logvar)

    def loss_terms(
        self, x: torch.Tensor, logits: torch.Tensor, kl_per_sample: torch.Tensor
    ) -> LossTerms:
        """Reconstruction of the decoder's `logits` plus weighted KL: the per-sample mean loss."""
        x_hat = torch.sigmoid(logits)
        reconstruction = self.likelihood(x, x_hat, logits=logits)
        loss = (reconstruction + self.likelihood.kl_weight * kl_per_sample).mean()
        mse = (x - x_hat).detach().pow(2).mean()
        return LossTerms(
            loss=loss,
            reconstruction=reconstruction.mean(),
            kl=kl_per_sample.mean(),
            mse=mse,
            x_hat=x_hat,
        )

    def forward(self, x: torch.Tensor) -> LossTerms:
        """Negative ELBO (with the likelihood's KL weight) of a batch, one posterior sample each."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.loss_terms(x, self.decode_logits(z), gaussian_kl(mu, logvar))

    def check_noise(self, x: torch.Tensor, noise: torch.Tensor) -> None:
        """Reject reconstruction draws that are not one row of latent_dim per image."""
        if tuple(noise.shape) != (x.shape[0], self.latent_dim):
            raise InputError(
                f"reconstruction noise must have shape {x.shape[0]} x {self.latent_dim} (one "
                f"draw per image), got {tuple(noise.shape)}."
            )

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """decode(mu), the deterministic reconstruction; with `noise` (N x latent_dim draws of
        N(0, I), one row per image) decode(mu + sigma * noise), a posterior sample."""
        mu, logvar = self.encode(x)
        if noise is None:
            return self.decode(mu)
        self.check_noise(x, noise)
        return self.decode(self.reparameterize(mu, logvar, noise))

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        for parameter in self.parameters():
            return parameter.device, parameter.dtype
        return torch.device("cpu"), torch.float32

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode n codes z ~ N(0, temperature^2 I); `generator` makes the draw reproducible.
        With `noise` (n x latent_dim draws of N(0, I), one row per sample), z = temperature *
        noise: the caller's codes, so that sample i is decode(row i) however the rows were cut
        (the evaluation-code stream of `varloss train` and `measure --model`). Every family's
        prior is N(0, I) over its flat latent (DRAW's: per step, steps concatenated)."""
        if isinstance(n, bool) or int(n) < 0:
            raise InputError(f"n must be a non-negative integer, got {n!r}.")
        device, dtype = self._device_dtype()
        if noise is None:
            draw_device = generator.device if generator is not None else device
            z = torch.randn(int(n), self.latent_dim, generator=generator, device=draw_device)
        else:
            z = noise
            if tuple(z.shape) != (int(n), self.latent_dim):
                raise InputError(
                    f"prior codes must have shape {int(n)} x {self.latent_dim} (one row per "
                    f"sample), got {tuple(z.shape)}."
                )
        z = (z * float(temperature)).to(device=device, dtype=dtype)
        return self.decode(z)
