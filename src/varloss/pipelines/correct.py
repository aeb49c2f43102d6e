"""`correct`: fit the samplers on a `varloss train` run and report the variance gap each closes.

    report = correct("runs/mnist", "all")      # writes runs/mnist/correct/

The folder it writes (`out`, by default RUN/correct), under its lock, every file atomically and
the manifest last:

- `samplers/<method>/`: each fitted sampler (safetensors + JSON, with its own manifest); a later
  call with the same model and parameters loads it instead of fitting again;
- `samples.png`: one row of samples per method under the real test images;
- `curve.png` (with `curve=True`): the distortion-perception curves of the image-space remedies;
- `report.json`: ONE schema, whether one method was asked for or several:
  `{"method", "baseline", "methods": {name: row}, "table": [...], "settings"}`. `baseline` is the
  prior's row, `methods` has one row per method with the `varloss measure` keys of its samples
  against the test split (the `spectrum` by frequency band included), `gap_closed`,
  `band_gap_closed`, `spectral_error` (`varloss.variance.gap`), `pixel_frechet`
  (`varloss.quality.pixel_frechet`, K in the settings), `fid`, `fid_before`, `fid_after`,
  `fid_gain`, the price (`reconstruction_mse_before`, `reconstruction_mse_after`,
  `variance_regained`, `price_reason`: `varloss.pipelines.remedy_price`), with `curve=True` the
  `curve` points, whatever the sampler adds (`Sampler.diagnostics`: the two-stage rows' `latent`)
  and the sampler's settings; `table` is the short summary the CLI prints.

Rows (in `methods` and `table`) are sorted by one headline, lower first: the FID where it was
computed for every method, else `pixel_frechet` (`settings["headline"]` says which). Total gap
closed is not the headline: it cannot tell variance given back as structure from noise.

Every method draws from a generator seeded with the evaluation-code stream of `seed`
(`varloss.variance.protocol`), so latent-space methods show matched samples, and with the run's
own seed the prior's codes are the ones `varloss train` evaluated; the two-stage rows' latent
measurement draws from the seed's second-stage stream.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from varloss._io import fault_point, json_safe
from varloss._progress import progress_bar
from varloss._threads import choose_threads, threads_kept
from varloss._version import __version__
from varloss.data import load as load_dataset
from varloss.data import read_images
from varloss.errors import InputError
from varloss.figures import save_figure, save_image_grid
from varloss.figures.distortion import distortion_perception_figure
from varloss.models.adapters import ModelAdapter, load_adapter
from varloss.pipelines.remedy_fits import RemedyFits
from varloss.pipelines.remedy_price import (
    PRICE_DEFINITION,
    distortion_perception_curve,
    mean_reconstructions,
    price,
    price_before,
)
from varloss.pipelines.remedy_table import (
    HEADLINE_DEFINITION,
    compare_with_baseline,
    method_table,
    sort_by_headline,
)
from varloss.quality import fid_mode, fid_or_reason
from varloss.quality.pixel_frechet import DEFAULT_PIXEL_FRECHET_K, PixelFrechet
from varloss.runs import (
    CORRECT_DIR,
    CURVE_FILE,
    REPORT_FILE,
    SAMPLES_FILE,
    RunFolder,
)
from varloss.samplers import (
    ALL_METHODS,
    BASELINE,
    METHODS,
    Sampler,
    SharedFit,
    check_methods_fit,
    model_fingerprint,
    parse_methods,
)
from varloss.variance import measure
from varloss.variance.gap import (
    BAND_GAP_CLOSED_DEFINITION,
    GAP_CLOSED_DEFINITION,
    SPECTRAL_ERROR_DEFINITION,
    gap_closed,
)
from varloss.variance.model import first_batch_probe
from varloss.variance.protocol import Stream, stream_seed

__all__ = ["correct", "gap_closed", "method_table"]


@dataclass
class _Data:
    """Where the images come from: a data set's splits, or --train (and --test) inputs."""

    dataset: str | None
    train: Any = None
    test: Any = None


