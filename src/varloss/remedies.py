"""Remedies that give a VAE's generated samples their variance back, as fitted, saved samplers.

Every sampler follows the scikit-learn pattern: parameters in the constructor, `fit(model,
train_images)` learns whatever it needs from the trained VAE and its training data, then
`sample(n, generator)` returns images (N x C x H x W in the model's data range) and, where the
method works in latent space, `sample_codes(n, generator)` returns the codes it decodes.
`save(dir)` writes the fitted state (safetensors + JSON, never pickles) and `load_sampler(dir,
model)` restores it, so a correction fitted once can be reused and audited.

Methods (registry `SAMPLERS`):

- `prior`: z ~ N(0, I), the plain VAE sampler; the baseline every remedy is compared with.
- `two-stage`: a second, small VAE learns the distribution of the first stage's codes mu (Dai &
  Wipf 2019, with the balanced reconstruction/KL rule of Asperti & Trentin 2020 in latent space).
  The second stage loses variance as well, so by default its generated codes are renormalised per
  dimension to the statistics of the first stage's aggregate posterior: mean E[mu] and, by the law
  of total variance, variance Var(mu) + E[sigma^2] (the variance of a sampled code z = mu + sigma
  eps). `target="spherical"` maps to N(0, I) instead; `renormalize=False` shows the raw second
  stage.
- `temperature`: z ~ N(0, tau^2 I) with tau chosen by a seeded one-dimensional search so that the
  mean per-pixel variance of the generated images equals that of the training images.
- `match`: a per-pixel affine map of decoded prior samples onto the training data's per-pixel mean
  and variance, clipped to the data range. A post-hoc calibration of pixel statistics, not a better
  generative model: it closes the variance gap by construction.
- `gmm`: a Gaussian mixture (scikit-learn) fitted on the training codes mu, sampled with torch.

`correct(run_dir, method, out)` fits the requested samplers on a `varloss train` run folder and
reports, against the test split, the `varloss measure` numbers of each sampler, the fraction of the
prior's variance gap it closes, and the FID gain where `varloss.quality` can compute one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from varloss._io import atomic_path, atomic_write_json
from varloss.errors import InputError
from varloss.losses import BalancedGaussian, gaussian_kl
from varloss.measure import model_device

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
STATE_NAME = "state.safetensors"


# ---------------------------------------------------------------------------------------------
# helpers shared by the samplers


def _as_images(train_images: Any) -> torch.Tensor:
    """Accept an ImageSet, a tensor or an array (N x C x H x W) and return a float32 CPU tensor."""
    images = getattr(train_images, "images", train_images)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise InputError(
            f"train_images must be an ImageSet, a tensor or an array, got {type(images).__name__}."
        )
    if images.ndim != 4 or images.shape[0] < 2:
        raise InputError(
            f"train_images must be shaped N x C x H x W with N >= 2, got {tuple(images.shape)}."
        )
    return images.detach().to("cpu", torch.float32)


def model_fingerprint(model: nn.Module) -> str:
    """A short sha256 of the model's state dict, so a saved sampler knows which model it fits."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        value = tensor.detach().to("cpu").contiguous()
        digest.update(str(value.dtype).encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:16]


