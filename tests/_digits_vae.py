"""A tiny dense VAE on sklearn digits (8x8, offline), shared by test_samplers and test_correct."""

from __future__ import annotations

import numpy as np
import torch

from varloss.data import load
from varloss.models import create_model

LATENT = 4


def digits_images() -> torch.Tensor:
    return load("digits", "train").images


def untrained_vae(seed: int = 0) -> torch.nn.Module:
    """A freshly initialised dense VAE for 8x8 digits (enough for save/load round trips)."""
    torch.manual_seed(seed)
    return create_model("dense", image_shape=(1, 8, 8), latent_dim=LATENT).eval()


def trained_vae(images: torch.Tensor, steps: int = 400) -> torch.nn.Module:
    """The dense VAE trained for `steps` seeded Adam steps: it loses variance like a real one."""
    model = untrained_vae()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batches = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = images[torch.randint(0, images.shape[0], (128,), generator=batches)]
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def numpy_pixel_variance(images: torch.Tensor) -> float:
    """Mean over pixels of the per-pixel population variance, computed with numpy."""
    flat = images.reshape(images.shape[0], -1).numpy().astype(np.float64)
    return float(flat.var(axis=0).mean())