@dataclass
class _Inputs:
    """What every method is evaluated on: the model (an adapter) and its train and test data."""

    run_dir: Path
    data: _Data
    dataset: str | None
    train_limit: int | None
    model: ModelAdapter
    fingerprint: str
    train_images: torch.Tensor
    test_set: Any  # the ImageSet, so the FID can cache its feature statistics
    test_images: torch.Tensor
    n_generated: int
    reconstructed: torch.Tensor  # decode(mu) of the test images: the remedies' price
    price_before: tuple[float, float]  # their MSE and variance, the same for every remedy
    frechet: PixelFrechet  # the test images' top-K basis and Gaussian
    shared: SharedFit  # what the methods' fits do alike (codes, decoded prior samples), once


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
    fid: str | bool = "auto",
    grid_size: int = 16,
    progress: bool = True,
    command: str | None = None,
    dataset: str | None = None,
    train: Any = None,
    test: Any = None,
    device: str = "cpu",
    threads: int | str | None = None,
    curve: bool = False,
    pixel_frechet_k: int = DEFAULT_PIXEL_FRECHET_K,
    background: bool = True,
) -> dict[str, Any]:
    """Fit remedies on a model and measure what each gains; returns report.json.

    `run_dir`: a `varloss train` run folder, or any model `load_adapter` takes (`pythae:PATH`,
    ...). Its data: the data set the folder names, else `dataset` (a data-set name), else
    `train` images (any `measure` input; `test` images to measure against, default the same).

    `method`: a name of `METHODS`, a comma-separated list or "all" (the prior is always added).
    `n_samples`: generated samples per method (default: as many as test images). `fid`: "auto"
    (only with a cached domain classifier), "on" (train it if needed) or "off"; True/False mean
    "on"/"off". `command` (the CLI passes its command line) is recorded in the settings.
    `threads`: torch's (and numpy's BLAS) CPU threads, "auto" (the CLI's default: timed on a
    batch of the model's reconstructions, samples and their measurement, `varloss._threads`), a
    count or None (as set); recorded in the settings, the caller's setting given back at the end.
    `curve`: also sweep each image-space remedy's strength from 0 to 1 (`curve` in its row,
    curve.png). `pixel_frechet_k`: K of `pixel_frechet`'s principal basis.
    `background`: on two or more cores, train the second stage in a worker process
    (`varloss._background`) while the other methods are fitted and measured; the same numbers
    either way (the second stage trains on one thread, seeded, in both places). Whether it did
    is recorded (`settings.second_stage_worker`).
    """
    fid = fid_mode(fid)
    methods = parse_methods(method)
    _check_arguments(n_samples, sampler_params or {}, pixel_frechet_k)
    model = _load_model(run_dir, _Data(dataset, train, test), device)  # refused: nothing written
    check_methods_fit(methods, model)
    run_dir = Path(model.source)
    data = _Data(dataset or (None if train is not None else model.dataset), train, test)
    limit = train_limit if train_limit is not None else model.dataset_limit
    folder = RunFolder(out if out is not None else run_dir / CORRECT_DIR)
    fits = RemedyFits(folder, methods, seed, sampler_params, model_fingerprint(model))
    # the lock is taken before the data loads: a second process is told at once
    with folder.lock(), threads_kept(), fits.worker(background) as worker:
        loaded = _load_data(data, limit, data_path)
        model.eval()
        probe = first_batch_probe(loaded[0], model, batch_size=256)
        threads_used = choose_threads(threads, probe).to_dict()
        shared = SharedFit(model, loaded[0], worker)
        # started before the test images' work (reconstructions, pixel FD basis): it overlaps it
        started = fits.start_in_background(shared)
        inputs = _inputs(
            run_dir, data, limit, n_samples, pixel_frechet_k, loaded, shared, fits.fingerprint
        )
        rows, grids = _run_methods(fits, started, inputs, seed, fid, curve, progress, grid_size)
        compare_with_baseline(rows)
        headline = sort_by_headline(rows)
        settings = _settings(inputs, methods, seed, fid, rows[BASELINE], command)
        settings.update(threads=threads_used, headline=headline, curve=bool(curve))
        settings["second_stage_worker"] = started != []  # the same numbers either way
        report = json_safe(_report(methods, rows, settings))
        _write_outputs(folder, inputs, rows, grids, report, grid_size)
    return report


def _check_arguments(
    n_samples: int | None, sampler_params: dict[str, dict[str, Any]], pixel_frechet_k: Any
) -> None:
    """Refuse bad arguments before anything is loaded or written."""
    if n_samples is not None and int(n_samples) < 2:
        raise InputError(f"n_samples must be at least 2, got {n_samples!r}.")
    k = pixel_frechet_k
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"pixel_frechet_k must be a positive integer, got {pixel_frechet_k!r}.")
    unknown = sorted(set(sampler_params) - set(METHODS))
    if unknown:
        raise InputError(
            f"sampler_params names unknown methods {unknown}; known: {sorted(METHODS)}."
        )


def _load_model(spec: str | Path, data: _Data, device: str) -> ModelAdapter:
    """The model as an adapter, refused when its prior samples are not images or nothing
    names its data."""
    model = load_adapter(spec, device=device)
    if not model.generates_images:
        raise InputError(f"correct cannot work on {spec}: {model.generation_note}.")
    if data.dataset is not None and data.train is not None:
        raise InputError("give a data set (--dataset) or training images (--train), not both.")
    if data.test is not None and data.train is None:
        raise InputError("test images (--test) go with training images (--train).")
    if data.dataset is None and data.train is None and model.dataset is None:
        raise InputError(
            f"model {spec} does not name the training dataset (train.dataset); pass a data-set "
            "name (--dataset) or training images (--train)."
        )
    return model


