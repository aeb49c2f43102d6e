"""The sampler base class, the `SAMPLERS` registry and saving/loading of fitted samplers.

Every sampler follows the scikit-learn pattern: parameters in the constructor, `fit(model,
train_images)` learns whatever it needs from the trained VAE and its training data, then
`sample(n, generator)` returns images (N x C x H x W in the model's data range) and, where the
method works in latent space, `sample_codes(n, generator)` returns the codes it decodes.
`save(dir)` writes the fitted state (`state.safetensors` + `config.json`, never pickles) and
`load_sampler(dir, model)` restores it, so a correction fitted once can be reused and audited.

What differs between samplers is their concern, behind this one interface (so `varloss correct`
walks every method alike, and a new remedy is one file and a registry entry): `reuse` builds a
sampler from another one already fitted (the two-stage variants share one second stage),
`diagnostics` adds what only that sampler can say (the second stage's latent variance loss), and
`acts_on_images` with `transform(images, strength)` marks the remedies that map decoded images and
therefore also apply to reconstructions (their price in MSE).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from varloss._registry import Registry
from varloss.errors import InputError
from varloss.runs import CONFIG_FILE, MANIFEST_FILE, SAMPLER_STATE_FILE, RunFolder
from varloss.samplers.latents import (
    SharedFit,
    check_sample_count,
    decode_codes,
    model_fingerprint,
)

FORMAT_VERSION = 1
CONFIG_NAME = CONFIG_FILE  # the parameters and fitted scalars, JSON
STATE_NAME = SAMPLER_STATE_FILE  # the fitted tensors, safetensors

SAMPLERS: Registry[type[Sampler]] = Registry("sampler")
"""Sampler classes by name; `register` adds to it, `load_sampler` reads the name back."""


def register(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: add a `Sampler` subclass to `SAMPLERS` under its `name`.

    Refuses a class that is not a Sampler, has no name, or takes a name another class holds
    (the registries' one duplicate policy; the same class again is a no-op).
    """
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise TypeError(f"only Sampler subclasses can be registered, got {cls!r}.")
    name = cls.name
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} needs a non-empty string `name` to be registered.")
    return SAMPLERS.register(name, cls)


def check_model_fit(model: Any, samplers: dict[str, type[Sampler]]) -> None:
    """Refuse samplers (method name -> class) whose assumption `model` breaks: those that fit
    the codes `encode` gives (`fits_posterior`) on a model whose decoder takes other codes (an
    adapter's `posterior_note`: pythae's flow posteriors), and those that draw N(0, I) prior
    codes (`draws_prior`) on a model with another prior (an adapter's `prior_note`: VAMP)."""
    source = getattr(model, "source", "this model")
    posterior_note = getattr(model, "posterior_note", None)
    fitting = [name for name, sampler in samplers.items() if sampler.fits_posterior]
    if posterior_note and fitting:
        raise InputError(
            f"{', '.join(fitting)} cannot be fitted on {source}: they fit the codes its encoder "
            f"gives, but {posterior_note}; choose other methods, e.g. temperature,match."
        )
    prior_note = getattr(model, "prior_note", None)
    drawing = [name for name, sampler in samplers.items() if sampler.draws_prior]
    if prior_note and drawing:
        raise InputError(
            f"{', '.join(drawing)} cannot be fitted on {source}: they draw N(0, I) prior codes, "
            f"but {prior_note}."
        )


