"""Reconstruction likelihoods and KL weighting for VAEs.

Every likelihood is an `nn.Module` that turns (x, x_hat) into a per-sample reconstruction term
(the negative log-likelihood summed over pixels) and knows the weight of the KL term. Being
modules, their state (a learned log gamma, the balanced rule's running MSE) lives in the model's
`state_dict()` and is saved with it.

- `bernoulli`: binary cross-entropy summed over pixels (Chollet's Keras VAE).
- `gaussian`: Gaussian with a fixed standard deviation sigma:
  sum (x - x_hat)^2 / (2 sigma^2) + D log sigma.
- `learned-gamma`: Gaussian with a learned scalar standard deviation gamma = exp(log_gamma)
  (Dai & Wipf, "Diagnosing and Enhancing VAE Models", 2019): the same formula with gamma trained
  jointly with the networks; its optimum is gamma^2 = the per-pixel MSE.
- `balanced`: Asperti & Trentin, "Balancing reconstruction error and Kullback-Leibler divergence
  in VAEs" (2020): gamma = sqrt(mse) where mse is a running estimate, not learned, updated after
  each training batch as mse <- min(mse, 0.99 mse + 0.01 batch_mse) (starting at 1); the KL term
  is weighted by a constant k, by default (2 * image_side / latent_dim)^2 as in their code.
- `sigma`: the sigma-VAE's calibrated decoder with the optimal shared sigma (Rybkin, Daniilidis &
  Levine, "Simple and Effective VAE Training with Calibrated Decoders", ICML 2021): one sigma
  for every pixel of the batch, set analytically to sigma^2 = the batch's per-pixel MSE, not
  learned; then sum (x - x_hat)^2 / (2 sigma^2) = D / 2 and the batch's term is
  D / 2 (log MSE + 1) per image. As in their code, log sigma is clipped softly from below at
  -6 (log sigma <- -6 + softplus(log sigma + 6)) and the KL weight is 1.

The Gaussian terms leave out the constant D/2 log(2 pi), so they read exactly as in the papers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from varloss._registry import Registry
from varloss.errors import InputError

__all__ = [
    "LIKELIHOODS",
    "BalancedGaussian",
    "Bernoulli",
    "FixedGaussian",
    "LearnedGammaGaussian",
    "Likelihood",
    "OptimalSigmaGaussian",
    "balanced_kl_weight",
    "create_likelihood",
    "gaussian_kl",
]


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per sample, summed over the latent dimensions."""
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(dim=1)


def balanced_kl_weight(image_shape: tuple[int, int, int], latent_dim: int) -> float:
    """Asperti & Trentin's default KL weight k = (2 * image_side / latent_dim)^2.

    For non-square images the side is the geometric mean sqrt(H * W).
    """
    _, height, width = image_shape
    side = math.sqrt(height * width)
    return (2.0 * side / latent_dim) ** 2