def _read(source: Any, name: str, limit: int | None = None) -> torch.Tensor:
    """A whole `measure` input as float32 N x C x H x W images (the first `limit`)."""
    images = torch.from_numpy(read_images(source, name)).to(torch.float32)
    if images.ndim != 4:
        raise InputError(f"{name} images must be N x C x H x W, got shape {tuple(images.shape)}.")
    return images[:limit] if limit is not None else images


def _load_data(
    data: _Data, limit: int | None, data_path: str | None
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """(training images, the test set as the FID takes it, test images): the data set's
    splits, or the train (test) images."""
    if data.train is not None:
        train_images = _read(data.train, "train", limit)
        test_images = train_images if data.test is None else _read(data.test, "test")
        return train_images, test_images, test_images
    train_images = load_dataset(data.dataset, "train", data_path=data_path, limit=limit).images
    test_set = load_dataset(data.dataset, "test", data_path=data_path)
    return train_images, test_set, test_set.images.detach().to("cpu", torch.float32)


def _inputs(
    run_dir: Path,
    data: _Data,
    limit: int | None,
    n_samples: int | None,
    pixel_frechet_k: int,
    loaded: tuple[torch.Tensor, Any, torch.Tensor],
    shared: SharedFit,
    fingerprint: str,
) -> _Inputs:
    """What every method is evaluated on, from the loaded data: the test images'
    reconstructions, their price and their pixel FD basis."""
    model, (train_images, test_set, test_images) = shared.model, loaded
    reconstructed = mean_reconstructions(model, test_images)
    return _Inputs(
        run_dir=run_dir,
        data=data,
        dataset=data.dataset,
        train_limit=limit,
        model=model,
        fingerprint=fingerprint,
        train_images=train_images,
        test_set=test_set,
        test_images=test_images,
        n_generated=int(n_samples) if n_samples is not None else int(test_images.shape[0]),
        reconstructed=reconstructed,
        price_before=price_before(test_images, reconstructed),
        frechet=PixelFrechet(test_images, pixel_frechet_k),
        shared=shared,
    )


def _run_methods(
    fits: RemedyFits,
    started: list[str],
    inputs: _Inputs,
    seed: int,
    fid: str,
    curve: bool,
    progress: bool,
    grid_size: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, torch.Tensor]]:
    """Each method fitted (or loaded) and evaluated: (its row, the first `grid_size` of its
    samples), by method. Those `started` in the worker come last: the others are fitted
    meanwhile."""
    rows: dict[str, dict[str, Any]] = {}
    grids: dict[str, torch.Tensor] = {}
    order = [name for name in fits.wanted if name not in started] + started
    bar = progress_bar(order, desc="correct", disable=not progress)
    for name in bar:
        bar.set_postfix(method=name)
        # a second stage that trains shows its epochs in the bar (minutes on a CPU)
        shown = functools.partial(_show_epoch, bar, name)
        sampler, source = fits.fit_or_load(name, inputs.model, inputs.shared, shown)
        rows[name], samples = _evaluate(name, sampler, inputs, seed, fid, curve, progress)
        rows[name].update(sampler_dir=str(fits.directory(name)), sampler_source=source)
        grids[name] = samples[:grid_size]
    return rows, grids


def _show_epoch(bar: Any, method: str, epoch: int, epochs: int) -> None:
    bar.set_postfix(method=method, epoch=f"{epoch}/{epochs}")


