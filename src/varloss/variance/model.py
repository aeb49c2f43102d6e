"""`measure_model(model, real)`: a model's variance loss, measured without saving its outputs.

The model may be any framework's: its `reconstruct(x)`/`sample(n)`, or two functions. The real
set streams batch by batch through the model and into `measure`, so outputs are never held.
`reconstruction="sample"` reconstructs through `model.reconstruct(x, noise)`: decode(mu + sigma *
eps), image i's eps from row i of the reconstruction-draw stream of `seed`; sample i decodes row i
of the evaluation-code stream of `seed` (`varloss.variance.protocol`: the rule `varloss train`
evaluates by, so the run's seed, protocol and test images reproduce its report.json).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from varloss.data.inputs import CheckedStream, Source, open_source
from varloss.errors import InputError
from varloss.variance.measurement import ValueRange, measure, normalise_ranges
from varloss.variance.protocol import (
    NOISE_BLOCK,
    Reconstruction,
    Stream,
    prior_generation,
    sampled_reconstruction,
    stream_seed,
    stream_settings,
)
from varloss.variance.report import VarianceReport


def model_device(model: Any) -> torch.device:
    """Where a model's parameters live (CPU for objects without any)."""
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return parameter.device
    return torch.device("cpu")


def measure_model(
    model: Any,
    real: Source,
    *,
    reconstruct: Callable[[torch.Tensor], Any] | None = None,
    generate: Callable[[int], Any] | None = None,
    n_generated: int | None = None,
    seed: int = 0,
    reconstruction: Reconstruction | str = Reconstruction.MEAN,
    batch_size: int = NOISE_BLOCK,
    value_range: ValueRange | dict[str, ValueRange] | None = None,
    settings: dict[str, Any] | None = None,
    on_pair: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    **splits: Any,
) -> VarianceReport:
    """`measure` a model directly: its reconstructions of `real` and its samples, streamed.

    `real` is any `measure` input, read `batch_size` samples at a time; its images (scaled to
    floats, shaped N x C x H x W or as given) go through `reconstruct` (default:
    `model.reconstruct`) on the model's device NOISE_BLOCK at a time, and
    `n_generated` samples (default: as many as real samples) come from `generate(n)` (default:
    `model.sample(n)`), NOISE_BLOCK at a time. A `generate` that takes `noise` (a model's
    `sample`) decodes the codes of the evaluation-code stream of `seed`, sample i from row i, as
    `varloss train` does; a plain function runs under torch.manual_seed(the stream's seed). Either
    way the numbers repeat whatever `batch_size`, and the model's batches are those `varloss
    train` evaluates in: a run's own seed, protocol, test images and sample count give its
    report.json's numbers. Either side may be missing (`model=None`, or no `sample`).
    An `nn.Module` is measured in eval mode and under `torch.no_grad()`, then put back as it was.
    Outputs are checked like `measure`'s inputs; `splits` (spectrum=, pca=) go to `measure`.
    `on_pair(real, reconstructed)` sees each pair of batches as `measure` measures them (its
    `on_pair`: PSNR, SSIM, rFID through `varloss.quality.ReconstructionQuality`).
    """
    reconstruction = Reconstruction.parse(reconstruction)
    reconstruct, generate = _model_functions(model, reconstruct, generate, reconstruction, seed)
    _check_counts(n_generated, batch_size)
    ranges = normalise_ranges(value_range)
    device = model_device(model)
    real_set = CheckedStream(open_source(real, "real", batch_size=batch_size), ranges["real"])
    outputs: deque[Any] = deque()

    def real_batches() -> Iterator[torch.Tensor]:
        # `measure` pairs the streams by pulling a real batch, then its reconstruction.
        for batch in _in_blocks(real_set):  # the model's batches: train's, whatever batch_size
            images = batch.reshape(batch.shape[0], *real_set.dims)
            if reconstruct is not None:
                inputs = images.to(device=device, dtype=torch.float32)
                outputs.append(_detached(reconstruct(inputs)))
            yield images

    def reconstructions() -> Iterator[Any]:
        while outputs:
            yield outputs.popleft()

    def samples() -> Iterator[Any]:
        total = int(n_generated) if n_generated is not None else real_set.count
        yield from _samples(generate, total, device, seed)

    with _evaluating(model):
        report = measure(
            real_batches(),
            reconstructions() if reconstruct is not None else None,
            samples() if generate is not None else None,
            batch_size=batch_size,
            value_range={k: v for k, v in ranges.items() if v is not None and k != "real"},
            on_pair=on_pair,
            **splits,
            settings={
                "model": _model_name(model),
                "reconstructed_by": _function_name(reconstruct),
                "generated_by": _function_name(generate),
                "seed": seed,
                **stream_settings(reconstruction, seed),
                **(settings or {}),
            },
        )
    report.settings["inputs"]["real"] = real_set.stream.description
    if ranges["real"] is not None:
        report.settings["value_range"]["real"] = list(ranges["real"])
    return report


@contextmanager
def _evaluating(model: Any) -> Iterator[None]:
    """An `nn.Module` in eval mode and everything under torch.no_grad(); the module is put back
    in training mode afterwards if it was in it."""
    training = getattr(model, "training", None)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if isinstance(model, torch.nn.Module) and training:
            model.train()


