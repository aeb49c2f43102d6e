"""The work samplers fitted alike share (`SharedFit`): done once, the same fits as alone; and the
clipped moments match's fit reads from sorted samples agree with clipping every sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _digits_vae import digits_images, untrained_vae

from varloss.samplers import SharedFit, create_sampler
from varloss.samplers.match import _ClippedMoments

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Counting(torch.nn.Module):
    """A VAE that counts the images it encodes and the codes it decodes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.latent_dim = model, model.latent_dim
        self.encoded = self.decoded = 0

    def encode(self, images):
        self.encoded += images.shape[0]
        return self.inner.encode(images)

    def decode(self, codes):
        self.decoded += codes.shape[0]
        return self.inner.decode(codes)


SETTINGS = {
    "gmm": {"n_components": 2},
    "two-stage": {"steps": 30, "n_renorm": 200, "hidden": [16]},
    "match": {"n_fit": 300, "iterations": 10},
    "ot": {"n_fit": 300, "components": 8},
    "spectral": {"n_fit": 300},
}


def _fitted(model, images, shared=None):
    return {
        name: create_sampler(name, seed=2, **params).fit(model, images, shared)
        for name, params in SETTINGS.items()
    }


def test_a_shared_fit_encodes_and_decodes_once_and_fits_the_same():
    images = digits_images()[:400]
    model = _Counting(untrained_vae())
    shared = SharedFit(model, images)
    together = _fitted(model, images, shared)
    # gmm and the second stage encode the 400 images once between them; match, ot and
    # spectral decode their 300 prior samples once (the second stage decodes nothing of the
    # first stage's at fit time)
    assert model.encoded == 400 and model.decoded == 300
    assert shared.computed == {"encode": 1, "prior-decode": 1}
    model.encoded = model.decoded = 0
    alone = _fitted(model, images)
    assert model.encoded == 2 * 400 and model.decoded == 3 * 300
    for name, sampler in together.items():
        for key, value in sampler._state().items():
            assert torch.equal(value, alone[name]._state()[key]), (name, key)
        assert sampler.shared is None  # the shared work is let go after the fit


def test_a_shared_fit_of_other_images_is_refused():
    images = digits_images()[:100]
    model = untrained_vae()
    shared = SharedFit(model, images)
    with pytest.raises(ValueError, match="another model or other training images"):
        create_sampler("gmm", n_components=2).fit(model, images.clone(), shared)


def test_clipped_moments_agree_with_clipping_every_sample():
    generator = np.random.default_rng(0)
    centred = torch.from_numpy(generator.normal(0.0, 0.3, size=(500, 2, 3)))
    scale = torch.from_numpy(generator.uniform(0.2, 3.0, size=6))
    offset = torch.from_numpy(generator.uniform(-0.3, 1.3, size=6))
    scale[4] = 0.0  # a pixel that does not vary: the constant clip(offset)
    offset[4] = 1.7
    mean, std = _ClippedMoments(centred, (0.0, 1.0))(scale, offset)
    rows = centred.reshape(500, -1).numpy()
    clipped = np.clip(offset.numpy() + scale.numpy() * rows, 0.0, 1.0)
    np.testing.assert_allclose(mean.numpy(), clipped.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std.numpy(), clipped.std(0), rtol=0, atol=1e-9)
    assert float(mean[4]) == 1.0 and float(std[4]) == 0.0