@torch.no_grad()
def encode_dataset(
    model: nn.Module, images: torch.Tensor, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode `images` in batches; return (mu, logvar) as float64 CPU tensors, N x latent_dim."""
    device = model_device(model)
    mus, logvars = [], []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device)
        mu, logvar = model.encode(batch)
        mus.append(mu.detach().to("cpu", torch.float64))
        logvars.append(logvar.detach().to("cpu", torch.float64))
    return torch.cat(mus), torch.cat(logvars)


@torch.no_grad()
def decode_codes(model: nn.Module, codes: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Decode latent codes in batches; return float32 CPU images N x C x H x W."""
    device = model_device(model)
    dtype = next(iter(model.parameters()), torch.empty(0)).dtype
    out = []
    for start in range(0, codes.shape[0], batch_size):
        batch = codes[start : start + batch_size].to(device=device, dtype=dtype)
        out.append(model.decode(batch).detach().to("cpu", torch.float32))
    return torch.cat(out)


def aggregate_posterior_stats(mu: torch.Tensor, logvar: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-dimension mean and variance of a sampled code z = mu + sigma * eps over the data.

    Law of total variance: Var(z) = Var(mu) + E[sigma^2]. Float64, population (ddof=0) moments.
    """
    mu = mu.to(torch.float64)
    mean = mu.mean(0)
    var_mu = mu.var(0, correction=0)
    mean_sigma2 = logvar.to(torch.float64).exp().mean(0)
    return {"mean": mean, "var_mu": var_mu, "mean_sigma2": mean_sigma2, "var": var_mu + mean_sigma2}


def renormalize_latents(
    codes: torch.Tensor,
    source_mean: torch.Tensor,
    source_std: torch.Tensor,
    target_mean: torch.Tensor,
    target_var: torch.Tensor,
) -> torch.Tensor:
    """Standardise codes per dimension with the source moments, then give them the target ones.

    Float64 affine map (codes - source_mean) / source_std * sqrt(target_var) + target_mean.
    """
    codes = codes.to(torch.float64)
    return (codes - source_mean) / source_std * target_var.sqrt() + target_mean


def mean_pixel_variance(images: torch.Tensor) -> float:
    """Mean over pixels of the per-pixel variance across samples (float64, ddof=0)."""
    flat = images.reshape(images.shape[0], -1).to(torch.float64)
    return float(flat.var(0, correction=0).mean())


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _randn(n: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(n, dim, generator=generator, dtype=torch.float32)


def _check_n(n: int) -> int:
    if not isinstance(n, int | np.integer) or int(n) < 1:
        raise InputError(f"n (number of samples) must be a positive integer, got {n!r}.")
    return int(n)


# ---------------------------------------------------------------------------------------------
# the sampler base class and registry


SAMPLERS: dict[str, type[Sampler]] = {}


def register(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: add a sampler to the `SAMPLERS` registry under `cls.name`."""
    SAMPLERS[cls.name] = cls
    return cls


class Sampler(ABC):
    """A fitted way of drawing images from a trained VAE.

    Subclasses set `name`, take their parameters as keyword arguments of the constructor (stored
    by `params()` and saved), and implement `_fit`, `sample_codes` or `sample`, and the
    `_state`/`_set_state` pair that carries the fitted tensors and scalars through save/load.
    """

    name: ClassVar[str] = ""

    def __init__(self, seed: int = 0, batch_size: int = 1024) -> None:
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.model: nn.Module | None = None
        self.latent_dim: int | None = None
        self.image_shape: tuple[int, ...] | None = None
        self.model_fingerprint: str | None = None
        self.fitted = False
        self.fit_seconds: float | None = None

    # -- parameters ------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-safe); the saved config re-creates the sampler from them."""
        return {"seed": self.seed, "batch_size": self.batch_size}

    def settings(self) -> dict[str, Any]:
        """Everything that determines this sampler's output: parameters plus fitted scalars."""
        return {"method": self.name, **self.params(), **self._fitted_scalars()}

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, model: nn.Module, train_images: Any) -> Sampler:
        """Fit on a trained VAE and its training images (ImageSet, tensor or array)."""
        images = _as_images(train_images)
        self.attach(model, check=False)
        self.image_shape = tuple(int(s) for s in images.shape[1:])
        model.eval()
        started = time.perf_counter()
        self._fit(model, images)
        self.fit_seconds = time.perf_counter() - started
        self.model_fingerprint = model_fingerprint(model)
        self.fitted = True
        return self

    @abstractmethod
    def _fit(self, model: nn.Module, images: torch.Tensor) -> None: ...

    def attach(self, model: nn.Module, check: bool = True) -> Sampler:
        """Attach the VAE whose decoder the sampler uses (after `load`); checks it is the same."""
        latent_dim = int(model.latent_dim)
        if check and self.latent_dim is not None and latent_dim != self.latent_dim:
            raise InputError(
                f"model has latent_dim {latent_dim} but the {self.name} sampler was fitted "
                f"with latent_dim {self.latent_dim}."
            )
        if check and self.model_fingerprint is not None:
            found = model_fingerprint(model)
            if found != self.model_fingerprint:
                raise InputError(
                    f"model (fingerprint {found}) is not the one the {self.name} sampler was "
                    f"fitted on (fingerprint {self.model_fingerprint})."
                )
        self.model = model
        self.latent_dim = latent_dim
        return self

    def _require_model(self) -> nn.Module:
        if not self.fitted:
            raise InputError(f"the {self.name} sampler is not fitted; call fit(model, images).")
        if self.model is None:
            raise InputError(
                f"the {self.name} sampler has no model attached; pass model= to load_sampler."
            )
        return self.model

    # -- sampling ----------------------------------------------------------------------------
    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latent codes (float32, N x latent_dim) that `sample` decodes."""
        raise NotImplementedError(f"the {self.name} sampler does not work in latent space")

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images N x C x H x W (float32, CPU). Seed `generator` for reproducible draws."""
        model = self._require_model()
        codes = self.sample_codes(_check_n(n), generator)
        return decode_codes(model, codes, self.batch_size)

    # -- persistence -------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        """Fitted tensors to save (subclasses extend)."""
        return {}

    def _fitted_scalars(self) -> dict[str, Any]:
        """Fitted JSON-safe values to save (subclasses extend)."""
        return {}

    def _set_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        """Restore what `_state` and `_fitted_scalars` returned (nothing for stateless samplers)."""
        del tensors, scalars

    def save(self, directory: str | Path) -> Path:
        """Write `config.json` + `state.safetensors` (atomically) into `directory`."""
        if not self.fitted:
            raise InputError(f"the {self.name} sampler is not fitted; nothing to save.")
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            key: value.detach().to("cpu").contiguous() for key, value in self._state().items()
        }
        with atomic_path(directory / STATE_NAME) as tmp:
            save_file(tensors, str(tmp), metadata={"sampler": self.name})
        config = {
            "sampler": self.name,
            "format_version": FORMAT_VERSION,
            "params": self.params(),
            "fitted": self._fitted_scalars(),
            "latent_dim": self.latent_dim,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "model_fingerprint": self.model_fingerprint,
            "fit_seconds": self.fit_seconds,
        }
        atomic_write_json(directory / CONFIG_NAME, config)
        return directory

    @classmethod
    def load(cls, directory: str | Path, model: nn.Module | None = None) -> Sampler:
        """Restore a saved sampler; `model` (the VAE it was fitted on) is needed to sample."""
        sampler = load_sampler(directory, model)
        if cls is not Sampler and not isinstance(sampler, cls):
            raise InputError(
                f"{directory} holds a {sampler.name} sampler, not a {cls.name} sampler."
            )
        return sampler

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({params})"