def _evaluate(
    name: str,
    sampler: Sampler,
    inputs: _Inputs,
    seed: int,
    fid: str,
    curve: bool = False,
    progress: bool = False,
) -> tuple[dict[str, Any], torch.Tensor]:
    """One method's row (its samples measured against the test split, their pixel Fréchet
    distance and FID, the price on reconstructions, the sampler's own diagnostics) and its
    samples. With `progress` the FID's feature extraction shows its bars (images/s): on
    Inception features a CPU reads a test split in tens of minutes."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(stream_seed(seed, Stream.EVALUATION_CODES))
    samples = sampler.sample(inputs.n_generated, generator)
    sample_seconds = time.perf_counter() - started
    measured = measure(
        inputs.test_images,
        generated=samples,
        settings={
            "method": name,
            "dataset": inputs.dataset,
            "split": "test",
            "n_generated": inputs.n_generated,
        },
        spectrum=True,  # by frequency band: cheap next to fitting a sampler
    ).to_dict()
    fid_result, fid_reason = fid_or_reason(
        inputs.test_set, samples, dataset=inputs.dataset, mode=fid, progress=progress
    )
    row = {
        **measured,
        "measured_by": "varloss.measure",
        "pixel_frechet": inputs.frechet.distance(samples),
        "fid": fid_result,
        "fid_reason": fid_reason,
        **price(sampler, inputs.test_images, inputs.reconstructed, inputs.price_before),
        "sampler": sampler.settings(),
        "fit_seconds": sampler.fit_seconds,
        "fit_background_seconds": sampler.background_seconds,
        "sample_seconds": sample_seconds,
    }
    if curve and sampler.acts_on_images:
        # the same codes as the samples: the curve's strength-1 point is the row's own
        codes = torch.Generator().manual_seed(stream_seed(seed, Stream.EVALUATION_CODES))
        row["curve"] = distortion_perception_curve(
            sampler,
            sampler.sample_codes(inputs.n_generated, codes),
            inputs.test_images,
            inputs.reconstructed,
            inputs.frechet,
        )
    row.update(sampler.diagnostics(inputs.model, inputs.test_images, inputs.n_generated, seed))
    return row, samples


def _settings(
    inputs: _Inputs,
    methods: list[str],
    seed: int,
    fid: str,
    baseline: dict[str, Any],
    command: str | None,
) -> dict[str, Any]:
    """Everything that produced the report (recorded in it)."""
    model = inputs.model.describe()
    return {
        **({"command": command} if command else {}),
        "run_dir": str(inputs.run_dir),
        "methods": methods,
        "dataset": inputs.dataset,
        "train_limit": inputs.train_limit,
        "n_train": int(inputs.train_images.shape[0]),
        "n_test": int(inputs.test_images.shape[0]),
        "n_generated": inputs.n_generated,
        "seed": seed,
        "codes_seed": stream_seed(seed, Stream.EVALUATION_CODES),
        "second_stage_seed": stream_seed(seed, Stream.SECOND_STAGE_CODES),
        "model_fingerprint": inputs.fingerprint,
        "model_family": model.get("family", model["class"]),
        "model": model,
        "train_images": None if inputs.data.train is None else str(inputs.data.train),
        "test_images": None if inputs.data.test is None else str(inputs.data.test),
        "latent_dim": int(inputs.model.latent_dim),
        "fid": fid,
        "fid_features": None
        if baseline["fid"] is None
        else ("inception" if fid == "inception" else "domain"),
        "gap_closed_definition": GAP_CLOSED_DEFINITION,
        "band_gap_closed_definition": BAND_GAP_CLOSED_DEFINITION,
        "spectral_error_definition": SPECTRAL_ERROR_DEFINITION,
        **inputs.frechet.settings(),
        "price_definition": PRICE_DEFINITION,
        "headline_definition": HEADLINE_DEFINITION,
        "varloss_version": __version__,
    }


def _report(
    methods: list[str], rows: dict[str, dict[str, Any]], settings: dict[str, Any]
) -> dict[str, Any]:
    """report.json: the same schema for one method and for several (the methods table)."""
    return {
        "method": "all" if methods == list(ALL_METHODS) else ",".join(methods),
        "baseline": rows[BASELINE],
        "methods": dict(rows),  # in the headline's order
        "table": method_table(rows),
        "settings": settings,
    }


def _write_outputs(
    folder: RunFolder,
    inputs: _Inputs,
    rows: dict[str, dict[str, Any]],
    grids: dict[str, torch.Tensor],
    report: dict[str, Any],
    grid_size: int,
) -> None:
    """samples.png, then report.json, then the manifest (last), each written atomically. The
    old report.json goes first: a kill while the new grid and curves are written must not leave
    it describing them (a page would show the old numbers as the new samples'); without a
    report the folder is an unfinished correct, which the same command writes again."""
    folder.unlink(REPORT_FILE)
    fault_point("correct:report-removed")
    real_label = f"real (test)  var={rows[BASELINE]['var_real']:.4f}"
    picture = {real_label: inputs.test_images[:grid_size]}
    for name, samples in grids.items():
        label = "prior (baseline)" if name == BASELINE else name
        picture[f"{label}  var={rows[name]['var_generated']:.4f}"] = samples
    save_image_grid(picture, folder.file(SAMPLES_FILE))
    fault_point("correct:samples-written")
    curves = {name: row["curve"] for name, row in rows.items() if row.get("curve")}
    if curves:
        mse_before = rows[BASELINE]["reconstruction_mse_before"]
        save_figure(distortion_perception_figure(curves, mse_before), folder.file(CURVE_FILE))
    folder.write_json(REPORT_FILE, report)
    fault_point("correct:report-written")
    folder.seal()
