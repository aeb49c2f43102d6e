"""`prior`: z ~ N(0, I) decoded, the plain VAE sampler every remedy is compared with."""

from __future__ import annotations

import torch
from torch import nn

from varloss.samplers.base import Sampler, register
from varloss.samplers.latents import check_sample_count, standard_normal


@register
class PriorSampler(Sampler):
    """z ~ N(0, I) decoded: the plain VAE sampler (the baseline)."""

    name = "prior"
    draws_prior = True

    def _fit(self, model: nn.Module, images: torch.Tensor) -> None:
        pass  # nothing to learn: the prior is fixed

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.latent_dim is None:  # codes need only the latent size, known once fitted
            self._require_model()
        return standard_normal(check_sample_count(n), int(self.latent_dim), generator)