def load_sampler(directory: str | Path, model: nn.Module | None = None) -> Sampler:
    """Load any saved sampler from `directory` (its config names the class)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, state_path = directory / CONFIG_NAME, directory / STATE_NAME
    if not config_path.is_file() or not state_path.is_file():
        raise InputError(
            f"{directory} is not a saved sampler folder (expected {CONFIG_NAME} and {STATE_NAME})."
        )
    config = json.loads(config_path.read_text())
    name = config.get("sampler")
    if name not in SAMPLERS:
        raise InputError(
            f"{config_path} names an unknown sampler {name!r}; known: {sorted(SAMPLERS)}."
        )
    sampler = SAMPLERS[name](**config.get("params", {}))
    sampler.latent_dim = config.get("latent_dim")
    shape = config.get("image_shape")
    sampler.image_shape = tuple(shape) if shape else None
    sampler.model_fingerprint = config.get("model_fingerprint")
    sampler.fit_seconds = config.get("fit_seconds")
    sampler._set_state(load_file(str(state_path)), config.get("fitted", {}))
    sampler.fitted = True
    if model is not None:
        sampler.attach(model)
    return sampler


# ---------------------------------------------------------------------------------------------
# prior


@register
class PriorSampler(Sampler):
    """z ~ N(0, I) decoded: the plain VAE sampler (the baseline)."""

    name = "prior"

    def _fit(self, model: nn.Module, images: torch.Tensor) -> None:
        pass

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.latent_dim is None:
            self._require_model()
        return _randn(_check_n(n), int(self.latent_dim), generator)


# ---------------------------------------------------------------------------------------------
# temperature


@register
class TemperatureSampler(Sampler):
    """z ~ N(0, tau^2 I); `fit` picks tau so generated and training pixel variance agree.

    The search uses common random numbers (one fixed, seeded batch of eps), so var(tau) is a
    deterministic, smooth function: a geometric scan brackets the crossing and bisection on
    log(tau) refines it. If no tau in [tau_min, tau_max] reaches the target, the scan point
    closest to it is kept (recorded as `tau_converged = False`).
    """

    name = "temperature"

    def __init__(
        self,
        tau: float | None = None,
        n_fit: int = 2000,
        tau_min: float = 0.25,
        tau_max: float = 8.0,
        scan_points: int = 16,
        tolerance: float = 1e-4,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        if tau is not None and not tau > 0:
            raise InputError(f"tau must be positive, got {tau!r}.")
        if not 0 < tau_min < tau_max:
            raise InputError(
                f"tau_min and tau_max must satisfy 0 < tau_min < tau_max, got {tau_min}, {tau_max}."
            )
        self.tau_given = None if tau is None else float(tau)
        self.n_fit = int(n_fit)
        self.tau_min, self.tau_max = float(tau_min), float(tau_max)
        self.scan_points = int(scan_points)
        self.tolerance = float(tolerance)
        self.tau: float | None = self.tau_given
        self.target_variance: float | None = None
        self.achieved_variance: float | None = None
        self.converged: bool | None = None
        self.trace: list[tuple[float, float]] = []

    def params(self) -> dict[str, Any]:
        return {
            "tau": self.tau_given,
            "n_fit": self.n_fit,
            "tau_min": self.tau_min,
            "tau_max": self.tau_max,
            "scan_points": self.scan_points,
            "tolerance": self.tolerance,
            **super().params(),
        }

    def _fit(self, model: nn.Module, images: torch.Tensor) -> None:
        self.target_variance = mean_pixel_variance(images)
        if self.tau_given is not None:
            self.tau, self.converged, self.trace = self.tau_given, None, []
            return
        eps = _randn(self.n_fit, int(self.latent_dim), _generator(self.seed))
        trace: list[tuple[float, float]] = []

        def variance_at(log_tau: float) -> float:
            value = mean_pixel_variance(
                decode_codes(model, math.exp(log_tau) * eps, self.batch_size)
            )
            trace.append((math.exp(log_tau), value))
            return value - self.target_variance

        grid = np.linspace(math.log(self.tau_min), math.log(self.tau_max), self.scan_points)
        gaps = []
        bracket = None
        for index, log_tau in enumerate(grid):
            gaps.append(variance_at(float(log_tau)))
            if index and gaps[-2] < 0 <= gaps[-1]:
                bracket = (float(grid[index - 1]), float(log_tau))
                break
        if bracket is None:
            best = int(np.argmin(np.abs(gaps)))
            self.tau, self.converged = math.exp(float(grid[best])), False
        else:
            low, high = bracket
            relative = self.tolerance * self.target_variance
            for _ in range(60):
                middle = 0.5 * (low + high)
                gap = variance_at(middle)
                if gap < 0:
                    low = middle
                else:
                    high = middle
                if abs(gap) <= relative or high - low < 1e-9:
                    break
            self.tau, self.converged = math.exp(0.5 * (low + high)), True
        self.trace = trace
        self.achieved_variance = mean_pixel_variance(
            decode_codes(model, self.tau * eps, self.batch_size)
        )

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        self._require_model()
        return float(self.tau) * _randn(_check_n(n), int(self.latent_dim), generator)

    def _fitted_scalars(self) -> dict[str, Any]:
        return {
            "tau_fitted": self.tau,
            "target_variance": self.target_variance,
            "achieved_variance": self.achieved_variance,
            "tau_converged": self.converged,
            "search_evaluations": len(self.trace),
        }

    def _state(self) -> dict[str, torch.Tensor]:
        trace = torch.tensor(self.trace, dtype=torch.float64).reshape(-1, 2)
        return {"tau": torch.tensor([float(self.tau)], dtype=torch.float64), "search_trace": trace}

    def _set_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        self.tau = float(tensors["tau"][0])
        self.trace = [tuple(row) for row in tensors["search_trace"].tolist()]
        self.target_variance = scalars.get("target_variance")
        self.achieved_variance = scalars.get("achieved_variance")
        self.converged = scalars.get("tau_converged")


# ---------------------------------------------------------------------------------------------
# match


@register
class MatchSampler(Sampler):
    """Prior samples mapped per pixel onto the training data's mean and variance, then clipped.

    x' = clip(offset + scale * (x - m_gen)), with m_gen and the per-pixel (scale, offset) fitted
    on `n_fit` seeded prior samples. The plain affine solution (offset = m_data, scale = s_data /
    s_gen) loses variance again where clipping bites, so with `clip_aware=True` (the default)
    scale and offset are refined by a per-pixel fixed-point iteration until the *clipped* samples
    have the data's mean and standard deviation. Pixels the decoder never varies (s_gen ~ 0) get
    the data mean. A post-hoc calibration of pixel statistics, not a better generative model.
    """

    name = "match"

    def __init__(
        self,
        n_fit: int = 10000,
        value_range: Sequence[float] | None = (0.0, 1.0),
        clip_aware: bool = True,
        iterations: int = 100,
        tolerance: float = 1e-4,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        if value_range is not None:
            if len(value_range) != 2 or not value_range[0] < value_range[1]:
                raise InputError(
                    f"value_range must be (low, high) with low < high, got {value_range!r}."
                )
            value_range = (float(value_range[0]), float(value_range[1]))
        if int(n_fit) < 2:
            raise InputError(f"n_fit must be at least 2, got {n_fit!r}.")
        self.n_fit = int(n_fit)
        self.value_range = value_range
        self.clip_aware = bool(clip_aware)
        self.iterations = int(iterations)
        self.tolerance = float(tolerance)
        self.data_mean: torch.Tensor | None = None
        self.data_std: torch.Tensor | None = None
        self.generated_mean: torch.Tensor | None = None
        self.generated_std: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None
        self.offset: torch.Tensor | None = None
        self.fit_residual: float | None = None

    def params(self) -> dict[str, Any]:
        value_range = list(self.value_range) if self.value_range is not None else None
        return {
            "n_fit": self.n_fit,
            "value_range": value_range,
            "clip_aware": self.clip_aware,
            "iterations": self.iterations,
            "tolerance": self.tolerance,
            **super().params(),
        }

    def _fit(self, model: nn.Module, images: torch.Tensor) -> None:
        data = images.to(torch.float64)
        self.data_mean = data.mean(0)
        self.data_std = data.var(0, correction=0).sqrt()
        generated = decode_codes(
            model, _randn(self.n_fit, int(self.latent_dim), _generator(self.seed)), self.batch_size
        ).to(torch.float64)
        self.generated_mean = generated.mean(0)
        self.generated_std = generated.var(0, correction=0).sqrt()
        varies = self.generated_std > 1e-6
        zeros = torch.zeros_like(self.data_std)
        self.scale = torch.where(varies, self.data_std / self.generated_std.clamp_min(1e-6), zeros)
        self.offset = self.data_mean.clone()
        if self.value_range is not None and self.clip_aware:
            self.scale, self.offset, self.fit_residual = self._fit_clipped(generated)

    def _fit_clipped(self, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Per-pixel (scale, offset) whose clipped samples have the data's mean and std.

        Fixed point: shift the offset by the clipped mean's error, stretch the scale by the
        ratio of standard deviations (both clipped moments grow monotonically in their
        parameter). Each pixel keeps its best iterate (saturated pixels can oscillate); pixels
        within `tolerance` drop out of the active set, so late iterations are cheap.
        """
        floor = 1e-6
        shape = self.data_mean.shape
        centred = (generated - self.generated_mean).reshape(generated.shape[0], -1)
        target_mean, target_std = self.data_mean.reshape(-1), self.data_std.reshape(-1)
        best_scale, best_offset = self.scale.reshape(-1).clone(), self.offset.reshape(-1).clone()
        best_error = torch.full_like(best_scale, math.inf)
        scale, offset = best_scale.clone(), best_offset.clone()
        active = torch.arange(best_scale.numel())
        for _ in range(self.iterations + 1):
            clipped = (offset[active] + scale[active] * centred[:, active]).clamp(*self.value_range)
            mean, std = clipped.mean(0), clipped.var(0, correction=0).sqrt()
            error = (target_mean[active] - mean).abs() + (target_std[active] - std).abs()
            better = error < best_error[active]
            improved = active[better]
            best_error[improved] = error[better]
            best_scale[improved], best_offset[improved] = scale[improved], offset[improved]
            offset[active] += target_mean[active] - mean
            ratio = torch.where(
                std > floor, target_std[active] / std.clamp_min(floor), torch.ones_like(std)
            )
            scale[active] = (scale[active] * ratio.clamp(0.5, 2.0)).clamp(max=1e4)
            active = active[best_error[active] > self.tolerance]
            if active.numel() == 0:
                break
        residual = float(best_error.max())
        return best_scale.reshape(shape), best_offset.reshape(shape), residual

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        self._require_model()
        return _randn(_check_n(n), int(self.latent_dim), generator)

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """Apply the fitted per-pixel affine map (and clipping) to decoded images."""
        out = self.offset + self.scale * (images.to(torch.float64) - self.generated_mean)
        if self.value_range is not None:
            out = out.clamp(*self.value_range)
        return out.to(torch.float32)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        model = self._require_model()
        return self.transform(decode_codes(model, self.sample_codes(n, generator), self.batch_size))

    def _fitted_scalars(self) -> dict[str, Any]:
        return {"max_moment_error": self.fit_residual}

    def _state(self) -> dict[str, torch.Tensor]:
        return {
            "data_mean": self.data_mean,
            "data_std": self.data_std,
            "generated_mean": self.generated_mean,
            "generated_std": self.generated_std,
            "scale": self.scale,
            "offset": self.offset,
        }

    def _set_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        self.data_mean = tensors["data_mean"]
        self.data_std = tensors["data_std"]
        self.generated_mean = tensors["generated_mean"]
        self.generated_std = tensors["generated_std"]
        self.scale = tensors["scale"]
        self.offset = tensors["offset"]
        self.fit_residual = scalars.get("max_moment_error")


