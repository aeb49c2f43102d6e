"""The reconstruction protocol: `mean`, decode(mu), or `sample`, one posterior draw per image.

`mean` is the deterministic reconstruction (varloss's default, as before). `sample` reconstructs
as the training loss does and as F. Chollet's Keras VAE does (through its sampling layer):
decode(mu + sigma * eps), one eps ~ N(0, I) per image, drawn from a generator seeded with a
recorded seed. A model takes the draws through `reconstruct(x, noise)` (N x latent_dim); the
iterative families (draw, convdraw) use them step by step along their own sampled path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from varloss.errors import InputError

__all__ = [
    "NOISE_BLOCK",
    "RECONSTRUCTIONS",
    "NoiseStream",
    "check_reconstruction",
    "sampled_reconstruction",
]

RECONSTRUCTIONS = ("mean", "sample")
# Draws are made in blocks of this many rows whatever the batch size, so that image i gets the
# same draw in batches of any size (torch's vectorised randn depends on how a stream is cut).
NOISE_BLOCK = 256


def check_reconstruction(reconstruction: Any, name: str = "reconstruction") -> str:
    """The protocol, or an InputError naming `name` and the choices."""
    if reconstruction not in RECONSTRUCTIONS:
        raise InputError(
            f"{name} must be one of {', '.join(RECONSTRUCTIONS)}, got {reconstruction!r}."
        )
    return str(reconstruction)


def sampled_reconstruction(model: Any, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """`x -> model.reconstruct(x, noise)` with noise N x latent_dim taken in order from a CPU
    generator seeded with `seed`, drawn NOISE_BLOCK rows at a time: the same images in the same
    order get the same draws, in batches of any size."""
    reconstruct = getattr(model, "reconstruct", None)
    latent_dim = getattr(model, "latent_dim", None)
    if not (callable(reconstruct) and _takes_noise(reconstruct) and isinstance(latent_dim, int)):
        raise InputError(
            f"reconstruction 'sample' needs a model with latent_dim and reconstruct(x, noise) "
            f"(a varloss VAE); {type(model).__name__} has not: use reconstruction 'mean'."
        )
    draws = NoiseStream(seed, latent_dim)

    def reconstruct_sampled(x: torch.Tensor) -> torch.Tensor:
        return reconstruct(x, noise=draws.take(x.shape[0]).to(x.device))

    reconstruct_sampled.__qualname__ = f"{type(model).__name__}.reconstruct(x, noise)"
    return reconstruct_sampled


class NoiseStream:
    """N(0, I) rows of `width` from a CPU generator seeded with `seed`, handed out in order and
    drawn NOISE_BLOCK rows at a time (how the rows are asked for does not change them)."""

    def __init__(self, seed: int, width: int) -> None:
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self.width = int(width)
        self.left = torch.empty(0, self.width)

    def take(self, n: int) -> torch.Tensor:
        """The next `n` rows."""
        parts, have = [self.left], self.left.shape[0]
        while have < n:
            parts.append(torch.randn(NOISE_BLOCK, self.width, generator=self.generator))
            have += NOISE_BLOCK
        rows = torch.cat(parts) if len(parts) > 1 else parts[0]
        self.left = rows[n:]
        return rows[:n]


def _takes_noise(function: Callable[..., Any]) -> bool:
    try:
        return "noise" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
