"""Remedies: samplers' save/load round trips and the statistics each one promises.

A tiny dense VAE is trained for a few hundred steps on sklearn digits (8x8, offline) through
`varloss.models`; every assertion is checked against an independent numpy computation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from varloss.errors import InputError
from varloss.remedies import (
    ALL_METHODS,
    SAMPLERS,
    GMMSampler,
    MatchSampler,
    TemperatureSampler,
    TwoStageSampler,
    create_sampler,
    gap_closed,
    load_sampler,
    parse_methods,
)

LATENT = 4
STAGE2_STEPS = 1200


def _numpy_pixel_variance(images: torch.Tensor) -> float:
    flat = images.reshape(images.shape[0], -1).numpy().astype(np.float64)
    return float(flat.var(axis=0).mean())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, torch.Tensor]:
    """A dense VAE trained briefly on digits, plus its training images."""
    from varloss.data import load
    from varloss.models import create_model

    torch.manual_seed(0)
    images = load("digits", "train").images
    model = create_model("dense", image_shape=tuple(images.shape[1:]), latent_dim=LATENT)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batches = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(400):
        batch = images[torch.randint(0, images.shape[0], (128,), generator=batches)]
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model, images


@pytest.fixture(scope="module")
def two_stage(trained) -> TwoStageSampler:
    model, images = trained
    return TwoStageSampler(steps=STAGE2_STEPS, n_renorm=4000, seed=3).fit(model, images)


def _fitted(name: str, trained, two_stage) -> object:
    model, images = trained
    if name == "two-stage":
        return two_stage
    small = {"match": {"n_fit": 1000}, "temperature": {"n_fit": 500}, "gmm": {"n_components": 3}}
    return SAMPLERS[name](seed=1, **small.get(name, {})).fit(model, images)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_save_load_round_trip_reproduces_samples(name, trained, two_stage, tmp_path):
    model, _ = trained
    sampler = _fitted(name, trained, two_stage)
    sampler.save(tmp_path / name)
    config = json.loads((tmp_path / name / "config.json").read_text())
    assert config["sampler"] == name and config["latent_dim"] == LATENT
    assert not list((tmp_path / name).glob("*.pkl")) and not list((tmp_path / name).glob(".*tmp"))
    restored = load_sampler(tmp_path / name, model)
    assert type(restored) is type(sampler)
    assert restored.settings() == json.loads(json.dumps(sampler.settings()))
    first = sampler.sample(64, torch.Generator().manual_seed(7))
    again = restored.sample(64, torch.Generator().manual_seed(7))
    assert first.shape == (64, *config["image_shape"])
    assert torch.equal(first, again)
    # a different seed gives different samples (the generator is really used)
    assert not torch.equal(first, restored.sample(64, torch.Generator().manual_seed(8)))


def test_loading_onto_another_model_is_refused(trained, tmp_path):
    from varloss.models import create_model

    model, images = trained
    PriorSampler = SAMPLERS["prior"]
    PriorSampler().fit(model, images).save(tmp_path / "prior")
    other = create_model("dense", image_shape=tuple(images.shape[1:]), latent_dim=LATENT)
    with pytest.raises(InputError, match="fingerprint"):
        load_sampler(tmp_path / "prior", other)
    with pytest.raises(InputError, match="not a saved sampler"):
        load_sampler(tmp_path / "missing", model)
    with pytest.raises(InputError, match="not fitted"):
        MatchSampler().sample(3)


def test_match_closes_the_per_pixel_gap_by_construction(trained):
    model, images = trained
    seed, n_fit = 5, 1500
    unclipped = MatchSampler(n_fit=n_fit, value_range=None, seed=seed).fit(model, images)
    # The fit's own draws (same seed) land exactly on the data's per-pixel mean and variance.
    corrected = unclipped.sample(n_fit, torch.Generator().manual_seed(seed)).numpy()
    data = images.numpy().astype(np.float64).reshape(images.shape[0], -1)
    flat = corrected.astype(np.float64).reshape(n_fit, -1)
    varies = unclipped.generated_std.reshape(-1).numpy() > 1e-6
    assert varies.mean() > 0.5
    np.testing.assert_allclose(flat.mean(0)[varies], data.mean(0)[varies], atol=2e-5)
    np.testing.assert_allclose(flat.var(0)[varies], data.var(0)[varies], rtol=1e-3, atol=1e-6)
    # Clipped to [0, 1], the clip-aware fit still lands on the data's moments (to its residual)
    clipped = MatchSampler(n_fit=n_fit, seed=seed).fit(model, images)
    assert clipped.fit_residual < 5e-3
    own = clipped.sample(n_fit, torch.Generator().manual_seed(seed)).numpy().astype(np.float64)
    own = own.reshape(n_fit, -1)
    np.testing.assert_allclose(own.mean(0), data.mean(0), atol=clipped.fit_residual + 1e-6)
    np.testing.assert_allclose(own.std(0), data.std(0), atol=clipped.fit_residual + 1e-6)
    # and drawn with a fresh seed it closes nearly all of the mean-variance gap.
    prior = SAMPLERS["prior"]().fit(model, images).sample(3000, torch.Generator().manual_seed(9))
    matched = clipped.sample(3000, torch.Generator().manual_seed(9))
    assert float(matched.min()) >= 0.0 and float(matched.max()) <= 1.0
    var_real = _numpy_pixel_variance(images)
    var_prior, var_matched = _numpy_pixel_variance(prior), _numpy_pixel_variance(matched)
    assert var_prior < 0.8 * var_real  # the VAE really loses variance
    assert gap_closed(var_real, var_prior, var_matched) > 0.9


def test_temperature_finds_tau_above_one_matching_the_data_variance(trained):
    model, images = trained
    sampler = TemperatureSampler(n_fit=800, seed=2).fit(model, images)
    assert sampler.converged is True
    assert sampler.tau > 1.0
    target = _numpy_pixel_variance(images)
    assert sampler.target_variance == pytest.approx(target, rel=1e-9)
    # Independent recomputation with the search's own noise: decode tau * eps with numpy stats.
    eps = torch.randn(800, LATENT, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        decoded = model.decode(sampler.tau * eps)
    assert _numpy_pixel_variance(decoded) == pytest.approx(target, rel=2e-3)
    # and the same search is reproducible
    assert TemperatureSampler(n_fit=800, seed=2).fit(model, images).tau == sampler.tau
    fixed = TemperatureSampler(tau=1.5).fit(model, images)
    codes = fixed.sample_codes(20000, torch.Generator().manual_seed(0))
    assert float(codes.std()) == pytest.approx(1.5, rel=0.02)


def _aggregate_numpy(model, images) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        mu, logvar = model.encode(images)
    mu, logvar = mu.numpy().astype(np.float64), logvar.numpy().astype(np.float64)
    return mu.mean(0), mu.var(0) + np.exp(logvar).mean(0)


def test_two_stage_renormalisation_matches_the_aggregate_posterior(trained, two_stage):
    model, images = trained
    mean, var = _aggregate_numpy(model, images)
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


def test_gmm_parameters_equal_sklearn_and_samples_follow_them(trained):
    from sklearn.mixture import GaussianMixture

    model, images = trained
    sampler = GMMSampler(n_components=3, seed=4).fit(model, images)
    with torch.no_grad():
        mu, _ = model.encode(images)
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


def test_gap_closed_and_method_parsing():
    assert gap_closed(0.10, 0.06, 0.10) == pytest.approx(1.0)
    assert gap_closed(0.10, 0.06, 0.08) == pytest.approx(0.5)
    assert gap_closed(0.10, 0.06, 0.12) == pytest.approx(0.5)  # overshoot counts as gap
    assert gap_closed(0.10, 0.06, 0.04) == pytest.approx(-0.5)
    assert gap_closed(0.10, 0.10, 0.04) is None
    assert parse_methods("all") == list(ALL_METHODS)
    assert parse_methods("match") == ["prior", "match"]
    assert parse_methods("gmm, prior,gmm") == ["prior", "gmm"]
    for bad in ("bogus", "", "match,nope", "all,match"):
        with pytest.raises(InputError, match="method must be one of"):
            parse_methods(bad)
    with pytest.raises(InputError, match="target"):
        create_sampler("two-stage", target="sideways")
    with pytest.raises(InputError, match="tau"):
        TemperatureSampler(tau=-1.0)


def test_correct_rejects_bad_arguments(tmp_path):
    from varloss.remedies import correct

    with pytest.raises(InputError, match="does not exist"):
        correct(tmp_path / "nowhere", "match")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no saved model"):
        correct(tmp_path / "empty", "match")
    with pytest.raises(InputError, match="method must be one of"):
        correct(tmp_path / "empty", "sharpen")
    command = [sys.executable, "-m", "varloss", "correct", str(tmp_path / "empty"), "-m", "match"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2
    assert "no saved model" in finished.stderr and "Traceback" not in finished.stderr


def test_correct_all_writes_report_samplers_and_resumes(trained, tmp_path):
    from varloss.models import save_model
    from varloss.remedies import correct

    model, _ = trained
    run = tmp_path / "run"
    save_model(model, run, extra={"train": {"dataset": "digits", "limit": None}})
    out = tmp_path / "correct"
    params = {name: {"steps": 600} for name in ALL_METHODS if name.startswith("two-stage")}
    params["gmm"] = {"n_components": 3}
    params["match"] = {"n_fit": 1000}
    params["temperature"] = {"n_fit": 500}
    report = correct(
        run, "all", out, n_samples=600, sampler_params=params, compute_fid=False, progress=False
    )
    saved = json.loads((out / "report.json").read_text())
    assert saved == report
    assert (out / "samples.png").stat().st_size > 1000
    assert set(report["methods"]) == set(ALL_METHODS)
    assert [row["method"] for row in report["table"]] == list(ALL_METHODS)
    for name in ALL_METHODS:
        assert (out / "samplers" / name / "state.safetensors").is_file()
    baseline = report["baseline"]
    assert report["methods"]["prior"]["gap_closed"] == pytest.approx(0.0)
    # var_generated agrees with an independent computation from the saved sampler
    match = load_sampler(out / "samplers" / "match", model)
    regenerated = match.sample(600, torch.Generator().manual_seed(0))
    entry = report["methods"]["match"]
    assert entry["var_generated"] == pytest.approx(_numpy_pixel_variance(regenerated), rel=1e-6)
    expected = 1 - abs(entry["var_real"] - entry["var_generated"]) / abs(
        baseline["var_real"] - baseline["var_generated"]
    )
    assert entry["gap_closed"] == pytest.approx(expected)
    assert entry["gap_closed"] > 0.8
    assert entry["fid"] is None and "disabled" in entry["fid_reason"]
    assert report["settings"]["n_generated"] == 600 and report["settings"]["seed"] == 0
    # a second call resumes: every sampler is loaded, numbers are identical
    again = correct(
        run, "all", out, n_samples=600, sampler_params=params, compute_fid=False, progress=False
    )
    assert {e["sampler_source"] for e in again["methods"].values()} == {"loaded"}
    assert again["table"] == report["table"]
    single = correct(
        run,
        "temperature",
        tmp_path / "one",
        n_samples=600,
        sampler_params=params,
        compute_fid=False,
        progress=False,
    )
    assert single["method"] == "temperature" and "baseline" in single and "methods" not in single
    temperature = report["methods"]["temperature"]
    assert single["var_generated"] == pytest.approx(temperature["var_generated"])
    assert Path(single["sampler_dir"]).name == "temperature"
