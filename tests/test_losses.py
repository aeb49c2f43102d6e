"""Likelihoods and KL of varloss.losses against closed forms and independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from varloss.errors import InputError
from varloss.losses import (
    BalancedGaussian,
    Bernoulli,
    FixedGaussian,
    LearnedGammaGaussian,
    OptimalSigmaGaussian,
    balanced_kl_weight,
    create_likelihood,
    gaussian_kl,
)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(5, 1, 6, 6, generator=generator)
    x_hat = torch.rand(5, 1, 6, 6, generator=generator) * 0.98 + 0.01
    return x, x_hat


def test_gaussian_kl_matches_torch_distributions_and_monte_carlo() -> None:
    generator = torch.Generator().manual_seed(1)
    mu = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    logvar = torch.randn(3, 4, generator=generator, dtype=torch.float64) * 0.5
    closed = gaussian_kl(mu, logvar)
    q = Normal(mu, (0.5 * logvar).exp())
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(closed, kl_divergence(q, p).sum(dim=1))
    # Monte Carlo: E_q[log q(z) - log p(z)] with 400k draws.
    z = q.sample((400_000,))
    estimate = (q.log_prob(z) - p.log_prob(z)).sum(dim=2).mean(dim=0)
    np.testing.assert_allclose(estimate.numpy(), closed.numpy(), atol=0.02)
    # A standard normal posterior has zero KL.
    assert gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0


def test_bernoulli_is_bce_summed_over_pixels() -> None:
    x, x_hat = _batch()
    ours = Bernoulli()(x, x_hat)
    xn, pn = x.double().numpy(), x_hat.double().numpy()
    reference = -(xn * np.log(pn) + (1 - xn) * np.log(1 - pn)).reshape(5, -1).sum(axis=1)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-5)


def test_bernoulli_is_finite_at_saturated_outputs() -> None:
    x = torch.tensor([[[[1.0, 0.0]]]])
    x_hat = torch.tensor([[[[0.0, 1.0]]]])
    value = Bernoulli()(x, x_hat)
    assert torch.isfinite(value).all() and value.item() > 30


def test_bernoulli_from_logits_equals_bce_on_probabilities_and_stays_exact() -> None:
    torch.manual_seed(1)
    x = torch.rand(5, 1, 4, 4).round()
    logits = torch.randn(5, 1, 4, 4) * 3
    on_probabilities = Bernoulli()(x, torch.sigmoid(logits))
    from_logits = Bernoulli()(x, torch.sigmoid(logits), logits=logits)
    torch.testing.assert_close(from_logits, on_probabilities, rtol=1e-5, atol=1e-5)
    # Saturated and wrong: the clamped version caps a pixel at -log(1e-7) = 16.1, the logits
    # give the exact -log sigmoid(-40) = 40 (and a gradient that does not vanish).
    x1 = torch.ones(1, 1, 1, 1)
    wrong = torch.full((1, 1, 1, 1), -40.0, requires_grad=True)
    value = Bernoulli()(x1, torch.sigmoid(wrong), logits=wrong)
    assert value.item() == pytest.approx(40.0, rel=1e-6)
    value.sum().backward()
    assert wrong.grad.item() == pytest.approx(-1.0, rel=1e-6)


def test_fixed_gaussian_is_negative_log_likelihood_without_constant() -> None:
    x, x_hat = _batch()
    sigma = 0.3
    ours = FixedGaussian(sigma=sigma)(x, x_hat)
    log_prob = Normal(x_hat.double(), sigma).log_prob(x.double()).flatten(1).sum(1)
    pixels = x[0].numel()
    expected = -log_prob - pixels * 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-5)


def test_learned_gamma_gradient_matches_closed_form_and_vanishes_at_mse() -> None:
    x, x_hat = _batch()
    likelihood = LearnedGammaGaussian(log_gamma=-0.7)
    likelihood(x, x_hat).sum().backward()
    squared = (x - x_hat).double().pow(2).flatten(1).sum(1)
    pixels = x[0].numel()
    # d/dl [S exp(-2l)/2 + D l] = -S exp(-2l) + D, summed over the batch.
    expected = (-squared * math.exp(1.4) + pixels).sum().item()
    assert likelihood.log_gamma.grad is not None
    assert likelihood.log_gamma.grad.item() == pytest.approx(expected, rel=1e-5)
    # At gamma^2 = per-pixel MSE of the batch the gradient is zero (Dai & Wipf's optimum).
    optimum = 0.5 * math.log(squared.sum().item() / (pixels * x.shape[0]))
    likelihood = LearnedGammaGaussian(log_gamma=optimum)
    likelihood(x, x_hat).sum().backward()
    assert likelihood.log_gamma.grad is not None
    assert abs(likelihood.log_gamma.grad.item()) < 1e-3


def test_balanced_rule_follows_hand_computed_sequence() -> None:
    likelihood = BalancedGaussian(kl_weight=2.0)
    likelihood.train()
    x = torch.zeros(2, 1, 4, 4)
    running = 1.0
    pixels = 16
    for batch_mse in [0.5, 0.3, 2.0, 0.9, 0.001, 0.004]:
        x_hat = torch.full_like(x, math.sqrt(batch_mse))
        term = likelihood(x, x_hat)
        # The term uses gamma from *before* this batch's update.
        expected = pixels * batch_mse / (2 * running) + pixels * 0.5 * math.log(running)
        np.testing.assert_allclose(term.numpy(), [expected, expected], rtol=1e-5)
        running = min(running, 0.99 * running + 0.01 * batch_mse)
        assert likelihood.running_mse.item() == pytest.approx(running, rel=1e-6)
    assert likelihood.gamma == pytest.approx(math.sqrt(running), rel=1e-6)
    # No update in eval mode, and the update never carries gradients.
    likelihood.eval()
    likelihood(x, torch.full_like(x, 0.01))
    assert likelihood.running_mse.item() == pytest.approx(running, rel=1e-6)
    assert not likelihood.running_mse.requires_grad
    assert "running_mse" in likelihood.state_dict()


def _softplus(value: float) -> float:
    return math.log1p(math.exp(-abs(value))) + max(value, 0.0)


def test_sigma_vae_term_is_the_gaussian_nll_at_the_soft_clipped_batch_mse() -> None:
    x, x_hat = _batch(3)
    likelihood = OptimalSigmaGaussian()
    ours = likelihood(x, x_hat).double().numpy()
    xn, hn = x.double().numpy(), x_hat.double().numpy()
    squared = ((xn - hn) ** 2).reshape(5, -1).sum(axis=1)
    pixels = xn[0].size
    mse = squared.sum() / (5 * pixels)  # one sigma for the whole batch
    log_sigma = -6.0 + _softplus(0.5 * math.log(mse) + 6.0)  # the paper's code's soft clip
    expected = squared / (2 * math.exp(2 * log_sigma)) + pixels * log_sigma
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    # Without the clip (a floor far below) sigma^2 is the batch MSE and the batch's summed
    # term is the paper's closed form N D / 2 (log MSE + 1).
    unclipped = OptimalSigmaGaussian(min_log_sigma=-60.0)(x, x_hat).double().sum().item()
    assert unclipped == pytest.approx(5 * pixels / 2 * (math.log(mse) + 1), rel=1e-6)


def test_sigma_vae_gradient_is_the_gaussian_one_at_the_optimal_sigma() -> None:
    # The optimum over sigma makes the gradient through sigma vanish (envelope theorem): the
    # networks get (x_hat - x) / sigma^2 with sigma^2 = the batch MSE, as for a fixed sigma.
    x, x_hat = _batch(4)
    x, x_hat = x.double(), x_hat.double().requires_grad_(True)
    OptimalSigmaGaussian(min_log_sigma=-60.0)(x, x_hat).sum().backward()
    mse = (x - x_hat).pow(2).mean().item()
    expected = (x_hat - x).detach() / mse
    torch.testing.assert_close(x_hat.grad, expected, rtol=1e-6, atol=1e-9)


def test_sigma_vae_keeps_the_training_sigma_and_survives_an_exact_batch() -> None:
    likelihood = create_likelihood("sigma", (1, 4, 4), 2)
    assert isinstance(likelihood, OptimalSigmaGaussian) and likelihood.kl_weight == 1.0
    x = torch.zeros(2, 1, 4, 4)
    likelihood.train()
    likelihood(x, torch.full_like(x, 0.2))  # MSE 0.04: log sigma = -6 + softplus(log 0.2 + 6)
    expected = -6.0 + _softplus(math.log(0.2) + 6.0)
    assert likelihood.log_sigma.item() == pytest.approx(expected, rel=1e-6)
    assert likelihood.gamma == pytest.approx(math.exp(expected), rel=1e-6)
    assert "log_sigma" in likelihood.state_dict()
    likelihood.eval()  # evaluation uses its batch's sigma and leaves the kept one alone
    likelihood(x, torch.full_like(x, 0.5))
    assert likelihood.log_sigma.item() == pytest.approx(expected, rel=1e-6)
    # An exact reconstruction: sigma floors at about exp(-6), the term is finite.
    exact = likelihood(x, x.clone())
    assert torch.isfinite(exact).all()
    assert exact[0].item() == pytest.approx(16 * (-6.0 + _softplus(-math.inf)), abs=1e-4)
    with pytest.raises(InputError, match="min_log_sigma must be a finite number"):
        create_likelihood("sigma", (1, 4, 4), 2, min_log_sigma=math.nan)
    with pytest.raises(InputError, match="not valid for the sigma loss"):
        create_likelihood("sigma", (1, 4, 4), 2, sigma=0.1)


def test_balanced_default_kl_weight_is_asperti_trentin_k() -> None:
    likelihood = create_likelihood("balanced", (1, 28, 28), 16)
    assert likelihood.kl_weight == pytest.approx((2 * 28 / 16) ** 2)
    assert balanced_kl_weight((3, 64, 64), 64) == pytest.approx(4.0)
    assert create_likelihood("balanced", (1, 28, 28), 16, kl_weight=0.5).kl_weight == 0.5
    assert create_likelihood("bernoulli", (1, 28, 28), 16).kl_weight == 1.0


def test_create_likelihood_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="unknown loss 'laplace'; known: bernoulli, gaussian"):
        create_likelihood("laplace", (1, 28, 28), 2)
    with pytest.raises(InputError, match="not valid for the bernoulli loss"):
        create_likelihood("bernoulli", (1, 28, 28), 2, sigma=0.1)
    with pytest.raises(InputError, match="sigma"):
        create_likelihood("gaussian", (1, 28, 28), 2, sigma=0.0)
    with pytest.raises(InputError, match="kl_weight"):
        create_likelihood("gaussian", (1, 28, 28), 2, kl_weight=-1.0)