class Sampler(ABC):
    """A fitted way of drawing images from a trained VAE.

    Subclasses set `name`, take their parameters as keyword arguments of the constructor (stored
    by `params()` and saved), and implement `_fit`, `sample_codes` or `sample`, and the
    `_state`/`_set_state` pair that carries the fitted tensors and scalars through save/load.
    """

    name: ClassVar[str] = ""
    # What a sampler assumes of the model (`check_model_fit` refuses a model that breaks it):
    # fitted on the codes `encode` gives (mu, logvar), or drawing N(0, I) prior codes.
    fits_posterior: ClassVar[bool] = False
    draws_prior: ClassVar[bool] = False
    # A remedy that maps decoded images (`transform`), so it applies to reconstructions too.
    acts_on_images: ClassVar[bool] = False

    def __init__(self, seed: int = 0, batch_size: int = 1024) -> None:
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.model: nn.Module | None = None
        self.latent_dim: int | None = None
        self.image_shape: tuple[int, ...] | None = None
        self.model_fingerprint: str | None = None
        self.fitted = False
        self.fit_seconds: float | None = None  # the wall time of `fit` in this process
        # of that fit's work done in a worker process meanwhile (`start`), its own wall time
        self.background_seconds: float | None = None
        # while `fit` runs: the work shared with other samplers fitted alike (`SharedFit`)
        self.shared: SharedFit | None = None
        # told (epoch, epochs) after each epoch by samplers that train for epochs: a caller's own
        # progress display (not a parameter: it changes nothing fitted)
        self.on_epoch: Callable[[int, int], Any] | None = None

    # -- parameters ------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-safe); the saved config re-creates the sampler from them."""
        return {"seed": self.seed, "batch_size": self.batch_size}

    def settings(self) -> dict[str, Any]:
        """Everything that determines this sampler's output: parameters plus fitted scalars."""
        return {"method": self.name, **self.params(), **self._fitted_scalars()}

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, model: nn.Module, train_images: Any, shared: SharedFit | None = None) -> Sampler:
        """Fit on a trained VAE and its training images (ImageSet, tensor or array).

        `shared`: the work samplers fitted on this model and these images do alike (their codes,
        decoded prior samples), done once for all of them (`SharedFit`); by default its own.
        """
        check_model_fit(model, {self.name: type(self)})
        if shared is not None and not shared.serves(model, train_images):
            raise ValueError("shared holds the work of another model or other training images.")
        self.shared = shared if shared is not None else SharedFit(model, train_images)
        images = self.shared.images
        self.attach(model, check=False)
        self.image_shape = tuple(int(s) for s in images.shape[1:])
        model.eval()
        started = time.perf_counter()
        try:
            self._fit(model, images)
        finally:
            self.shared = None  # what it holds is not the fitted state: let it go
        self.fit_seconds = time.perf_counter() - started
        self.model_fingerprint = model_fingerprint(model)
        self.fitted = True
        return self

    @abstractmethod
    def _fit(self, model: nn.Module, images: torch.Tensor) -> None: ...

    # what a worker process imports before a `start`ed call arrives (`varloss._background`)
    background_modules: ClassVar[tuple[str, ...]] = ()

    def runs_in_background(self) -> bool:
        """Whether fitting has a slow part that `start` would run in a worker process."""
        return False

    def start(self, shared: SharedFit) -> bool:
        """Begin the slow part of fitting in `shared`'s worker process, if this sampler has one
        (`runs_in_background`) and the worker is free; `fit(..., shared)` then collects it. True
        when it started (or was already running for an identical sampler)."""
        del shared
        return False

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
        codes = self.sample_codes(check_sample_count(n), generator)
        return decode_codes(model, codes, self.batch_size)

    def transform(self, images: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """Decoded images mapped by the fitted remedy ((1 - strength) x + strength T(x)); only
        for samplers that `acts_on_images`."""
        raise NotImplementedError(
            f"the {self.name} sampler acts on latent codes, not on decoded images"
        )

    # -- what differs between samplers ------------------------------------------------------
    def reuse(self, fitted: Sampler) -> Sampler | None:
        """This (unfitted) sampler built from `fitted`, another sampler fitted on the same model
        and data, without fitting again; None when `fitted` cannot stand in (the default)."""
        del fitted
        return None

    def diagnostics(
        self, model: nn.Module, test_images: torch.Tensor, n: int, seed: int
    ) -> dict[str, Any]:
        """Extra entries of this sampler's row in `varloss correct`'s report (default none),
        measured on the test images with `n` draws from the streams of `seed`."""
        del model, test_images, n, seed
        return {}

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

    def config(self) -> dict[str, Any]:
        """What `save` writes to config.json: the class, parameters and fitted scalars."""
        return {
            "sampler": self.name,
            "format_version": FORMAT_VERSION,
            "params": self.params(),
            "fitted": self._fitted_scalars(),
            "latent_dim": self.latent_dim,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "model_fingerprint": self.model_fingerprint,
            "fit_seconds": self.fit_seconds,
            "background_seconds": self.background_seconds,
        }

    def save(self, directory: str | Path) -> Path:
        """Write `state.safetensors`, `config.json` and (last) their manifest into `directory`.

        Each file is written atomically; `load_sampler` checks both against the manifest.
        """
        if not self.fitted:
            raise InputError(f"the {self.name} sampler is not fitted; nothing to save.")
        folder = RunFolder(directory).create()
        try:
            folder.forget(STATE_NAME, CONFIG_NAME)  # a crash mid-save leaves no stale digests
        except InputError:  # a damaged manifest: this save replaces everything it listed
            folder.file(MANIFEST_FILE).unlink()
        tensors = {
            key: value.detach().to("cpu").contiguous() for key, value in self._state().items()
        }
        with folder.atomic_path(STATE_NAME) as tmp:
            save_file(tensors, str(tmp), metadata={"sampler": self.name})
        folder.write_json(CONFIG_NAME, self.config())
        folder.seal([STATE_NAME, CONFIG_NAME])
        return folder.path

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


_REFIT = "delete the folder and fit the sampler again"


def read_sampler_config(directory: str | Path) -> dict[str, Any]:
    """The config.json of a saved sampler folder, checked against its manifest (when it has one);
    InputError naming the folder or the damaged file otherwise."""
    folder = RunFolder(directory)
    if not folder.exists(CONFIG_NAME) or not folder.exists(STATE_NAME):
        raise InputError(
            f"{folder.path} is not a saved sampler folder (expected {CONFIG_NAME} and "
            f"{STATE_NAME})."
        )
    folder.verify(CONFIG_NAME, advice=_REFIT)
    config = folder.read_json(CONFIG_NAME)
    name = config.get("sampler") if isinstance(config, dict) else None
    if name not in SAMPLERS:
        raise InputError(
            f"{folder.file(CONFIG_NAME)} names an unknown sampler {name!r}; known: "
            f"{sorted(SAMPLERS)}."
        )
    return config


def load_sampler(directory: str | Path, model: nn.Module | None = None) -> Sampler:
    """Load any saved sampler from `directory` (its config names the class)."""
    config = read_sampler_config(directory)
    folder = RunFolder(directory)
    folder.verify(STATE_NAME, advice=_REFIT)
    try:
        tensors = load_file(str(folder.file(STATE_NAME)))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise InputError(f"{folder.file(STATE_NAME)} cannot be read ({error}); {_REFIT}.") from None
    sampler = SAMPLERS[config["sampler"]](**config.get("params", {}))
    sampler.latent_dim = config.get("latent_dim")
    shape = config.get("image_shape")
    sampler.image_shape = tuple(shape) if shape else None
    sampler.model_fingerprint = config.get("model_fingerprint")
    sampler.fit_seconds = config.get("fit_seconds")
    sampler.background_seconds = config.get("background_seconds")
    sampler._set_state(tensors, config.get("fitted", {}))
    sampler.fitted = True
    if model is not None:
        sampler.attach(model)
    return sampler
