"""DRAW (Gregor et al., "DRAW: A Recurrent Neural Network For Image Generation", 2015).

An LSTM encoder and an LSTM decoder refine a canvas over T steps. At step t:

    x_err = x - sigmoid(c_{t-1})
    r_t   = read(x, x_err, h_dec_{t-1})            # Gaussian-attention glimpses, or whole images
    h_enc = LSTM_enc(h_enc, [r_t, h_dec_{t-1}])
    z_t  ~ q(z_t | h_enc) = N(mu_t, diag exp(logvar_t))
    h_dec = LSTM_dec(h_dec, z_t)
    c_t   = c_{t-1} + write(h_dec)                 # Gaussian-attention patch, or a full image

and x_hat = sigmoid(c_T). The prior of every z_t is N(0, I), so the flat latent is the
concatenation [z_1, ..., z_T] (latent_dim = T * per-step size) and the KL is summed over steps.
Because the posterior at step t depends on the decoder's state, `encode` follows the
deterministic path z_t = mu_t, so `decode(encode(x)[0])` is the model's reconstruction. That
loop (encode, decode, reconstruct, forward) is the iterative base's, shared with ConvDRAW
(`varloss.models.iterative`); this module holds what is DRAW's: its cells, read and write.

Attention uses separable Gaussian filterbanks: `write_attention` draws M x M patches (on by
default for 28 x 28 images, as in the paper's MNIST model; off otherwise), `read_attention`
reads N x N glimpses of x and x_err instead of the whole images. Read attention is off by
default: with the few steps a CPU budget allows (T <= 10, the paper used 64) the glimpses starve
the encoder and the model collapses (measured on 10000 MNIST images, 200 Adam steps, latent 16:
KL 0.00 and MSE 0.066 with 2 x 2 glimpses, KL 1.5 and MSE 0.062 with 5 x 5, against KL 3.7 and
MSE 0.059 after 100 steps with whole-image reads and attentive writes).
Default loss: bernoulli, as in the paper's MNIST experiments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from varloss.errors import InputError
from varloss.models.iterative import IterativeConfig, IterativeVAE, State, auto_steps
from varloss.models.registry import register

__all__ = ["DrawConfig", "DrawVAE", "auto_steps"]


@dataclass
class DrawConfig(IterativeConfig):
    """`steps=0` picks the largest divisor of latent_dim up to 10; `write_attention=None` turns
    it on for 28 x 28 images. Both are resolved at construction, so a saved config is explicit."""

    family: ClassVar[str] = "draw"
    default_loss: ClassVar[str] = "bernoulli"
    most_steps: ClassVar[int] = 10

    hidden: int = 256
    write_attention: bool | None = None
    read_attention: bool = False
    read_size: int = 2
    write_size: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.write_attention is None:
            self.write_attention = tuple(self.image_shape[1:]) == (28, 28)
        self.write_attention = bool(self.write_attention)
        self.read_attention = bool(self.read_attention)
        if self.hidden < 1 or self.read_size < 1 or self.write_size < 1:
            raise InputError(
                "draw hidden, read_size and write_size must be positive integers, got "
                f"{self.hidden}, {self.read_size}, {self.write_size}."
            )


class GaussianAttention(nn.Module):
    """Separable Gaussian filterbanks of DRAW: N x N grid of filters with centre, stride,
    variance and intensity predicted from the decoder state (Gregor et al. 2015, eqs. 19-26)."""

    def __init__(self, hidden: int, height: int, width: int, size: int) -> None:
        super().__init__()
        self.height, self.width, self.size = height, width, size
        self.params = nn.Linear(hidden, 5)
        # Start with the grid spanning the image and filters half a stride wide, so the first
        # glimpses and patches cover the whole image instead of N^2 isolated pixels (a zero
        # bias gives unit-variance filters, a few pixels wide at a stride of 7 to 27 pixels).
        stride = (max(height, width) - 1) / max(size - 1, 1)
        with torch.no_grad():
            self.params.bias.zero_()
            self.params.bias[2] = 2 * math.log(max(stride / 2, 0.5))

    def filterbanks(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Fy: n x N x H, Fx: n x N x W, gamma: n)."""
        gx_, gy_, log_var, log_delta, log_gamma = self.params(h).unbind(dim=1)
        height, width, size = self.height, self.width, self.size
        gx = (width + 1) / 2 * (gx_ + 1)
        gy = (height + 1) / 2 * (gy_ + 1)
        delta = (max(height, width) - 1) / max(size - 1, 1) * log_delta.exp()
        var = log_var.exp().unsqueeze(1).unsqueeze(2)
        grid = torch.arange(size, device=h.device, dtype=h.dtype) - size / 2 + 0.5
        mu_x = gx.unsqueeze(1) + grid * delta.unsqueeze(1)
        mu_y = gy.unsqueeze(1) + grid * delta.unsqueeze(1)
        cols = torch.arange(1, width + 1, device=h.device, dtype=h.dtype)
        rows = torch.arange(1, height + 1, device=h.device, dtype=h.dtype)
        fx = torch.exp(-(cols - mu_x.unsqueeze(2)).pow(2) / (2 * var))
        fy = torch.exp(-(rows - mu_y.unsqueeze(2)).pow(2) / (2 * var))
        fx = fx / (fx.sum(dim=2, keepdim=True) + 1e-8)
        fy = fy / (fy.sum(dim=2, keepdim=True) + 1e-8)
        return fy, fx, log_gamma.exp()

    def read(self, images: torch.Tensor, fy: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        """gamma-free glimpse Fy x Fx^T per channel: n x C x N x N."""
        return torch.einsum("bnh,bchw,bmw->bcnm", fy, images, fx)

    def write(self, patch: torch.Tensor, fy: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        """Fy^T w Fx per channel: n x C x H x W."""
        return torch.einsum("bnh,bcnm,bmw->bchw", fy, patch, fx)


@register
class DrawVAE(IterativeVAE):
    """DRAW with optional Gaussian read/write attention and per-step latents."""

    config_class = DrawConfig
    config: DrawConfig

    def __init__(self, config: DrawConfig) -> None:
        super().__init__(config)
        channels, height, width = self.image_shape
        self.step_dim = self.latent_dim // self.steps
        hidden = config.hidden
        if config.read_attention:
            read_dim = 2 * channels * config.read_size**2
            self.reader = GaussianAttention(hidden, height, width, config.read_size)
        else:
            read_dim = 2 * channels * height * width
        if config.write_attention:
            self.writer = GaussianAttention(hidden, height, width, config.write_size)
            self.write_patch = nn.Linear(hidden, channels * config.write_size**2)
            # Normalised write filters spread a patch value over about stride^2 pixels, so at
            # unit intensity the canvas moves ~stride^2 times slower than without attention.
            # Start with 1/gamma = stride^2 so writes are as strong as direct ones.
            write_stride = (max(height, width) - 1) / max(config.write_size - 1, 1)
            with torch.no_grad():
                self.writer.params.bias[4] = -2 * math.log(max(write_stride, 1.0))
        else:
            self.write_patch = nn.Linear(hidden, channels * height * width)
        self.encoder_cell = nn.LSTMCell(read_dim + hidden, hidden)
        self.to_posterior = nn.Linear(hidden, 2 * self.step_dim)
        self.decoder_cell = nn.LSTMCell(self.step_dim, hidden)

    def _read(self, x: torch.Tensor, x_err: torch.Tensor, h_dec: torch.Tensor) -> torch.Tensor:
        if not self.config.read_attention:
            return torch.cat([x.flatten(1), x_err.flatten(1)], dim=1)
        fy, fx, gamma = self.reader.filterbanks(h_dec)
        glimpses = torch.cat([self.reader.read(x, fy, fx), self.reader.read(x_err, fy, fx)], 1)
        return gamma.unsqueeze(1) * glimpses.flatten(1)

    def _write(self, h_dec: torch.Tensor) -> torch.Tensor:
        patch = self.write_patch(h_dec)
        if not self.config.write_attention:
            return patch.view(-1, *self.image_shape)
        size = self.config.write_size
        fy, fx, gamma = self.writer.filterbanks(h_dec)
        patch = patch.view(-1, self.image_shape[0], size, size)
        return self.writer.write(patch, fy, fx) / gamma.view(-1, 1, 1, 1)

    @property
    def code_shape(self) -> tuple[int, ...]:
        return (self.step_dim,)

    def _initial_states(self, n: int, like: torch.Tensor) -> tuple[State, State, torch.Tensor]:
        zeros = like.new_zeros(n, self.config.hidden)
        return (zeros, zeros), (zeros, zeros), like.new_zeros(n, *self.image_shape)

    def _encoder_step(
        self, context: torch.Tensor, encoder_state: State, h_dec: torch.Tensor, canvas: torch.Tensor
    ) -> tuple[State, torch.Tensor, torch.Tensor]:
        x = context  # the images: DRAW reads them and the error of the canvas at every step
        x_err = x - torch.sigmoid(canvas)
        read = self._read(x, x_err, h_dec)
        encoder_state = self.encoder_cell(torch.cat([read, h_dec], 1), encoder_state)
        mu, logvar = self.to_posterior(encoder_state[0]).chunk(2, dim=1)
        return encoder_state, mu, logvar

    def _decoder_step(
        self, z_t: torch.Tensor, decoder_state: State, canvas: torch.Tensor
    ) -> tuple[State, torch.Tensor]:
        decoder_state = self.decoder_cell(z_t, decoder_state)
        return decoder_state, canvas + self._write(decoder_state[0])
