"""The iterative-VAE base of DRAW and ConvDRAW: a canvas refined over T steps, one latent per step.

Both families run the same loop (Gregor et al. 2015, 2016); only the cells, what the encoder
reads and how the decoder writes differ. At step t:

    h_enc, mu_t, logvar_t = encoder_step(context, h_enc, h_dec, canvas)   # family: read + cell
    z_t   = mu_t + sigma_t * eps_t      (or mu_t on the deterministic path)
    h_dec, canvas = decoder_step(z_t, h_dec, canvas)                      # family: cell + write

and x_hat = sigmoid(logits(canvas_T)). The prior of every z_t is N(0, I), so the flat latent is
the concatenation [z_1, ..., z_T] (latent_dim = T x the per-step size) and the KL is summed over
steps. Because the posterior at step t depends on the decoder's state, `encode` follows the
deterministic path z_t = mu_t, so `decode(encode(x)[0])` is the model's reconstruction, and a
sampled reconstruction draws z_t step by step along the sampled path, as training does.

A family subclasses `IterativeConfig` (its hyper-parameters; `steps` and its check are here) and
`IterativeVAE`, implementing the hooks below; it keeps its own modules, so the parameter names
(and saved weights) are the family's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from varloss.errors import InputError
from varloss.losses import gaussian_kl
from varloss.models.base import VAE, LossTerms, ModelConfig

__all__ = ["IterativeConfig", "IterativeVAE", "State", "auto_steps"]

# An LSTM cell's (h, c).
State = tuple[torch.Tensor, torch.Tensor]


def auto_steps(latent_dim: int, most: int) -> int:
    """The largest number of steps <= `most` that divides latent_dim (so each step gets an
    equal share of the latent)."""
    return max(t for t in range(1, most + 1) if latent_dim % t == 0)


@dataclass
class IterativeConfig(ModelConfig):
    """`steps=0` picks the largest divisor of latent_dim up to `most_steps` (the family's), at
    construction, so a saved config is explicit."""

    most_steps: ClassVar[int] = 10

    steps: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.steps:
            self.steps = auto_steps(self.latent_dim, self.most_steps)
        if self.steps < 1 or self.latent_dim % self.steps:
            raise InputError(
                f"{self.family} steps must divide latent_dim {self.latent_dim} (each step gets an "
                f"equal share), got steps={self.steps}."
            )


class IterativeVAE(VAE):
    """The shared loop of the iterative families: `encode`, `decode_logits`, `reconstruct` and
    `forward` over the family's hooks (`_context`, `_initial_states`, `_encoder_step`,
    `_decoder_step`, `_logits`, `code_shape`)."""

    config: IterativeConfig

    def __init__(self, config: IterativeConfig) -> None:
        super().__init__(config)
        self.steps = config.steps

    # -- the family's hooks ------------------------------------------------------------------
    @property
    def code_shape(self) -> tuple[int, ...]:
        """The shape of one step's code z_t for one image (the flat latent is T of them)."""
        raise NotImplementedError

    def _context(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder reads at every step, computed once per batch (the images here)."""
        return x

    def _initial_states(self, n: int, like: torch.Tensor) -> tuple[State, State, torch.Tensor]:
        """(encoder state, decoder state, canvas) before the first step, like `like`."""
        raise NotImplementedError

    def _encoder_step(
        self, context: torch.Tensor, encoder_state: State, h_dec: torch.Tensor, canvas: torch.Tensor
    ) -> tuple[State, torch.Tensor, torch.Tensor]:
        """(encoder state, mu_t, logvar_t) of one step, reading `context`, the decoder's last
        output `h_dec` and the canvas so far."""
        raise NotImplementedError

    def _decoder_step(
        self, z_t: torch.Tensor, decoder_state: State, canvas: torch.Tensor
    ) -> tuple[State, torch.Tensor]:
        """(decoder state, canvas) after decoding z_t (shaped N x `code_shape`) and writing."""
        raise NotImplementedError

    def _logits(self, canvas: torch.Tensor) -> torch.Tensor:
        """The logits of x_hat from the final canvas (the canvas itself here)."""
        return canvas

    # -- the loop ----------------------------------------------------------------------------
    def _run(
        self, x: torch.Tensor, sample: bool, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder and decoder together: (mu, logvar) flattened and concatenated over steps, and
        the final canvas's logits of x_hat. With `sample`, z_t = mu_t + sigma_t * eps_t along the
        sampled path, eps_t from step t's slice of `noise` (N x latent_dim) or the global RNG."""
        self.check_images(x)
        context = self._context(x)
        encoder_state, decoder_state, canvas = self._initial_states(x.shape[0], x)
        mus, logvars = [], []
        step_noise = [None] * self.steps if noise is None else noise.chunk(self.steps, dim=1)
        for eps in step_noise:
            encoder_state, mu, logvar = self._encoder_step(
                context, encoder_state, decoder_state[0], canvas
            )
            z = self.reparameterize(mu, logvar, eps) if sample else mu
            decoder_state, canvas = self._decoder_step(z, decoder_state, canvas)
            mus.append(mu.flatten(1))
            logvars.append(logvar.flatten(1))
        return torch.cat(mus, 1), torch.cat(logvars, 1), self._logits(canvas)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar, _ = self._run(x, sample=False)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        self.check_codes(z)
        n = z.shape[0]
        _, decoder_state, canvas = self._initial_states(n, z)
        for z_t in z.view(n, self.steps, *self.code_shape).unbind(dim=1):
            decoder_state, canvas = self._decoder_step(z_t, decoder_state, canvas)
        return self._logits(canvas)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """decode(mu) along the deterministic path; with `noise`, the canvas of the path sampled
        step by step as in training (not decode(mu + sigma * noise) of the deterministic path's
        mu and sigma: the posterior at step t depends on the codes drawn before it)."""
        if noise is None:
            return super().reconstruct(x)
        self.check_noise(x, noise)
        return torch.sigmoid(self._run(x, sample=True, noise=noise)[2])

    def forward(self, x: torch.Tensor) -> LossTerms:
        mu, logvar, logits = self._run(x, sample=True)
        return self.loss_terms(x, logits, gaussian_kl(mu, logvar))