# ---------------------------------------------------------------------------------------------
# gmm


@register
class GMMSampler(Sampler):
    """A Gaussian mixture on the training codes mu (scikit-learn EM), sampled with torch.

    The fitted weights, means and covariances are saved as safetensors (no pickled estimator);
    sampling draws a component, then mean + cholesky(cov) @ eps, from the caller's generator.
    """

    name = "gmm"

    def __init__(
        self,
        n_components: int = 10,
        covariance_type: str = "full",
        max_iter: int = 200,
        reg_covar: float = 1e-6,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        if int(n_components) < 1:
            raise InputError(f"n_components must be a positive integer, got {n_components!r}.")
        if covariance_type not in ("full", "diag"):
            raise InputError(f"covariance_type must be 'full' or 'diag', got {covariance_type!r}.")
        self.n_components = int(n_components)
        self.covariance_type = covariance_type
        self.max_iter = int(max_iter)
        self.reg_covar = float(reg_covar)
        self.weights: torch.Tensor | None = None
        self.means: torch.Tensor | None = None
        self.covariances: torch.Tensor | None = None
        self.converged: bool | None = None
        self.log_likelihood: float | None = None

    def params(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            "max_iter": self.max_iter,
            "reg_covar": self.reg_covar,
            **super().params(),
        }

    def _fit(self, model: nn.Module, images: torch.Tensor) -> None:
        from sklearn.mixture import GaussianMixture

        mu, _ = encode_dataset(model, images, self.batch_size)
        if mu.shape[0] < self.n_components:
            raise InputError(
                f"gmm needs at least n_components={self.n_components} training images, "
                f"got {mu.shape[0]}."
            )
        mixture = GaussianMixture(
            n_components=self.n_components,
            covariance_type=self.covariance_type,
            max_iter=self.max_iter,
            reg_covar=self.reg_covar,
            random_state=self.seed,
        )
        codes = mu.numpy()
        mixture.fit(codes)
        covariances = np.asarray(mixture.covariances_, dtype=np.float64)
        if self.covariance_type == "diag":
            covariances = np.stack([np.diag(row) for row in covariances])
        self.weights = torch.from_numpy(np.asarray(mixture.weights_, dtype=np.float64))
        self.means = torch.from_numpy(np.asarray(mixture.means_, dtype=np.float64))
        self.covariances = torch.from_numpy(covariances)
        self.converged = bool(mixture.converged_)
        self.log_likelihood = float(mixture.score(codes))

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        self._require_model()
        n = _check_n(n)
        components = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        cholesky = torch.linalg.cholesky(self.covariances)
        codes = self.means[components] + (cholesky[components] @ eps.unsqueeze(-1)).squeeze(-1)
        return codes.to(torch.float32)

    def _fitted_scalars(self) -> dict[str, Any]:
        return {"gmm_converged": self.converged, "gmm_mean_log_likelihood": self.log_likelihood}

    def _state(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}

    def _set_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        self.weights = tensors["weights"]
        self.means = tensors["means"]
        self.covariances = tensors["covariances"]
        self.converged = scalars.get("gmm_converged")
        self.log_likelihood = scalars.get("gmm_mean_log_likelihood")


# ---------------------------------------------------------------------------------------------
# two-stage


class LatentVAE(nn.Module):
    """The second-stage VAE: an MLP VAE on (standardised) first-stage codes.

    Gaussian likelihood with the balanced rule of Asperti & Trentin (2020), the same
    `varloss.losses.BalancedGaussian` the first-stage models use: gamma^2 is a running estimate
    of the reconstruction MSE (mse <- min(mse, momentum mse + (1 - momentum) batch_mse)), so
    reconstruction and KL stay balanced as the fit improves. The running value is a buffer
    (saved with the weights).
    """

    def __init__(
        self, dim: int, latent_dim: int, hidden: Sequence[int] = (256, 256), momentum: float = 0.99
    ) -> None:
        super().__init__()
        self.dim, self.latent_dim, self.momentum = int(dim), int(latent_dim), float(momentum)

        def mlp(sizes: list[int]) -> nn.Sequential:
            layers: list[nn.Module] = []
            for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
                layers.append(nn.Linear(size_in, size_out))
                if index < len(sizes) - 2:
                    layers.append(nn.SiLU())
            return nn.Sequential(*layers)

        hidden = [int(h) for h in hidden]
        self.encoder = mlp([self.dim, *hidden, 2 * self.latent_dim])
        self.decoder = mlp([self.latent_dim, *hidden[::-1], self.dim])
        self.likelihood = BalancedGaussian(momentum=momentum)

    def encode(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(u).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, v: torch.Tensor) -> torch.Tensor:
        return self.decoder(v)

    def loss(
        self, u: torch.Tensor, kl_weight: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample mean of the negative ELBO (KL scaled by `kl_weight`); (loss, mse, kl)."""
        mu, logvar = self.encode(u)
        v = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        u_hat = self.decode(v)
        reconstruction = self.likelihood(u, u_hat)  # in training mode also updates gamma
        mse = (u - u_hat).detach().pow(2).mean()
        kl = gaussian_kl(mu, logvar)
        return (reconstruction + kl_weight * kl).mean(), mse, kl.mean()


@register
class TwoStageSampler(Sampler):
    """A second VAE on the first stage's codes mu, with optional renormalisation of its output.

    With `renormalize=True` the generated codes are standardised per dimension (with moments
    measured on `n_renorm` seeded second-stage samples at fit time, so the map is a fixed affine
    one) and mapped to `target`: "aggregate" = the first stage's aggregate posterior (mean E[mu],
    variance Var(mu) + E[sigma^2]) or "spherical" = N(0, I).
    """

    name = "two-stage"
    TARGETS: ClassVar[tuple[str, ...]] = ("aggregate", "spherical")

    def __init__(
        self,
        renormalize: bool = True,
        target: str = "aggregate",
        latent_dim: int | None = None,
        hidden: Sequence[int] = (256, 256),
        steps: int = 6000,
        warmup: float = 0.2,
        train_batch_size: int = 256,
        lr: float = 1e-3,
        n_renorm: int = 10000,
        progress: bool = False,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> None:
        super().__init__(seed=seed, batch_size=batch_size)
        if target not in self.TARGETS:
            raise InputError(f"target must be one of {list(self.TARGETS)}, got {target!r}.")
        if int(steps) < 1:
            raise InputError(f"steps must be a positive integer, got {steps!r}.")
        self.renormalize = bool(renormalize)
        self.target = target
        self.second_latent_dim = None if latent_dim is None else int(latent_dim)
        self.hidden = [int(h) for h in hidden]
        self.steps = int(steps)
        if not 0.0 <= float(warmup) <= 1.0:
            raise InputError(f"warmup must be a fraction of steps in [0, 1], got {warmup!r}.")
        self.warmup = float(warmup)
        self.train_batch_size = int(train_batch_size)
        self.lr = float(lr)
        self.n_renorm = int(n_renorm)
        self.progress = bool(progress)
        self.network: LatentVAE | None = None
        self.code_mean: torch.Tensor | None = None  # standardisation of the second stage's input
        self.code_std: torch.Tensor | None = None
        self.aggregate: dict[str, torch.Tensor] = {}
        self.generated_mean: torch.Tensor | None = None  # moments of raw generated codes
        self.generated_std: torch.Tensor | None = None
        self.final_mse: float | None = None
        self.final_kl: float | None = None

    def params(self) -> dict[str, Any]:
        return {
            "renormalize": self.renormalize,
            "target": self.target,
            "latent_dim": self.second_latent_dim,
            "hidden": self.hidden,
            "steps": self.steps,
            "warmup": self.warmup,
            "train_batch_size": self.train_batch_size,
            "lr": self.lr,
            "n_renorm": self.n_renorm,
            "progress": self.progress,
            **super().params(),
        }

    def _fit(self, model: nn.Module, images: torch.Tensor) -> None:
        mu, logvar = encode_dataset(model, images, self.batch_size)
        self.aggregate = aggregate_posterior_stats(mu, logvar)
        self.code_mean = mu.mean(0)
        self.code_std = mu.std(0, correction=0).clamp_min(1e-8)
        inputs = ((mu - self.code_mean) / self.code_std).to(torch.float32)
        torch_state = torch.random.get_rng_state()
        threads = torch.get_num_threads()
        torch.manual_seed(self.seed)  # weight init and reparameterisation noise are seeded
        # Small MLP steps are fastest on one thread; with several threads on a busy machine
        # they were measured 40x slower (10 ms vs 490 ms per step on 2 shared cores).
        torch.set_num_threads(1)
        try:
            self.network = LatentVAE(
                mu.shape[1], self.second_latent_dim or mu.shape[1], self.hidden
            )
            self._train(inputs)
        finally:
            torch.set_num_threads(threads)
            torch.random.set_rng_state(torch_state)
        raw = self._raw_codes(self.n_renorm, _generator(self.seed + 1)).to(torch.float64)
        self.generated_mean = raw.mean(0)
        self.generated_std = raw.std(0, correction=0).clamp_min(1e-8)

    def _train(self, inputs: torch.Tensor) -> None:
        from varloss._progress import progress_bar

        network = self.network
        network.train()
        optimizer = torch.optim.Adam(network.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.steps)
        order_generator = _generator(self.seed + 2)
        order = torch.randperm(inputs.shape[0], generator=order_generator)
        position = 0
        warmup = int(self.warmup * self.steps)
        bar = progress_bar(
            range(self.steps), desc="two-stage", disable=not self.progress, leave=False
        )
        for step in bar:
            if position + self.train_batch_size > inputs.shape[0]:  # a new epoch: reshuffle
                order = torch.randperm(inputs.shape[0], generator=order_generator)
                position = 0
            batch = inputs[order[position : position + self.train_batch_size]]
            position += self.train_batch_size
            # KL warm-up: start as an autoencoder so the second stage does not collapse onto
            # its prior (a near-Gaussian input makes the collapsed solution a local optimum).
            kl_weight = min(1.0, (step + 1) / warmup) if warmup else 1.0
            loss, mse, kl = network.loss(batch, kl_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if step % 100 == 0:
                bar.set_postfix(mse=f"{mse.item():.4f}", kl=f"{kl.item():.2f}")
        network.eval()
        with torch.no_grad():
            _, mse, kl = network.loss(inputs)
        self.final_mse, self.final_kl = mse.item(), kl.item()

    @torch.no_grad()
    def _raw_codes(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """Second-stage samples mapped back to first-stage code units (no renormalisation)."""
        v = _randn(n, self.network.latent_dim, generator)
        u = self.network.decode(v).to(torch.float64)
        return u * self.code_std + self.code_mean

    def target_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension (mean, variance) the renormalised codes are mapped to."""
        if self.target == "spherical":
            return torch.zeros_like(self.aggregate["mean"]), torch.ones_like(self.aggregate["var"])
        return self.aggregate["mean"], self.aggregate["var"]

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        self._require_model()
        codes = self._raw_codes(_check_n(n), generator)
        if self.renormalize:
            mean, var = self.target_moments()
            codes = renormalize_latents(codes, self.generated_mean, self.generated_std, mean, var)
        return codes.to(torch.float32)

    def variant(self, renormalize: bool, target: str = "aggregate") -> TwoStageSampler:
        """The same fitted second stage with another renormalisation setting (no refit)."""
        if target not in self.TARGETS:
            raise InputError(f"target must be one of {list(self.TARGETS)}, got {target!r}.")
        other = copy.copy(self)
        other.renormalize, other.target = bool(renormalize), target
        return other

    def _fitted_scalars(self) -> dict[str, Any]:
        return {"second_stage_mse": self.final_mse, "second_stage_kl": self.final_kl}

    def _state(self) -> dict[str, torch.Tensor]:
        state = {f"network.{key}": value for key, value in self.network.state_dict().items()}
        state.update(
            {
                "code_mean": self.code_mean,
                "code_std": self.code_std,
                "generated_mean": self.generated_mean,
                "generated_std": self.generated_std,
            }
        )
        state.update({f"aggregate.{key}": value for key, value in self.aggregate.items()})
        return state

    def _set_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        self.code_mean, self.code_std = tensors["code_mean"], tensors["code_std"]
        self.generated_mean, self.generated_std = (
            tensors["generated_mean"],
            tensors["generated_std"],
        )
        self.aggregate = {
            key.split(".", 1)[1]: value
            for key, value in tensors.items()
            if key.startswith("aggregate.")
        }
        dim = self.code_mean.shape[0]
        self.network = LatentVAE(dim, self.second_latent_dim or dim, self.hidden)
        self.network.load_state_dict(
            {
                key.split(".", 1)[1]: value
                for key, value in tensors.items()
                if key.startswith("network.")
            }
        )
        self.network.eval()
        self.final_mse = scalars.get("second_stage_mse")
        self.final_kl = scalars.get("second_stage_kl")


# ---------------------------------------------------------------------------------------------
# methods offered by `varloss correct`

# name -> (sampler registry name, constructor overrides). Two-stage variants share one fit.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "prior": ("prior", {}),
    "two-stage": ("two-stage", {"renormalize": True, "target": "aggregate"}),
    "two-stage-raw": ("two-stage", {"renormalize": False}),
    "two-stage-spherical": ("two-stage", {"renormalize": True, "target": "spherical"}),
    "temperature": ("temperature", {}),
    "match": ("match", {}),
    "gmm": ("gmm", {}),
}
ALL_METHODS: tuple[str, ...] = tuple(METHODS)


