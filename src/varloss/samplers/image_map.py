"""The shared part of the remedies that act on decoded images (`match`, `ot`, `spectral`).

Such a sampler draws N(0, I) prior codes, decodes them and maps the decoded images with a fitted
map T. The map is fitted on `n_fit` seeded prior samples against the training images, and since it
acts on images it applies as well to anything the decoder outputs, reconstructions included:
`transform(images, strength)` gives (1 - strength) x + strength T(x), the identity at 0 and the
full map at 1 (the path `varloss correct --curve` sweeps).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from varloss.data.convert import check_value_range
from varloss.errors import InputError
from varloss.samplers.base import Sampler
from varloss.samplers.latents import (
    check_sample_count,
    decode_codes,
    standard_normal,
)


def check_strength(strength: float) -> float:
    """`strength` as a float in [0, 1] (0: identity, 1: the full map), or one sentence."""
    value = float(strength)
    if not 0.0 <= value <= 1.0:
        raise InputError(
            f"strength must lie in [0, 1] (0 = identity, 1 = full map), got {strength!r}."
        )
    return value


class ImageMapSampler(Sampler):
    """Prior samples decoded, then mapped by a map fitted on decoded images (subclasses: `_fit_map`
    learns it from float64 generated and training images, `_map` applies it)."""

    draws_prior = True  # N(0, I) codes, their images mapped
    acts_on_images = True

    def __init__(
        self,
        n_fit: int = 10000,
        value_range: Sequence[float] | None = (0.0, 1.0),
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        if int(n_fit) < 2:
            raise InputError(f"n_fit must be at least 2, got {n_fit!r}.")
        self.n_fit = int(n_fit)
        # None: no clipping; else the one check of a declared range (finite, high > low)
        self.value_range = (
            None if value_range is None else check_value_range(value_range, "clipping")
        )

    def params(self) -> dict[str, Any]:
        value_range = list(self.value_range) if self.value_range is not None else None
        return {"n_fit": self.n_fit, "value_range": value_range, **super().params()}

    def _fit(self, model: nn.Module, images: torch.Tensor) -> None:
        # the `n_fit` decoded prior samples of `seed` (float64): the same for match, ot and
        # spectral with the same settings, so decoded once when they share a `SharedFit`
        del model
        generated = self.shared.prior_decoded(self.n_fit, self.seed, self.batch_size)
        self._fit_map(generated, images.to(torch.float64))

    @abstractmethod
    def _fit_map(self, generated: torch.Tensor, data: torch.Tensor) -> None: ...

    @abstractmethod
    def _map(self, images: torch.Tensor) -> torch.Tensor:
        """The full map of float64 images N x C x H x W (before clipping)."""

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        self._require_model()
        return standard_normal(check_sample_count(n), int(self.latent_dim), generator)

    def transform(self, images: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """(1 - strength) x + strength T(x) of decoded images (float32), clipped to
        `value_range`; strength 0 is the identity, 1 the full fitted map."""
        if not self.fitted:
            raise InputError(f"the {self.name} sampler is not fitted; call fit(model, images).")
        strength = check_strength(strength)
        values = images.to(torch.float64)
        mapped = self._map(values)
        if self.value_range is not None:
            mapped = mapped.clamp(*self.value_range)
        return (values + strength * (mapped - values)).to(torch.float32)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        model = self._require_model()
        return self.transform(decode_codes(model, self.sample_codes(n, generator), self.batch_size))
