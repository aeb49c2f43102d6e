"""Convolutional VAE: strided convolutions down, transposed convolutions up.

Encoder: [Conv 4x4 stride 2 -> LeakyReLU] per stage (28 -> 14 -> 7, 32 -> 4, 64 -> 4, 8 -> 4),
flatten -> Linear(hidden) -> (mu, logvar). Decoder mirrors it with ConvTranspose 4x4 stride 2
and ends with a 3x3 convolution and a sigmoid. No batch normalisation, so decoding a code does
not depend on the rest of the batch or on train/eval mode.
Default loss: bernoulli (BCE summed over pixels), the usual choice for convolutional VAEs on
MNIST-like data and the same as the dense family, so the two compare on equal terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from varloss.errors import InputError
from varloss.models.base import VAE, ModelConfig
from varloss.models.layers import conv_stages, stage_channels
from varloss.models.registry import register

__all__ = ["ConvConfig", "ConvVAE"]


@dataclass
class ConvConfig(ModelConfig):
    """`base_channels` doubles per stage up to `max_channels`; `hidden` is the dense layer width
    between the feature map and the latent (0: none)."""

    family: ClassVar[str] = "conv"
    default_loss: ClassVar[str] = "bernoulli"

    base_channels: int = 32
    max_channels: int = 256
    hidden: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base_channels < 1 or self.max_channels < self.base_channels or self.hidden < 0:
            raise InputError(
                "conv settings need base_channels >= 1, max_channels >= base_channels and "
                f"hidden >= 0; got {self.base_channels}, {self.max_channels}, {self.hidden}."
            )


@register
class ConvVAE(VAE):
    """Strided-convolution encoder and transposed-convolution decoder."""

    config_class = ConvConfig
    config: ConvConfig

    def __init__(self, config: ConvConfig) -> None:
        super().__init__(config)
        channels_in, height, width = self.image_shape
        stages = conv_stages(self.image_shape, "conv")
        widths = stage_channels(stages, config.base_channels, config.max_channels)
        self.feature_shape = (widths[-1], height >> stages, width >> stages)
        features = math.prod(self.feature_shape)

        down: list[nn.Module] = []
        previous = channels_in
        for width_out in widths:
            down += [nn.Conv2d(previous, width_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            previous = width_out
        self.encoder = nn.Sequential(*down, nn.Flatten())
        head = features
        if config.hidden:
            self.encoder.append(nn.Linear(features, config.hidden))
            self.encoder.append(nn.LeakyReLU(0.2))
            head = config.hidden
        self.to_mu = nn.Linear(head, self.latent_dim)
        self.to_logvar = nn.Linear(head, self.latent_dim)

        project: list[nn.Module] = []
        if config.hidden:
            project += [nn.Linear(self.latent_dim, config.hidden), nn.LeakyReLU(0.2)]
        project += [nn.Linear(config.hidden or self.latent_dim, features), nn.LeakyReLU(0.2)]
        self.project = nn.Sequential(*project)
        up: list[nn.Module] = []
        targets = [*reversed(widths[:-1]), config.base_channels]
        previous = widths[-1]
        for width_out in targets:
            up += [
                nn.ConvTranspose2d(previous, width_out, 4, stride=2, padding=1),
                nn.LeakyReLU(0.2),
            ]
            previous = width_out
        up.append(nn.Conv2d(previous, channels_in, 3, padding=1))
        self.decoder = nn.Sequential(*up)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_images(x)
        hidden = self.encoder(x)
        return self.to_mu(hidden), self.to_logvar(hidden)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        self.check_codes(z)
        features = self.project(z).view(-1, *self.feature_shape)
        return self.decoder(features)
