"""Where each method's fitted sampler comes from in one `varloss correct` call.

In this order: the output folder (a sampler saved there by an earlier call on the same model with
the same parameters is loaded; a damaged or stale one is fitted again), another method's fit of
this call (the two-stage methods share one second stage: `Sampler.reuse`), or a fit. A fit with a
slow part that runs in a worker process (`Sampler.start`: the second stage, on one core) is
started before the others are fitted, in a worker started before the data loads
(`varloss._background`), and collected when its method's turn comes: `correct` puts those
methods last. The numbers are the same either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from varloss._background import Worker, available_cores, take_worker
from varloss._io import json_safe
from varloss.errors import InputError
from varloss.runs import SAMPLERS_DIR, RunFolder
from varloss.samplers import (
    BASELINE,
    Sampler,
    SharedFit,
    create_sampler,
    load_sampler,
    read_sampler_config,
)

__all__ = ["RemedyFits"]


class RemedyFits:
    """The samplers of `methods` for one model (`fingerprint`) and one output `folder`, created
    with the `seed` and the caller's `sampler_params` (method -> constructor overrides)."""

    def __init__(
        self,
        folder: RunFolder,
        methods: list[str],
        seed: int,
        sampler_params: dict[str, dict[str, Any]] | None,
        fingerprint: str,
    ) -> None:
        self.folder, self.fingerprint = folder, fingerprint
        overrides = sampler_params or {}
        # the sampler each method is loaded into, fitted as, or a variant stands in for
        self.wanted = {
            name: create_sampler(name, **{"seed": seed, **overrides.get(name, {})})
            for name in methods
        }
        self.fitted: dict[str, Sampler] = {}

    def directory(self, method: str) -> Path:
        """Where `method`'s sampler is saved."""
        return self.folder.file(f"{SAMPLERS_DIR}/{method}")

    def saved(self, method: str) -> bool:
        """Whether `method`'s folder holds a sampler fitted on this model with these parameters
        (by its config; a damaged config does not count)."""
        directory = self.directory(method)
        if not directory.is_dir():
            return False
        try:
            config = read_sampler_config(directory)
        except InputError:
            return False  # damaged or from another version
        same_params = config.get("params") == json_safe(self.wanted[method].params())
        return config.get("model_fingerprint") == self.fingerprint and same_params

    def worker(self, background: bool) -> contextlib.AbstractContextManager[Worker | None]:
        """A worker process for the fits that run in the background (`Sampler.start`), started now
        so that its own start (about 3 s: Python, torch) overlaps the data load; none (a null
        context) when `background` is off, this process has one core, no sampler to be fitted
        would use it, or no other method but the prior is to be fitted (nothing to overlap it
        with: the worker's start would only add to the wait)."""
        if not background or available_cores() < 2:
            return contextlib.nullcontext()
        to_fit = {name: sampler for name, sampler in self.wanted.items() if not self.saved(name)}
        there = [sampler for sampler in to_fit.values() if sampler.runs_in_background()]
        here = [n for n, s in to_fit.items() if not s.runs_in_background() and n != BASELINE]
        if not there or not here:
            return contextlib.nullcontext()
        modules = [module for sampler in there for module in sampler.background_modules]
        return take_worker(preload=tuple(dict.fromkeys(modules)))

    def start_in_background(self, shared: SharedFit) -> list[str]:
        """The methods whose slow part of fitting now runs in `shared`'s worker (`Sampler.start`).
        A method whose sampler kind is saved for this model is left alone: the saved fit (or a
        variant of it) serves it."""
        saved = {type(self.wanted[name]) for name in self.wanted if self.saved(name)}
        return [
            name
            for name, sampler in self.wanted.items()
            if type(sampler) not in saved and sampler.start(shared)
        ]

    def fit_or_load(
        self,
        method: str,
        model: nn.Module,
        shared: SharedFit,
        on_epoch: Callable[[int, int], Any] | None = None,
    ) -> tuple[Sampler, str]:
        """The method's sampler and where it came from: "loaded", "variant" or "fitted" (on
        `shared`'s training images), saved into its folder; a fit that trains for epochs tells
        `on_epoch(epoch, epochs)` after each."""
        wanted = self.wanted[method]
        wanted.on_epoch = on_epoch
        directory = self.directory(method)
        sampler, source = self._load_saved(method, model), "loaded"
        if sampler is None:  # one fitted earlier in this call, where it can stand in
            reused = (wanted.reuse(other) for other in self.fitted.values())
            sampler = next((found for found in reused if found is not None), None)
            source = "variant"
            if sampler is not None:
                sampler.save(directory)
        if sampler is None:
            sampler = wanted.fit(model, shared.source, shared)
            source = "fitted"
            sampler.save(directory)
        self.fitted[method] = sampler
        return sampler, source

    def _load_saved(self, method: str, model: nn.Module) -> Sampler | None:
        """The saved sampler when `saved(method)`; None otherwise, or when it is damaged (then it
        is fitted again)."""
        if self.saved(method):
            try:
                return load_sampler(self.directory(method), model)
            except InputError:
                pass  # damaged or from another version
        return None
