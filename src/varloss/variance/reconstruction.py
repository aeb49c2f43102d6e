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

__all__ = ["RECONSTRUCTIONS", "check_reconstruction", "sampled_reconstruction"]

RECONSTRUCTIONS = ("mean", "sample")


def check_reconstruction(reconstruction: Any, name: str = "reconstruction") -> str:
    """The protocol, or an InputError naming `name` and the choices."""
    if reconstruction not in RECONSTRUCTIONS:
        raise InputError(
            f"{name} must be one of {', '.join(RECONSTRUCTIONS)}, got {reconstruction!r}."
        )
    return str(reconstruction)


def sampled_reconstruction(model: Any, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """`x -> model.reconstruct(x, noise)` with noise N x latent_dim drawn in order from a CPU
    generator seeded with `seed`: the same images in the same batches give the same draws."""
    reconstruct = getattr(model, "reconstruct", None)
    latent_dim = getattr(model, "latent_dim", None)
    if not (callable(reconstruct) and _takes_noise(reconstruct) and isinstance(latent_dim, int)):
        raise InputError(
            f"reconstruction 'sample' needs a model with latent_dim and reconstruct(x, noise) "
            f"(a varloss VAE); {type(model).__name__} has not: use reconstruction 'mean'."
        )
    generator = torch.Generator(device="cpu").manual_seed(int(seed))

    def reconstruct_sampled(x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape[0], latent_dim, generator=generator)
        return reconstruct(x, noise=noise.to(x.device))

    reconstruct_sampled.__qualname__ = f"{type(model).__name__}.reconstruct(x, noise)"
    return reconstruct_sampled


def _takes_noise(function: Callable[..., Any]) -> bool:
    try:
        return "noise" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
