"""The image-space remedies: `ot` against the closed-form Gaussian transport map, `spectral`
against numpy's FFT, both saved and reloaded exactly, and the strength path of `transform`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _digits_vae import digits_images, untrained_vae
from torch import nn

from varloss.errors import InputError
from varloss.samplers import OTSampler, SpectralSampler, gaussian_transport_map, load_sampler
from varloss.samplers.latents import decode_codes, seeded_generator, standard_normal

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class LinearGaussianDecoder(nn.Module):
    """decode(z) = W z + b: prior samples are exactly Gaussian, N(b, W W')."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.latent_dim, self.shape = latent_dim, shape
        features = int(np.prod(shape))
        self.weight = nn.Parameter(0.05 * torch.randn(features, latent_dim, generator=generator))
        self.bias = nn.Parameter(0.5 + 0.01 * torch.randn(features, generator=generator))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.weight.T + self.bias).reshape(z.shape[0], *self.shape)


def _random_covariance(k: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    factor = torch.randn(k, 2 * k, generator=generator, dtype=torch.float64)
    return factor @ factor.T / (2 * k) + 0.05 * torch.eye(k, dtype=torch.float64)


def test_gaussian_transport_map_is_the_closed_form():
    source, target = _random_covariance(6, 1), _random_covariance(6, 2)
    transport = gaussian_transport_map(source, target)
    # A S A = T, A symmetric positive definite (the W2-optimal map is the gradient of a convex
    # function), and for commuting (diagonal) covariances A = sqrt(T / S) elementwise
    pushed = transport @ source @ transport
    assert torch.allclose(pushed, target, rtol=1e-9, atol=1e-12)
    assert torch.allclose(transport, transport.T)
    assert torch.linalg.eigvalsh(transport).min() > 0
    diagonal = gaussian_transport_map(torch.diag(torch.tensor([4.0, 1.0])), torch.eye(2))
    assert torch.allclose(diagonal, torch.diag(torch.tensor([0.5, 1.0], dtype=torch.float64)))
    with pytest.raises(InputError, match="two square covariances of one size"):
        gaussian_transport_map(source, target[:3, :3])


def test_ot_gives_the_samples_the_real_covariance_in_the_pca_basis(tmp_path):
    shape = (1, 6, 6)
    model = LinearGaussianDecoder(latent_dim=10, shape=shape).eval()
    generator = torch.Generator().manual_seed(7)
    # "real" images: another Gaussian, with correlated pixels and a different mean
    mixing = torch.randn(36, 36, generator=generator) / 6
    real = (0.4 + 0.1 * torch.randn(3000, 36, generator=generator) @ mixing).reshape(-1, *shape)
    sampler = OTSampler(components=8, n_fit=2000, value_range=None).fit(model, real)
    assert sampler.settings()["components_used"] == 8
    # the fit's own draws, mapped: covariance in the real PCA basis = the real one (1e-6 rel.)
    codes = standard_normal(2000, 10, seeded_generator(sampler.seed))
    mapped = sampler.transform(decode_codes(model, codes)).to(torch.float64).reshape(2000, -1)
    rows = real.to(torch.float64).reshape(3000, -1)
    values, vectors = np.linalg.eigh(np.cov(rows.numpy(), rowvar=False, bias=True))
    basis = torch.from_numpy(vectors[:, -8:][:, ::-1].copy())
    projected = (mapped - mapped.mean(0)) @ basis
    covariance = projected.T @ projected / 2000
    expected = torch.diag(torch.from_numpy(values[-8:][::-1].copy()))
    # float32 images (decode_codes' and transform's output) limit the agreement to ~1e-7
    assert torch.linalg.norm(covariance - expected) / torch.linalg.norm(expected) < 1e-6
    assert torch.allclose(mapped.mean(0), rows.mean(0), atol=1e-5)
    # the residual outside the basis is scaled to the real residual variance
    outside = (mapped - mapped.mean(0)) - (mapped - mapped.mean(0)) @ basis @ basis.T
    real_residual = float(values[:-8].sum())
    assert float(outside.pow(2).sum()) / 2000 == pytest.approx(real_residual, rel=1e-5)
    # saved and reloaded: the same map
    again = load_sampler(sampler.save(tmp_path / "ot"), model)
    draw = torch.Generator().manual_seed(3)
    assert torch.equal(again.sample(50, draw), sampler.sample(50, torch.Generator().manual_seed(3)))


def _numpy_spectral_map(real: np.ndarray, generated: np.ndarray, images: np.ndarray) -> np.ndarray:
    """The spectral remedy written with numpy's full 2-D FFT, independently of the sampler."""
    height, width = real.shape[-2:]
    fy, fx = np.fft.fftfreq(height), np.fft.fftfreq(width)
    bins = np.rint(np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) * max(height, width)).astype(int)

    def power(x: np.ndarray) -> np.ndarray:  # C x B
        spectra = np.fft.fft2(x - x.mean(0), norm="ortho")
        per_frequency = (np.abs(spectra) ** 2).mean(0)  # C x H x W
        return np.stack(
            [
                np.bincount(bins.ravel(), p.ravel()) / np.bincount(bins.ravel())
                for p in per_frequency
            ]
        )

    gain = np.sqrt(power(real) / power(generated))[:, bins]  # C x H x W
    spectra = np.fft.fft2(images - generated.mean(0), norm="ortho") * gain
    return np.fft.ifft2(spectra, norm="ortho").real + real.mean(0)


