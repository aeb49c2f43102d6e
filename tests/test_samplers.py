"""Samplers: exact save/load round trips, the registry, and the statistics each one promises.

The round trips run on an untrained dense VAE (fast); the statistical promises (variance gap
closed, tau matched, aggregate posterior reached) on one trained briefly on sklearn digits, and
are checked against independent numpy / scikit-learn computations.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from _digits_vae import LATENT, digits_images, numpy_pixel_variance, trained_vae, untrained_vae
from safetensors.torch import load_file

from varloss.errors import InputError
from varloss.pipelines.correct import gap_closed
from varloss.samplers import (
    ALL_METHODS,
    SAMPLERS,
    GMMSampler,
    MatchSampler,
    PriorSampler,
    TemperatureSampler,
    TwoStageSampler,
    create_sampler,
    load_sampler,
    model_fingerprint,
    parse_methods,
    register,
)
from varloss.samplers.latents import training_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Small settings: every sampler fits in well under a second on an untrained model.
SMALL = {
    "prior": {},
    "temperature": {"n_fit": 200, "scan_points": 6},
    "match": {"n_fit": 300, "iterations": 10},
    "ot": {"n_fit": 300, "components": 8},
    "spectral": {"n_fit": 300},
    "gmm": {"n_components": 2},
    "two-stage": {"steps": 40, "n_renorm": 500, "hidden": [32]},
}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return digits_images()


@pytest.fixture(scope="module")
def untrained() -> torch.nn.Module:
    return untrained_vae()


@pytest.fixture(scope="module")
def trained(images) -> torch.nn.Module:
    return trained_vae(images)


def test_every_registered_sampler_has_small_settings_here():
    assert sorted(SMALL) == sorted(SAMPLERS)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_save_load_round_trip_is_exact(name, untrained, images, tmp_path):
    sampler = SAMPLERS[name](seed=1, **SMALL[name]).fit(untrained, images[:400])
    folder = sampler.save(tmp_path / name)
    assert not list(folder.glob("*.pkl")) and not list(folder.glob(".*tmp"))
    config = json.loads((folder / "config.json").read_text())
    assert config["sampler"] == name and config["latent_dim"] == LATENT
    restored = load_sampler(folder, untrained)
    assert type(restored) is type(sampler)
    assert restored.settings() == json.loads(json.dumps(sampler.settings()))
    # the fitted tensors come back bit for bit
    saved = load_file(str(folder / "state.safetensors"))
    assert sorted(saved) == sorted(restored._state())
    for key, value in restored._state().items():
        assert torch.equal(value, saved[key]), key
    first = sampler.sample(64, torch.Generator().manual_seed(7))
    again = restored.sample(64, torch.Generator().manual_seed(7))
    assert first.shape == (64, *config["image_shape"])
    assert torch.equal(first, again)
    # a different seed gives different samples (the generator is really used)
    assert not torch.equal(first, restored.sample(64, torch.Generator().manual_seed(8)))


def test_saved_sampler_refuses_another_model_and_damaged_files(untrained, images, tmp_path):
    folder = MatchSampler(n_fit=100, iterations=2).fit(untrained, images[:200]).save(tmp_path / "m")
    other = untrained_vae(seed=1)
    with pytest.raises(InputError, match="fingerprint"):
        load_sampler(folder, other)
    with pytest.raises(InputError, match="not a saved sampler"):
        load_sampler(tmp_path / "missing", untrained)
    with pytest.raises(InputError, match="not fitted"):
        MatchSampler().sample(3)
    with pytest.raises(InputError, match="holds a match sampler"):
        TwoStageSampler.load(folder)
    # one flipped byte in the fitted state: named by the manifest check, never loaded
    state = folder / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"state\.safetensors is damaged"):
        load_sampler(folder, untrained)
    # without a manifest (a folder from an older varloss), a truncated file is still one sentence
    (folder / "manifest.json").unlink()
    state.write_bytes(bytes(data[:40]))
    with pytest.raises(InputError, match="cannot be read"):
        load_sampler(folder, untrained)


def test_model_fingerprint_is_stable_for_saved_samplers(untrained):
    # The digest saved samplers record: names, dtypes, shapes and bytes of the sorted state dict.
    digest = hashlib.sha256()
    for name, tensor in sorted(untrained.state_dict().items()):
        value = tensor.detach().contiguous()
        digest.update(name.encode())
        digest.update(str(value.dtype).encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.numpy().tobytes())
    assert model_fingerprint(untrained) == digest.hexdigest()[:16]
    assert model_fingerprint(untrained_vae(seed=1)) != model_fingerprint(untrained)


def test_register_checks_what_it_adds():
    class Unnamed(PriorSampler):
        name = ""

    class Impostor(PriorSampler):
        name = "prior"

    with pytest.raises(TypeError, match="Sampler subclasses"):
        register(dict)
    with pytest.raises(ValueError, match="non-empty"):
        register(Unnamed)
    with pytest.raises(InputError, match="sampler 'prior' is already registered .*PriorSampler"):
        register(Impostor)
    assert register(PriorSampler) is PriorSampler  # the same class again is harmless
    assert SAMPLERS["prior"] is PriorSampler


def test_training_images_go_through_the_one_converter(untrained, images):
    channels_last = (images[:5].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    converted = training_images(channels_last)
    assert converted.shape == (5, 1, 8, 8) and converted.dtype == torch.float32
    np.testing.assert_allclose(converted.numpy(), images[:5].numpy(), atol=0.5 / 255)
    with pytest.raises(InputError, match="at least 2 images"):
        PriorSampler().fit(untrained, images[:1])
    with pytest.raises(InputError, match="train_images"):
        PriorSampler().fit(untrained, "digits")


def test_method_names_and_constructor_checks():
    assert parse_methods("all") == list(ALL_METHODS)
    assert parse_methods("match") == ["prior", "match"]
    assert parse_methods("gmm, prior,gmm") == ["prior", "gmm"]
    for bad, named in (("bogus", "bogus"), ("match,nope", "nope"), ("all,match", "all")):
        with pytest.raises(InputError, match=f"unknown correction method '{named}'; known: prior,"):
            parse_methods(bad)
    with pytest.raises(InputError, match="method must name a correction method or 'all'"):
        parse_methods(" , ")
    raw = create_sampler("two-stage-raw", steps=5)
    assert (raw.renormalize, raw.steps) == (False, 5)
    with pytest.raises(InputError, match="target"):
        create_sampler("two-stage", target="sideways")
    with pytest.raises(InputError, match="tau"):
        TemperatureSampler(tau=-1.0)
    with pytest.raises(InputError, match="covariance_type"):
        GMMSampler(covariance_type="tied")


def test_gmm_parameters_equal_sklearn_and_samples_follow_them(untrained, images):
    from sklearn.mixture import GaussianMixture

    sampler = GMMSampler(n_components=3, seed=4).fit(untrained, images)
    with torch.no_grad():
        mu, _ = untrained.encode(images)
    reference = GaussianMixture(n_components=3, covariance_type="full", random_state=4)
    reference.fit(mu.numpy().astype(np.float64))
    np.testing.assert_allclose(sampler.means.numpy(), reference.means_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(sampler.weights.numpy(), reference.weights_, rtol=1e-6)
    codes = sampler.sample_codes(40000, torch.Generator().manual_seed(0)).numpy().astype(np.float64)
    mixture_mean = reference.weights_ @ reference.means_
    parts = zip(reference.weights_, reference.means_, reference.covariances_, strict=True)
    mixture_cov = sum(w * (c + np.outer(m - mixture_mean, m - mixture_mean)) for w, m, c in parts)
    scale = np.sqrt(np.diag(mixture_cov))
    np.testing.assert_allclose(codes.mean(0), mixture_mean, atol=0.03 * scale.max())
    np.testing.assert_allclose(np.cov(codes.T), mixture_cov, atol=0.05 * scale.max() ** 2)


@pytest.mark.slow
def test_match_closes_the_per_pixel_gap_by_construction(trained, images):
    seed, n_fit = 5, 1500
    unclipped = MatchSampler(n_fit=n_fit, value_range=None, seed=seed).fit(trained, images)
    # The fit's own draws (same seed) land exactly on the data's per-pixel mean and variance.
    corrected = unclipped.sample(n_fit, torch.Generator().manual_seed(seed)).numpy()
    data = images.numpy().astype(np.float64).reshape(images.shape[0], -1)
    flat = corrected.astype(np.float64).reshape(n_fit, -1)
    varies = unclipped.generated_std.reshape(-1).numpy() > 1e-6
    assert varies.mean() > 0.5
    np.testing.assert_allclose(flat.mean(0)[varies], data.mean(0)[varies], atol=2e-5)
    np.testing.assert_allclose(flat.var(0)[varies], data.var(0)[varies], rtol=1e-3, atol=1e-6)
    # Clipped to [0, 1], the clip-aware fit still lands on the data's moments (to its residual)
    clipped = MatchSampler(n_fit=n_fit, seed=seed).fit(trained, images)
    assert clipped.fit_residual < 5e-3
    own = clipped.sample(n_fit, torch.Generator().manual_seed(seed)).numpy().astype(np.float64)
    own = own.reshape(n_fit, -1)
    np.testing.assert_allclose(own.mean(0), data.mean(0), atol=clipped.fit_residual + 1e-6)
    np.testing.assert_allclose(own.std(0), data.std(0), atol=clipped.fit_residual + 1e-6)
    # and drawn with a fresh seed it closes nearly all of the mean-variance gap.
    prior = PriorSampler().fit(trained, images).sample(3000, torch.Generator().manual_seed(9))
    matched = clipped.sample(3000, torch.Generator().manual_seed(9))
    assert float(matched.min()) >= 0.0 and float(matched.max()) <= 1.0
    var_real = numpy_pixel_variance(images)
    var_prior, var_matched = numpy_pixel_variance(prior), numpy_pixel_variance(matched)
    assert var_prior < 0.8 * var_real  # the VAE really loses variance
    assert gap_closed(var_real, var_prior, var_matched) > 0.9


@pytest.mark.slow
def test_temperature_finds_tau_above_one_matching_the_data_variance(trained, images):
    sampler = TemperatureSampler(n_fit=800, seed=2).fit(trained, images)
    assert sampler.converged is True
    assert sampler.tau > 1.0
    target = numpy_pixel_variance(images)
    assert sampler.target_variance == pytest.approx(target, rel=1e-9)
    # Independent recomputation with the search's own noise: decode tau * eps with numpy stats.
    # (drawn 256 rows at a time, the rows rule of varloss's random streams)
    generator = torch.Generator().manual_seed(2)
    eps = torch.cat([torch.randn(256, LATENT, generator=generator) for _ in range(4)])[:800]
    with torch.no_grad():
        decoded = trained.decode(sampler.tau * eps)
    assert numpy_pixel_variance(decoded) == pytest.approx(target, rel=2e-3)
    # and the same search is reproducible
    assert TemperatureSampler(n_fit=800, seed=2).fit(trained, images).tau == sampler.tau
    fixed = TemperatureSampler(tau=1.5).fit(trained, images)
    codes = fixed.sample_codes(20000, torch.Generator().manual_seed(0))
    assert float(codes.std()) == pytest.approx(1.5, rel=0.02)


def _aggregate_numpy(model, images) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        mu, logvar = model.encode(images)
    mu, logvar = mu.numpy().astype(np.float64), logvar.numpy().astype(np.float64)
    return mu.mean(0), mu.var(0) + np.exp(logvar).mean(0)


@pytest.mark.slow
def test_two_stage_renormalisation_matches_the_aggregate_posterior(trained, images):
    two_stage = TwoStageSampler(steps=1200, n_renorm=4000, seed=3).fit(trained, images)
    mean, var = _aggregate_numpy(trained, images)
    # The renormalisation map is fitted on n_renorm draws with seed + 1: on those, exact moments.
    codes = two_stage.sample_codes(4000, torch.Generator().manual_seed(4)).double().numpy()
    np.testing.assert_allclose(codes.mean(0), mean, atol=1e-4)
    np.testing.assert_allclose(codes.var(0), var, rtol=1e-4)
    # Fresh draws agree within sampling error.
    fresh = two_stage.sample_codes(4000, torch.Generator().manual_seed(11)).numpy()
    np.testing.assert_allclose(fresh.mean(0), mean, atol=0.15 * np.sqrt(var).max())
    np.testing.assert_allclose(fresh.var(0), var, rtol=0.15)
    # Without renormalisation the second stage loses variance; spherical maps to N(0, I).
    raw = two_stage.variant(renormalize=False).sample_codes(4000, torch.Generator().manual_seed(4))
    assert float(raw.double().var(0).sum()) < 0.95 * float(var.sum())
    spherical = two_stage.variant(renormalize=True, target="spherical")
    unit = spherical.sample_codes(4000, torch.Generator().manual_seed(4)).numpy().astype(np.float64)
    np.testing.assert_allclose(unit.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(unit.var(0), 1.0, rtol=1e-4)
    assert two_stage.final_mse < 0.5  # the second stage learned the codes (no collapse)
    # Decoded, renormalised codes give back part of the prior's pixel-variance gap (11% on this
    # small model), the raw second stage none.
    var_real = numpy_pixel_variance(images)
    generator = torch.Generator().manual_seed(9)
    var_prior = numpy_pixel_variance(PriorSampler().fit(trained, images).sample(3000, generator))
    var_two_stage = numpy_pixel_variance(two_stage.sample(3000, generator.manual_seed(9)))
    var_raw = numpy_pixel_variance(
        two_stage.variant(renormalize=False).sample(3000, generator.manual_seed(9))
    )
    assert gap_closed(var_real, var_prior, var_two_stage) > 0.05
    assert var_raw < var_prior < var_two_stage
