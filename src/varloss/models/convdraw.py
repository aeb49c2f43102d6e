"""GQN-like iterative VAE: convolutional DRAW (Gregor et al. 2016) / the GQN generation core
(Eslami et al. 2018) without the scene representation.

Everything recurrent works at a reduced resolution (image side / `scale`): the image is embedded
by strided convolutions into feature maps x_f once, then for T steps

    h_enc = ConvLSTM_enc(h_enc, [x_f, h_dec, u])     # u: the canvas, canvas_channels maps
    q(z_t | h_enc): a conv gives (mu, logvar) maps, average-pooled to latent_side x latent_side
    h_dec = ConvLSTM_dec(h_dec, upsample(z_t))
    u     = u + conv(h_dec)

and x_hat = sigmoid(upsampler(u)), where the upsampler is a stack of stride-2 transposed
convolutions back to full resolution. Each z_t is a latent feature map (latent_channels x side x
side) with a N(0, I) prior; the flat latent is the concatenation over steps (latent_dim = T x
channels x side^2) and the KL is summed over steps. `encode` follows z_t = mu_t. The loop is the
iterative base's, shared with DRAW (`varloss.models.iterative`); this module holds the cells, the
embedding, the posterior and canvas convolutions and the upsampler.
Default loss: bernoulli, like the DRAW family, so the two iterative models compare directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from varloss.errors import InputError
from varloss.models.iterative import IterativeConfig, IterativeVAE, State
from varloss.models.registry import register

__all__ = ["ConvDrawConfig", "ConvDrawVAE", "ConvLSTMCell"]


def _auto_latent_side(per_step: int, most: int) -> int:
    """The largest side s <= most with s^2 dividing the per-step latent size."""
    return max(s for s in range(1, most + 1) if per_step % (s * s) == 0)


@dataclass
class ConvDrawConfig(IterativeConfig):
    """`scale` (a power of two) divides the image side to give the working resolution.
    `steps=0` picks the largest divisor of latent_dim up to 8; `latent_side=0` picks the largest
    side whose square divides the per-step latent size (at most the working side)."""

    family: ClassVar[str] = "convdraw"
    default_loss: ClassVar[str] = "bernoulli"
    most_steps: ClassVar[int] = 8

    scale: int = 4
    hidden_channels: int = 32
    canvas_channels: int = 32
    feature_channels: int = 32
    kernel_size: int = 3
    latent_side: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _, height, width = self.image_shape
        scale = self.scale
        if scale < 1 or scale & (scale - 1) or height % scale or width % scale:
            raise InputError(
                f"convdraw scale must be a power of two dividing the image sides "
                f"{height} x {width}, got {scale}."
            )
        per_step = self.latent_dim // self.steps
        working_side = min(height, width) // scale
        if not self.latent_side:
            self.latent_side = _auto_latent_side(per_step, working_side)
        if self.latent_side < 1 or per_step % (self.latent_side**2):
            raise InputError(
                f"convdraw latent_side^2 must divide the per-step latent size {per_step}, got "
                f"latent_side={self.latent_side}."
            )
        if min(self.hidden_channels, self.canvas_channels, self.feature_channels) < 1 or (
            self.kernel_size < 1 or self.kernel_size % 2 == 0
        ):
            raise InputError(
                "convdraw channel counts must be positive and kernel_size a positive odd integer."
            )

    @property
    def latent_channels(self) -> int:
        return self.latent_dim // self.steps // self.latent_side**2


class ConvLSTMCell(nn.Module):
    """LSTM cell whose gates are convolutions over [input, h] (Shi et al. 2015)."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.gates = nn.Conv2d(
            in_channels + hidden_channels,
            4 * hidden_channels,
            kernel_size,
            padding=kernel_size // 2,
        )

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, g, o = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


@register
class ConvDrawVAE(IterativeVAE):
    """Conv-LSTM encoder/decoder refining a low-resolution canvas; latent feature maps."""

    config_class = ConvDrawConfig
    config: ConvDrawConfig

    def __init__(self, config: ConvDrawConfig) -> None:
        super().__init__(config)
        channels, height, width = self.image_shape
        self.working_shape = (height // config.scale, width // config.scale)
        self.latent_shape = (config.latent_channels, config.latent_side, config.latent_side)
        halvings = int(math.log2(config.scale))

        embed: list[nn.Module] = []
        previous = channels
        for _ in range(halvings):
            embed += [
                nn.Conv2d(previous, config.feature_channels, 4, stride=2, padding=1),
                nn.LeakyReLU(0.2),
            ]
            previous = config.feature_channels
        embed.append(nn.Conv2d(previous, config.feature_channels, 3, padding=1))
        self.embed = nn.Sequential(*embed)

        hidden = config.hidden_channels
        self.encoder_cell = ConvLSTMCell(
            config.feature_channels + hidden + config.canvas_channels, hidden, config.kernel_size
        )
        self.to_posterior = nn.Conv2d(hidden, 2 * config.latent_channels, 3, padding=1)
        self.decoder_cell = ConvLSTMCell(config.latent_channels, hidden, config.kernel_size)
        self.to_canvas = nn.Conv2d(hidden, config.canvas_channels, 3, padding=1)

        up: list[nn.Module] = []
        previous = config.canvas_channels
        for index in range(halvings):
            last = index == halvings - 1
            width_out = channels if last else config.canvas_channels
            up.append(nn.ConvTranspose2d(previous, width_out, 4, stride=2, padding=1))
            if not last:
                up.append(nn.LeakyReLU(0.2))
            previous = width_out
        if not halvings:
            up.append(nn.Conv2d(previous, channels, 3, padding=1))
        self.upsampler = nn.Sequential(*up)

    @property
    def code_shape(self) -> tuple[int, ...]:
        return self.latent_shape

    def _zeros(self, n: int, channels: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(n, channels, *self.working_shape)

    def _context(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)  # the feature maps x_f, once per batch

    def _initial_states(self, n: int, like: torch.Tensor) -> tuple[State, State, torch.Tensor]:
        hidden = self.config.hidden_channels
        encoder_state = (self._zeros(n, hidden, like), self._zeros(n, hidden, like))
        decoder_state = (self._zeros(n, hidden, like), self._zeros(n, hidden, like))
        return encoder_state, decoder_state, self._zeros(n, self.config.canvas_channels, like)

    def _encoder_step(
        self, context: torch.Tensor, encoder_state: State, h_dec: torch.Tensor, canvas: torch.Tensor
    ) -> tuple[State, torch.Tensor, torch.Tensor]:
        encoder_state = self.encoder_cell(torch.cat([context, h_dec, canvas], 1), encoder_state)
        posterior = F.adaptive_avg_pool2d(
            self.to_posterior(encoder_state[0]), self.latent_shape[1:]
        )
        mu, logvar = posterior.chunk(2, dim=1)
        return encoder_state, mu, logvar

    def _decoder_step(
        self, z_t: torch.Tensor, decoder_state: State, canvas: torch.Tensor
    ) -> tuple[State, torch.Tensor]:
        z_up = F.interpolate(z_t, size=self.working_shape, mode="nearest")
        decoder_state = self.decoder_cell(z_up, decoder_state)
        return decoder_state, canvas + self.to_canvas(decoder_state[0])

    def _logits(self, canvas: torch.Tensor) -> torch.Tensor:
        return self.upsampler(canvas)
