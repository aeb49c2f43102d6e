"""`ModelAdapter`: the small interface through which varloss measures and corrects any VAE.

What `measure_model`, the samplers and `correct` use of a model, and nothing more:

- `encode(x)` -> (mu, logvar), each N x *latent_shape, for images x in [0, 1];
- `decode(z)` -> images N x C x H x W in [0, 1] (codes N x latent_dim or N x *latent_shape);
- `reconstruct(x, noise=None)` -> decode(mu), or decode(mu + sigma * noise) for a posterior draw;
  both through the posterior's flow where the model has one (`posterior_codes`);
- `sample(n, generator, noise=None)` -> n images decoded from prior codes (`noise`: the N(0, I)
  codes to decode, where the prior is N(0, I));
- `value_range` (the model's own pixel range), `device`, `latent_dim`, `dataset` and
  `dataset_limit` (the data the model folder names, or None) and `generates_images` (False when
  prior samples are not meant to be images, with `generation_note` saying why), and
  `posterior_note` (None when encode's Gaussian describes the codes `decode` takes; else why not,
  e.g. a posterior with a normalizing flow) and `prior_note` (None when the prior is N(0, I);
  else what it is, which `sample` draws): samplers that assume otherwise refuse such a model.

Images cross the boundary in varloss's one convention, [0, 1]: an adapter maps them to the
model's `value_range` on the way in and back on the way out, so a [-1, 1] model is measured
against [0, 1] data without declaring ranges. Work runs on the model's device, in chunks of at
most `batch_size` images (None: all at once). The adapter delegates `parameters()`,
`state_dict()`, `eval()` and `train()` to the wrapped module, so a sampler's model fingerprint
of an adapter is the fingerprint of the module itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from varloss.errors import InputError

__all__ = ["ModelAdapter"]


class ModelAdapter:
    """A loaded model seen through varloss's interface; subclasses implement `_encode`/`_decode`.

    `_encode(x)` gets images in the model's range on its device and dtype and returns the
    posterior (mu, logvar) as the model defines its latents; `_decode(z)` returns images in the
    model's range. Subclasses with another prior override `_prior_codes` (and set `prior_note`:
    `sample` then takes no `noise`); those whose posterior pushes its Gaussian draw z0 through a
    flow before decoding override `_posterior_flow` (and set `posterior_note`).
    """

    kind: ClassVar[str] = ""  # the prefix the registry knows it by ("pythae", "diffusers", ...)

    def __init__(
        self,
        module: nn.Module,
        *,
        source: str,
        image_shape: tuple[int, ...] | None,
        latent_shape: tuple[int, ...],
        value_range: tuple[float, float] = (0.0, 1.0),
        clamp: bool = False,
        dataset: str | None = None,
        dataset_limit: int | None = None,
        generation_note: str | None = None,
        posterior_note: str | None = None,
        prior_note: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        low, high = (float(v) for v in value_range)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise InputError(f"value_range must be (low, high) with low < high, got {value_range}.")
        if batch_size is not None and int(batch_size) < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.module = module
        self.source = source
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape else None
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.value_range = (low, high)
        self.clamp = clamp  # outputs clipped to value_range, as the model's own tools do
        self.dataset = dataset  # the data set the model folder names (None: it names none)
        self.dataset_limit = dataset_limit  # the training images it says were used (None: all)
        self.generation_note = generation_note
        self.posterior_note = posterior_note  # None: decode takes draws of encode's Gaussian
        self.prior_note = prior_note  # None: the prior is N(0, I), what `_prior_codes` draws
        self.batch_size = None if batch_size is None else int(batch_size)
        self.module.eval()

    # -- what a kind implements ------------------------------------------------------------------
    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _prior_codes(
        self, n: int, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        """n prior codes N x *latent_shape: N(0, I) unless a kind overrides it."""
        return torch.randn(n, *self.latent_shape, generator=generator, device=device)

    def _posterior_flow(self, z0: torch.Tensor) -> torch.Tensor:
        """The codes `decode` takes for posterior draws z0 (model dtype, on its device): z0
        itself unless the posterior has a flow (pythae's VAE_IAF and VAE_LinNF)."""
        return z0

    # -- the nn.Module surface the samplers and measure_model read -------------------------------
    def parameters(self) -> Iterator[nn.Parameter]:
        return self.module.parameters()

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.module.state_dict(*args, **kwargs)

    @property
    def training(self) -> bool:
        return self.module.training

    def eval(self) -> ModelAdapter:
        self.module.eval()
        return self

    def train(self, mode: bool = True) -> ModelAdapter:
        self.module.train(mode)
        return self

    def to(self, device: str | torch.device) -> ModelAdapter:
        self.module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        for parameter in self.module.parameters():
            return parameter.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for parameter in self.module.parameters():
            if parameter.is_floating_point():
                return parameter.dtype
        return torch.float32

    @property
    def latent_dim(self) -> int:
        return math.prod(self.latent_shape)

    @property
    def generates_images(self) -> bool:
        return self.generation_note is None

    # -- the interface ---------------------------------------------------------------------------
    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.value_range
        x = x.to(device=self.device, dtype=self.dtype)
        return x if (low, high) == (0.0, 1.0) else x * (high - low) + low

    def _from_model(self, y: torch.Tensor) -> torch.Tensor:
        low, high = self.value_range
        y = y.to(torch.float32)
        if self.clamp:
            y = y.clamp(low, high)
        return y if (low, high) == (0.0, 1.0) else (y - low) / (high - low)

    def _chunks(self, n: int) -> Iterator[slice]:
        step = self.batch_size or max(n, 1)
        for start in range(0, n, step):
            yield slice(start, min(start + step, n))

    def _check_images(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise InputError(f"images must be N x C x H x W, got shape {tuple(x.shape)}.")
        if self.image_shape is not None and x.shape[1] != self.image_shape[0]:
            raise InputError(
                f"images have {x.shape[1]} channels but the {self.kind} model {self.source} "
                f"takes {self.image_shape[0]}."
            )

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mu, logvar) of images in [0, 1], each N x *latent_shape, float32."""
        self._check_images(x)
        mus, logvars = [], []
        for part in self._chunks(x.shape[0]):
            mu, logvar = self._encode(self._to_model(x[part]))
            mus.append(mu.to(torch.float32))
            logvars.append(logvar.to(torch.float32))
        return torch.cat(mus), torch.cat(logvars)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] for codes N x latent_dim (or N x *latent_shape), float32."""
        z = z.reshape(z.shape[0], *self.latent_shape)
        out = [
            self._from_model(self._decode(z[part].to(device=self.device, dtype=self.dtype)))
            for part in self._chunks(z.shape[0])
        ]
        return torch.cat(out)

    @torch.no_grad()
    def posterior_codes(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The codes `decode` takes for images x in [0, 1]: the posterior's z0 = mu (or, with
        `noise`, N(0, I) draws with latent_dim values per image, z0 = mu + sigma * noise) pushed
        through the posterior's flow where the model has one; float32, N x *latent_shape.

        For a flow posterior, the `mean` protocol's code is flow(mu), what the model's own
        forward pass computes with eps = 0 (not the mean of the codes after the flow)."""
        mu, logvar = self.encode(x)
        if noise is not None:
            if noise.numel() != mu.numel():
                raise InputError(
                    f"reconstruction noise must hold {self.latent_dim} values per image "
                    f"({mu.shape[0]} images), got shape {tuple(noise.shape)}."
                )
            mu = mu + noise.to(mu).reshape(mu.shape) * torch.exp(0.5 * logvar)
        codes = [
            self._posterior_flow(mu[part].to(device=self.device, dtype=self.dtype))
            for part in self._chunks(mu.shape[0])
        ]
        return torch.cat(codes).to(torch.float32).reshape(mu.shape)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """decode(mu); with `noise` (N(0, I) draws, latent_dim per image) a posterior sample;
        through the posterior's flow where the model has one (see `posterior_codes`)."""
        return self.decode(self.posterior_codes(x, noise))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """n images decoded from prior codes (scaled by `temperature`); seed `generator`. With
        `noise` (N(0, I) draws, latent_dim per sample) the codes are those draws, for a model
        whose prior is N(0, I) (`prior_note` None; another prior draws its own codes)."""
        if isinstance(n, bool) or int(n) < 0:
            raise InputError(f"n must be a non-negative integer, got {n!r}.")
        if noise is not None and self.prior_note is not None:
            raise InputError(
                f"the {self.kind} model {self.source} does not decode given N(0, I) codes: "
                f"{self.prior_note}; sample it with a generator instead."
            )
        if noise is None:
            draw_device = generator.device if generator is not None else self.device
            codes = self._prior_codes(int(n), generator, draw_device)
        elif noise.numel() != int(n) * self.latent_dim:
            raise InputError(
                f"prior codes must hold {self.latent_dim} values per sample ({int(n)} samples), "
                f"got shape {tuple(noise.shape)}."
            )
        else:
            codes = noise.reshape(int(n), *self.latent_shape)
        return self.decode(codes * float(temperature))

    def describe(self) -> dict[str, Any]:
        """What a report records of the model: its kind, source, shapes, range and batching."""
        return {
            "kind": self.kind,
            "source": self.source,
            "class": type(self.module).__name__,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "latent_shape": list(self.latent_shape),
            "value_range": list(self.value_range),
            "dataset": self.dataset,
            "generates_images": self.generates_images,
            "posterior_note": self.posterior_note,
            "prior_note": self.prior_note,
            "device": str(self.device),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r})"


AdapterLoader = Callable[..., ModelAdapter]
"""`loader(path, **options) -> ModelAdapter`: what `register_adapter` takes for a prefix."""