def create_sampler(method: str, **params: Any) -> Sampler:
    """A fresh sampler for a method name of `METHODS` (e.g. "two-stage-raw"), with overrides."""
    if method not in METHODS:
        raise InputError(f"method must be one of {sorted(METHODS)} (or 'all'), got {method!r}.")
    registry_name, defaults = METHODS[method]
    return SAMPLERS[registry_name](**{**defaults, **params})


def parse_methods(method: str) -> list[str]:
    """'all', one method name, or a comma-separated list -> validated method names (prior first)."""
    names = [part.strip() for part in str(method).split(",") if part.strip()]
    if not names:
        raise InputError(f"method must be one of {sorted(METHODS)} or 'all', got {method!r}.")
    if names == ["all"]:
        return list(ALL_METHODS)
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise InputError(
            f"method must be one of {sorted(METHODS)} or 'all', "
            f"got {', '.join(map(repr, unknown))}."
        )
    ordered = ["prior"] + [name for name in dict.fromkeys(names) if name != "prior"]
    return ordered


def gap_closed(var_real: float, var_baseline: float, var_corrected: float) -> float | None:
    """Fraction of the baseline variance gap closed: 1 - |gap after| / |gap before|.

    1 means the generated variance equals the real one; overshooting counts as remaining gap;
    negative values mean the remedy moved further away. None when the baseline has no gap.
    """
    before = var_real - var_baseline
    if before == 0 or not math.isfinite(before):
        return None
    return float(1.0 - abs(var_real - var_corrected) / abs(before))


