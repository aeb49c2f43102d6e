"""Dense (fully connected) VAE; the defaults are F. Chollet's Keras MNIST VAE.

Encoder: flatten -> [Linear -> ReLU] per hidden width -> Linear to (mu, logvar).
Decoder: the widths reversed, then Linear -> sigmoid to the image. With the defaults
(hidden_sizes=(256,), latent 2, Bernoulli loss) this is 784 -> 256 ReLU -> 2 -> 256 ReLU -> 784
sigmoid with binary cross-entropy summed over pixels, as in "Building autoencoders in Keras".
Default loss: bernoulli, to reproduce that example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from varloss.errors import InputError
from varloss.models.base import VAE, ModelConfig
from varloss.models.registry import register

__all__ = ["DenseConfig", "DenseVAE"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}


@dataclass
class DenseConfig(ModelConfig):
    """`hidden_sizes`: encoder widths (the decoder uses them reversed); depth = their number."""

    family: ClassVar[str] = "dense"
    default_loss: ClassVar[str] = "bernoulli"

    hidden_sizes: tuple[int, ...] = (256,)
    activation: str = "relu"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        if any(h < 1 for h in self.hidden_sizes):
            raise InputError(f"hidden_sizes must be positive widths, got {self.hidden_sizes!r}.")
        if self.activation not in _ACTIVATIONS:
            raise InputError(
                f"activation must be one of {', '.join(_ACTIVATIONS)}; got {self.activation!r}."
            )


def _mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width_in, width_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(width_in, width_out), activation()]
    return nn.Sequential(*layers)


@register
class DenseVAE(VAE):
    """Fully connected VAE for any image shape (images are flattened)."""

    config_class = DenseConfig
    config: DenseConfig

    def __init__(self, config: DenseConfig) -> None:
        super().__init__(config)
        pixels = math.prod(self.image_shape)
        activation = _ACTIVATIONS[config.activation]
        widths = list(config.hidden_sizes)
        self.encoder = _mlp([pixels, *widths], activation)
        last = widths[-1] if widths else pixels
        self.to_mu = nn.Linear(last, self.latent_dim)
        self.to_logvar = nn.Linear(last, self.latent_dim)
        self.decoder = _mlp([self.latent_dim, *reversed(widths)], activation)
        self.to_image = nn.Linear(widths[0] if widths else self.latent_dim, pixels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_images(x)
        hidden = self.encoder(x.flatten(1))
        return self.to_mu(hidden), self.to_logvar(hidden)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        self.check_codes(z)
        return self.to_image(self.decoder(z)).view(-1, *self.image_shape)