def test_spectral_gain_matches_numpy_fft(tmp_path):
    model = untrained_vae()
    real = digits_images()[:600]
    sampler = SpectralSampler(n_fit=400, value_range=None).fit(model, real)
    codes = standard_normal(400, model.latent_dim, seeded_generator(sampler.seed))
    generated = decode_codes(model, codes).to(torch.float64).numpy()
    test = decode_codes(model, standard_normal(30, model.latent_dim, seeded_generator(9)))
    expected = _numpy_spectral_map(real.to(torch.float64).numpy(), generated, test.numpy())
    assert np.allclose(sampler.transform(test).numpy(), expected, atol=1e-6)
    # the samples' power per radial bin is now the real one (in float64, before float32 output)
    mapped = sampler._map(torch.from_numpy(generated))
    from varloss.samplers.spectral import power_by_bin

    assert torch.allclose(power_by_bin(mapped), sampler.real_power, rtol=1e-9)
    again = load_sampler(sampler.save(tmp_path / "spectral"), model)
    assert torch.equal(again.transform(test), sampler.transform(test))


def test_strength_walks_from_identity_to_the_full_map():
    model = untrained_vae()
    sampler = OTSampler(components=4, n_fit=300).fit(model, digits_images()[:500])
    images = decode_codes(model, standard_normal(20, model.latent_dim, seeded_generator(1)))
    assert torch.allclose(sampler.transform(images, 0.0), images)
    full = sampler.transform(images, 1.0)
    half = sampler.transform(images, 0.5)
    assert torch.allclose(half, 0.5 * (images + full), atol=1e-6)
    assert full.min() >= 0 and full.max() <= 1  # clipped to value_range
    with pytest.raises(InputError, match="strength must lie in"):
        sampler.transform(images, 1.5)
    with pytest.raises(InputError, match="residual must be one of"):
        OTSampler(residual="dropped")


def test_the_second_stage_stops_early_on_its_validation_split():
    from varloss.samplers import TwoStageSampler
    from varloss.samplers.second_stage import _Training

    model, images = untrained_vae(), digits_images()[:600]
    settings = {"train_batch_size": 60, "hidden": (16,), "n_renorm": 200, "lr": 3e-3}
    # 540 codes train, 60 held out: 9 steps an epoch, so the 900-step cap is 100 epochs
    stopped = TwoStageSampler(steps=900, patience=2, min_delta=0.05, **settings).fit(model, images)
    assert stopped.epochs_trained < 100
    assert stopped.best_epoch <= stopped.epochs_trained
    # the weights kept are the best epoch's: their held-out loss is the one recorded
    codes = stopped._standardised_codes(model, images)
    settings_used = stopped._second_stage_settings(codes.shape[1])
    training = _Training(stopped.network, settings_used, on_epoch=None, progress=False)
    codes, held_out = training.split(codes)
    assert training.validation_loss(held_out) == pytest.approx(stopped.best_validation_loss)
    assert codes.shape[0] == 540 and held_out.shape[0] == 60
    capped = TwoStageSampler(steps=90, patience=0, **settings).fit(model, images)
    assert capped.epochs_trained == 90 // (600 // 60) and capped.best_validation_loss is None
    with pytest.raises(InputError, match="patience needs a validation split"):
        TwoStageSampler(validation=0.0)
    with pytest.raises(InputError, match="validation must be a fraction"):
        TwoStageSampler(validation=1.0)