# ---------------------------------------------------------------------------------------------
# varloss correct


def _read_run(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise InputError(f"run folder {run_dir} does not exist.")
    config_path = run_dir / "config.json"
    if not config_path.is_file() or not (run_dir / "model.safetensors").is_file():
        raise InputError(
            f"run folder {run_dir} has no saved model (expected config.json and model.safetensors "
            "written by `varloss train`)."
        )
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{config_path} is not valid JSON ({error.msg}).") from None


def _fid_or_reason(
    real: Any, generated: torch.Tensor, dataset: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    """FID with the domain feature extractor when `varloss.quality` provides it, else a reason.

    `real` is the test ImageSet, so `varloss.quality` can cache its feature statistics.
    """
    try:
        from varloss.quality import fid
    except Exception as error:  # the quality package may not exist yet
        return None, f"varloss.quality.fid is not importable ({type(error).__name__}: {error})"
    try:
        result = fid(real, generated, features="domain", dataset=dataset)
    except Exception as error:
        return None, f"FID failed ({type(error).__name__}: {error})"
    if not isinstance(result, dict):
        result = {"fid": float(result)}
    return json.loads(json.dumps(result, default=_json_default)), None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fid_value(result: dict[str, Any] | None) -> float | None:
    if not result:
        return None
    for key in ("fid", "value", "frechet_distance"):
        if isinstance(result.get(key), int | float):
            return float(result[key])
    return None


def _fit_or_load(
    method: str,
    model: nn.Module,
    train_images: torch.Tensor,
    directory: Path,
    params: dict[str, Any],
    fingerprint: str,
    fitted: dict[str, Sampler],
) -> tuple[Sampler, str]:
    """Resume from `directory` when it holds this method fitted on this model with these params."""
    wanted = create_sampler(method, **params)
    config_path = directory / CONFIG_NAME
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
            if config.get("model_fingerprint") == fingerprint and config.get(
                "params"
            ) == json.loads(json.dumps(wanted.params())):
                return load_sampler(directory, model), "loaded"
        except (InputError, json.JSONDecodeError, KeyError, RuntimeError):
            pass  # a stale or unreadable folder is simply refitted
    registry_name = METHODS[method][0]
    shared = fitted.get("two-stage")
    if registry_name == "two-stage" and shared is not None:
        # Reuse the trained second stage when only the renormalisation setting differs.
        variant = shared.variant(wanted.renormalize, wanted.target)
        if variant.params() == wanted.params():
            return variant, "variant"
    sampler = wanted.fit(model, train_images)
    if registry_name == "two-stage":
        fitted["two-stage"] = sampler
    return sampler, "fitted"


def correct(
    run_dir: str | Path,
    method: str = "all",
    out: str | Path | None = None,
    *,
    n_samples: int | None = None,
    seed: int = 0,
    train_limit: int | None = None,
    data_path: str | None = None,
    sampler_params: dict[str, dict[str, Any]] | None = None,
    compute_fid: bool = True,
    grid_size: int = 16,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Fit remedies on a `varloss train` run and measure what each gains; returns report.json.

    `command` (the CLI passes its command line) is recorded in the settings.

    Writes `out/report.json`, `out/samples.png` and `out/samplers/<method>/`. Generated samples
    (as many as test images unless `n_samples`) are compared with the test split; every method
    draws from the same seeded generator, so latent-space methods show matched samples.
    """
    run_dir = Path(run_dir)
    methods = parse_methods(method)
    run_config = _read_run(run_dir)
    out = Path(out) if out is not None else run_dir / "correct"
    if n_samples is not None and int(n_samples) < 2:
        raise InputError(f"n_samples must be at least 2, got {n_samples!r}.")
    train_config = run_config.get("train") or {}
    dataset = train_config.get("dataset")
    if not dataset:
        raise InputError(
            f"{run_dir / 'config.json'} does not name the training dataset (train.dataset)."
        )
    limit = train_limit if train_limit is not None else train_config.get("limit")
    sampler_params = sampler_params or {}
    unknown = sorted(set(sampler_params) - set(METHODS))
    if unknown:
        raise InputError(
            f"sampler_params names unknown methods {unknown}; known: {sorted(METHODS)}."
        )

    from varloss import data as data_module
    from varloss._progress import progress_bar
    from varloss.models import load_model

    model = load_model(run_dir)
    model.eval()
    fingerprint = model_fingerprint(model)
    train_set = data_module.load(dataset, "train", data_path=data_path, limit=limit)
    test_set = data_module.load(dataset, "test", data_path=data_path)
    train_images, test_images = _as_images(train_set), _as_images(test_set)
    n = int(n_samples) if n_samples is not None else int(test_images.shape[0])

    results: dict[str, dict[str, Any]] = {}
    grids: dict[str, np.ndarray] = {}
    fitted: dict[str, Sampler] = {}
    bar = progress_bar(methods, desc="correct", disable=not progress)
    for name in bar:
        bar.set_postfix(method=name)
        params = {"seed": seed, **sampler_params.get(name, {})}
        if METHODS[name][0] == "two-stage":
            params.setdefault("progress", False)
        directory = out / "samplers" / name
        sampler, how = _fit_or_load(
            name, model, train_images, directory, params, fingerprint, fitted
        )
        if how != "loaded":
            sampler.save(directory)
        if METHODS[name][0] == "two-stage":
            fitted.setdefault("two-stage", sampler)
        started = time.perf_counter()
        samples = sampler.sample(n, _generator(seed))
        sample_seconds = time.perf_counter() - started
        report = _measure_generated(
            test_images,
            samples,
            {"method": name, "dataset": dataset, "split": "test", "n_generated": n},
        )
        fid_result, fid_reason = (None, "disabled (--no-fid)")
        if compute_fid:
            fid_result, fid_reason = _fid_or_reason(test_set, samples, dataset)
        results[name] = {
            **report,
            "fid": fid_result,
            "fid_reason": fid_reason,
            "sampler": sampler.settings(),
            "sampler_dir": str(directory),
            "sampler_source": how,
            "fit_seconds": sampler.fit_seconds,
            "sample_seconds": sample_seconds,
        }
        grids[name] = samples[:grid_size].numpy()

    baseline = results["prior"]
    for entry in results.values():
        entry["gap_closed"] = gap_closed(
            entry["var_real"], baseline["var_generated"], entry["var_generated"]
        )
        before, after = _fid_value(baseline["fid"]), _fid_value(entry["fid"])
        entry["fid_before"], entry["fid_after"] = before, after
        entry["fid_gain"] = None if before is None or after is None else before - after

    settings = {
        **({"command": command} if command else {}),
        "run_dir": str(run_dir),
        "methods": methods,
        "dataset": dataset,
        "train_limit": limit,
        "n_train": int(train_images.shape[0]),
        "n_test": int(test_images.shape[0]),
        "n_generated": n,
        "seed": seed,
        "model_fingerprint": fingerprint,
        "model_family": run_config.get("family"),
        "latent_dim": int(model.latent_dim),
        "fid_features": "domain" if baseline["fid"] is not None else None,
        "gap_closed_definition": (
            "1 - |var_real - var_generated| / |var_real - var_generated(prior)|"
        ),
        "varloss_version": _version(),
    }
    if len(methods) <= 2:
        chosen = methods[-1]
        report = {"method": chosen, **_strip(results[chosen]), "baseline": _strip(baseline)}
    else:
        report = {
            "method": "all" if methods == list(ALL_METHODS) else ",".join(methods),
            "baseline": _strip(baseline),
            "methods": {name: _strip(entry) for name, entry in results.items()},
            "table": method_table(results),
        }
    report["settings"] = settings

    out.mkdir(parents=True, exist_ok=True)
    rows = {f"real (test)  var={baseline['var_real']:.4f}": test_images[:grid_size].numpy()}
    rows.update({_row_label(name, results[name]): grids[name] for name in methods})
    _save_grid(rows, out / "samples.png")
    report = json.loads(json.dumps(report, default=_json_default))
    atomic_write_json(out / "report.json", report)
    return report


def _measure_generated(
    real: torch.Tensor, generated: torch.Tensor, settings: dict[str, Any]
) -> dict[str, Any]:
    """`varloss.measure` keys of generated vs real images (JSON-safe, no maps)."""
    from varloss.measure import measure

    result = measure(real, generated=generated, settings=settings).to_dict()
    return {**_strip(result), "measured_by": "varloss.measure"}


def _save_grid(rows: dict[str, np.ndarray], path: Path) -> None:
    """Labelled rows of images (one per method, plus the real test images) as one PNG."""
    from varloss.figures import save_image_grid

    save_image_grid(rows, path)


def _strip(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "maps"}


def _row_label(name: str, entry: dict[str, Any]) -> str:
    label = "prior (baseline)" if name == "prior" else name
    return f"{label}  var={entry['var_generated']:.4f}"


def method_table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method: the numbers `varloss correct --method all` prints and saves."""
    return [
        {
            "method": name,
            "var_real": entry["var_real"],
            "var_generated": entry["var_generated"],
            "variance_loss_generated": entry.get("variance_loss_generated"),
            "gap_closed": entry.get("gap_closed"),
            "fid": entry.get("fid_after"),
            "fid_gain": entry.get("fid_gain"),
        }
        for name, entry in results.items()
    ]


def _version() -> str:
    from varloss import __version__

    return __version__