def _samples(
    generate: Callable[[int], Any], total: int, device: torch.device, seed: int
) -> Iterator[Any]:
    """`total` samples, NOISE_BLOCK at a time whatever batch_size is (see NOISE_BLOCK); a plain
    function draws under torch.manual_seed(the evaluation-code stream's seed), on a forked RNG."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(stream_seed(seed, Stream.EVALUATION_CODES))
        for start in range(0, total, NOISE_BLOCK):
            yield _detached(generate(min(NOISE_BLOCK, total - start)))


def _in_blocks(batches: Iterator[torch.Tensor] | CheckedStream) -> Iterator[torch.Tensor]:
    """The same rows regrouped into NOISE_BLOCK rows a batch (the last one shorter): the batches
    a model reconstructs in, as `varloss train` evaluates (float32 results of a network depend on
    its batch size, so equal batches make equal numbers)."""
    pending: list[torch.Tensor] = []
    have = 0
    for batch in batches:
        pending.append(batch)
        have += batch.shape[0]
        while have >= NOISE_BLOCK:
            joined = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield joined[:NOISE_BLOCK]
            pending, have = [joined[NOISE_BLOCK:]], have - NOISE_BLOCK
    if have:
        yield torch.cat(pending) if len(pending) > 1 else pending[0]


def first_batch_probe(
    real: Source,
    model: Any = None,
    *,
    batch_size: int = 1024,
    value_range: ValueRange | dict[str, ValueRange] | None = None,
) -> Callable[[], Any] | None:
    """What `varloss measure --threads auto` times (`varloss._threads`): the first batch of
    `real` measured, with a model's reconstructions of it and as many of its samples when a
    model is given. None when the model runs on an accelerator (CPU threads do not run it).
    The batch is read once, here; the model is called under `torch.no_grad()`."""
    device = model_device(model)
    if device.type != "cpu":
        return None
    ranges = normalise_ranges(value_range)
    stream = CheckedStream(open_source(real, "real", batch_size=batch_size), ranges["real"])
    batch = next(iter(stream), None)
    if batch is None or batch.shape[0] < 2:
        return None  # nothing worth timing; `measure` itself says what is wrong
    images = batch.reshape(batch.shape[0], *stream.dims)
    reconstruct, generate = (None, None) if model is None else _model_functions(model, None, None)

    @torch.no_grad()
    def step() -> VarianceReport:
        inputs = images.to(dtype=torch.float32)
        reconstructed = None if reconstruct is None else _detached(reconstruct(inputs))
        generated = None if generate is None else _detached(generate(images.shape[0]))
        if reconstructed is None and generated is None:  # no model: the moments are the work
            return measure(images, generated=images, batch_size=batch_size)
        outputs = {name: ranges[name] for name in ("reconstructed", "generated")}
        return measure(images, reconstructed, generated, batch_size=batch_size, value_range=outputs)

    return step


def _check_counts(n_generated: int | None, batch_size: int) -> None:
    if n_generated is not None and (isinstance(n_generated, bool) or int(n_generated) < 2):
        raise InputError(f"n_generated must be an integer of at least 2, got {n_generated!r}.")
    if batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size}.")


def _model_functions(
    model: Any,
    reconstruct: Callable | None,
    generate: Callable | None,
    reconstruction: Reconstruction = Reconstruction.MEAN,
    seed: int = 0,
) -> tuple[Callable | None, Callable | None]:
    """The reconstruct and generate functions: as given, else the model's own (sampled
    reconstructions draw through the model's `reconstruct(x, noise)`)."""
    if reconstruction is Reconstruction.SAMPLE:
        if reconstruct is not None:
            raise InputError(
                "reconstruction 'sample' draws through the model's reconstruct(x, noise); a "
                "reconstruct= function makes its own reconstructions: leave it at 'mean'."
            )
        reconstruct = sampled_reconstruction(model, seed)
    if reconstruct is None and model is not None and callable(getattr(model, "reconstruct", None)):
        reconstruct = model.reconstruct
    # an adapter whose prior samples are not images (AutoencoderKL) samples only when asked
    images_from_prior = getattr(model, "generates_images", True)
    if generate is None and images_from_prior and callable(getattr(model, "sample", None)):
        generate = model.sample
    if generate is not None and getattr(model, "prior_note", None) is None:
        # a model's sample(n, noise) with an N(0, I) prior: the codes of the evaluation stream
        generate = prior_generation(generate, seed, getattr(model, "latent_dim", None)) or generate
    if reconstruct is None and generate is None:
        raise InputError(
            f"model {type(model).__name__} has neither reconstruct(x) nor sample(n); pass "
            "reconstruct= and/or generate= functions."
        )
    return reconstruct, generate


def _model_name(model: Any) -> str | None:
    """The model's class name; an adapter's (or any wrapper's) `module` names the model."""
    return None if model is None else type(getattr(model, "module", model)).__name__


def _detached(output: Any) -> Any:
    return output.detach() if isinstance(output, torch.Tensor) else output


def _function_name(function: Callable[..., Any] | None) -> str | None:
    if function is None:
        return None
    owner = getattr(function, "__self__", None)
    name = getattr(function, "__qualname__", None) or type(function).__name__
    return f"{type(owner).__name__}.{function.__name__}" if owner is not None else name