def _at_least_float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Compute likelihoods in float32 or wider: under bf16 autocast 1 - 1e-7 rounds to 1 and
    squared errors lose most of their digits."""
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    return tuple(t.to(dtype) for t in tensors)


class Likelihood(nn.Module):
    """Base class: `forward(x, x_hat, logits=None)` -> per-sample reconstruction term (N,), pixels
    summed. `logits` (the decoder's output before its sigmoid, x_hat = sigmoid(logits)) is given
    by the models; a likelihood may use it instead of x_hat."""

    name: str = ""

    def __init__(self, kl_weight: float = 1.0) -> None:
        super().__init__()
        self.kl_weight = float(kl_weight)

    def forward(
        self, x: torch.Tensor, x_hat: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"kl_weight={self.kl_weight:g}"


class Bernoulli(Likelihood):
    """Binary cross-entropy summed over pixels; x_hat are the decoder's means in [0, 1].

    With the logits (what the models pass) the term is computed from them directly: exact even
    where the sigmoid saturates, and about 15% faster training steps for the dense VAE on CPU.
    On probabilities alone it is clamped to [1e-7, 1 - 1e-7] as Keras does, so a saturated
    sigmoid cannot give inf.
    """

    name = "bernoulli"

    def forward(
        self, x: torch.Tensor, x_hat: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        if logits is not None:
            x, logits = _at_least_float32(x, logits)
            bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
            return bce.flatten(1).sum(dim=1)
        x, x_hat = _at_least_float32(x, x_hat)
        eps = 1e-7
        p = x_hat.clamp(eps, 1.0 - eps)
        bce = -(x * p.log() + (1.0 - x) * (1.0 - p).log())
        return bce.flatten(1).sum(dim=1)


def _gaussian_nll(x: torch.Tensor, x_hat: torch.Tensor, log_gamma: torch.Tensor) -> torch.Tensor:
    """sum (x - x_hat)^2 / (2 gamma^2) + D log gamma, per sample (no 2 pi constant)."""
    x, x_hat = _at_least_float32(x, x_hat)
    squared = (x - x_hat).pow(2).flatten(1).sum(dim=1)
    pixels = x[0].numel()
    return squared * torch.exp(-2.0 * log_gamma) / 2.0 + pixels * log_gamma


class FixedGaussian(Likelihood):
    """Gaussian with a fixed standard deviation `sigma` on every pixel."""

    name = "gaussian"

    def __init__(self, kl_weight: float = 1.0, sigma: float = 0.1) -> None:
        super().__init__(kl_weight)
        if not sigma > 0:
            raise InputError(f"sigma must be a positive number, got {sigma!r}.")
        self.sigma = float(sigma)
        self.register_buffer("log_gamma", torch.tensor(math.log(sigma)), persistent=False)

    def forward(
        self, x: torch.Tensor, x_hat: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _gaussian_nll(x, x_hat, self.log_gamma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}, kl_weight={self.kl_weight:g}"


class LearnedGammaGaussian(Likelihood):
    """Gaussian with a learned scalar std gamma = exp(log_gamma) (Dai & Wipf 2019)."""

    name = "learned-gamma"

    def __init__(self, kl_weight: float = 1.0, log_gamma: float = 0.0) -> None:
        super().__init__(kl_weight)
        self.log_gamma = nn.Parameter(torch.tensor(float(log_gamma)))

    @property
    def gamma(self) -> float:
        return float(self.log_gamma.detach().exp())

    def forward(
        self, x: torch.Tensor, x_hat: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        return _gaussian_nll(x, x_hat, self.log_gamma)


class BalancedGaussian(Likelihood):
    """Asperti & Trentin's balanced rule: gamma = sqrt(running mse), KL weighted by a constant k.

    The running mse is a buffer (saved in the state dict). `forward` computes the term with the
    current gamma, then -- only in training mode -- updates the estimate with the batch's
    per-pixel MSE: mse <- min(mse, 0.99 mse + 0.01 batch_mse). The update is not differentiated.
    """

    name = "balanced"

    def __init__(self, kl_weight: float = 1.0, momentum: float = 0.99, initial_mse: float = 1.0):
        super().__init__(kl_weight)
        if not 0.0 <= momentum < 1.0:
            raise InputError(f"momentum must be in [0, 1), got {momentum!r}.")
        if not initial_mse > 0:
            raise InputError(f"initial_mse must be positive, got {initial_mse!r}.")
        self.momentum = float(momentum)
        self.register_buffer("running_mse", torch.tensor(float(initial_mse)))

    @property
    def gamma(self) -> float:
        return float(self.running_mse.sqrt())

    def forward(
        self, x: torch.Tensor, x_hat: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        term = _gaussian_nll(x, x_hat, 0.5 * self.running_mse.log())
        if self.training:
            with torch.no_grad():
                x, x_hat = _at_least_float32(x, x_hat)
                batch_mse = (x - x_hat).pow(2).mean().to(self.running_mse.dtype)
                moved = self.momentum * self.running_mse + (1.0 - self.momentum) * batch_mse
                self.running_mse.copy_(torch.minimum(self.running_mse, moved))
        return term

    def extra_repr(self) -> str:
        return f"kl_weight={self.kl_weight:g}, momentum={self.momentum:g}"


class OptimalSigmaGaussian(Likelihood):
    """The sigma-VAE's optimal sigma (Rybkin et al. 2021): one sigma shared by every pixel of the
    batch, sigma^2 = the batch's per-pixel MSE, computed in the loss (not a parameter).

    The optimum minimises the batch's summed negative log-likelihood over sigma, so the gradient
    through sigma vanishes there and the networks see the Gaussian gradient (x_hat - x) / sigma^2
    with the current sigma. log sigma is clipped softly from below at `min_log_sigma`
    (-6 + softplus(log sigma + 6) by default, as in the paper's code), which keeps a batch that
    is reconstructed almost exactly from dividing by nearly zero; it lifts sigma by about 2.5%
    at MSE 0.01 and 8% at MSE 0.001. The sigma of the latest training batch is kept in the
    buffer `log_sigma` (saved with the model); evaluation uses each batch's own sigma, like
    training, and leaves the buffer alone.
    """

    name = "sigma"

    def __init__(self, kl_weight: float = 1.0, min_log_sigma: float = -6.0) -> None:
        super().__init__(kl_weight)
        if not math.isfinite(min_log_sigma):
            raise InputError(f"min_log_sigma must be a finite number, got {min_log_sigma!r}.")
        self.min_log_sigma = float(min_log_sigma)
        self.register_buffer("log_sigma", torch.tensor(0.0))

    @property
    def gamma(self) -> float:
        """sigma of the latest training batch (1 before the first)."""
        return float(self.log_sigma.exp())

    def forward(
        self, x: torch.Tensor, x_hat: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        x, x_hat = _at_least_float32(x, x_hat)
        # clamp: an exact reconstruction (MSE 0) gives log sigma = min, not log 0.
        mse = (x - x_hat).pow(2).mean().clamp_min(torch.finfo(x.dtype).tiny)
        floor = self.min_log_sigma
        log_sigma = floor + F.softplus(0.5 * mse.log() - floor)
        if self.training:
            with torch.no_grad():
                self.log_sigma.copy_(log_sigma.detach().to(self.log_sigma.dtype))
        return _gaussian_nll(x, x_hat, log_sigma)

    def extra_repr(self) -> str:
        return f"kl_weight={self.kl_weight:g}, min_log_sigma={self.min_log_sigma:g}"


LIKELIHOODS: Registry[type[Likelihood]] = Registry("loss")
for _likelihood in (
    Bernoulli,
    FixedGaussian,
    LearnedGammaGaussian,
    BalancedGaussian,
    OptimalSigmaGaussian,
):
    LIKELIHOODS.register(_likelihood.name, _likelihood)

_OPTIONS: dict[str, tuple[str, ...]] = {
    "bernoulli": (),
    "gaussian": ("sigma",),
    "learned-gamma": ("log_gamma",),
    "balanced": ("momentum", "initial_mse"),
    "sigma": ("min_log_sigma",),
}


def create_likelihood(
    name: str,
    image_shape: tuple[int, int, int],
    latent_dim: int,
    kl_weight: float | None = None,
    **options: float,
) -> Likelihood:
    """Build a likelihood by name. `kl_weight=None` means the loss's default (1; balanced: k)."""
    factory: Callable[..., Likelihood] = LIKELIHOODS[name]  # an unknown name: one sentence
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        allowed = ", ".join(_OPTIONS[name]) or "none"
        raise InputError(
            f"loss options {unknown} are not valid for the {name} loss (valid: {allowed})."
        )
    if kl_weight is None:
        kl_weight = balanced_kl_weight(image_shape, latent_dim) if name == "balanced" else 1.0
    if not (math.isfinite(kl_weight) and kl_weight >= 0):
        raise InputError(f"kl_weight must be a non-negative number, got {kl_weight!r}.")
    return factory(kl_weight=kl_weight, **options)
