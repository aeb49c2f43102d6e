"""`correct`: fit the samplers on a `varloss train` run and report the variance gap each closes.

    report = correct("runs/mnist", "all")      # writes runs/mnist/correct/

The folder it writes (`out`, by default RUN/correct), under its lock, every file atomically and
the manifest last:

- `samplers/<method>/`: each fitted sampler (safetensors + JSON, with its own manifest); a later
  call with the same model and parameters loads it instead of fitting again;
- `samples.png`: one row of samples per method under the real test images;
- `report.json`: ONE schema, whether one method was asked for or several:
  `{"method", "baseline", "methods": {name: row}, "table": [...], "settings"}`. `baseline` is the
  prior's row, `methods` has one row per method (the prior first) with the `varloss measure`
  keys of its samples against the test split, `gap_closed`, `fid`, `fid_before`, `fid_after`,
  `fid_gain` and the sampler's settings; `table` is the short summary the CLI prints.

Every method draws from a generator seeded with the evaluation-code stream of `seed`
(`varloss.variance.protocol`), so latent-space methods show matched samples, and with the run's
own seed the prior's codes are the ones `varloss train` evaluated; the two-stage rows' latent
measurement draws from the seed's second-stage stream.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from varloss._progress import progress_bar
from varloss._threads import choose_threads, threads_kept
from varloss._version import __version__
from varloss.data import load as load_dataset
from varloss.data import read_images
from varloss.errors import InputError
from varloss.figures import save_image_grid
from varloss.models.adapters import ModelAdapter, load_adapter
from varloss.quality import fid_mode, fid_or_reason
from varloss.runs import (
    CORRECT_DIR,
    REPORT_FILE,
    SAMPLERS_DIR,
    SAMPLES_FILE,
    RunFolder,
)
from varloss.samplers import (
    ALL_METHODS,
    BASELINE,
    METHODS,
    Sampler,
    check_methods_fit,
    create_sampler,
    load_sampler,
    model_fingerprint,
    parse_methods,
    read_sampler_config,
)
from varloss.samplers.two_stage import TwoStageSampler
from varloss.variance import measure
from varloss.variance.model import first_batch_probe
from varloss.variance.protocol import Stream, stream_seed

GAP_CLOSED_DEFINITION = "1 - |var_real - var_generated| / |var_real - var_generated(prior)|"


def gap_closed(var_real: float, var_baseline: float, var_corrected: float) -> float | None:
    """Fraction of the baseline variance gap closed: 1 - |gap after| / |gap before|.

    1 means the generated variance equals the real one; overshooting counts as remaining gap;
    negative values mean the remedy moved further away. None when the baseline has no gap.
    """
    before = var_real - var_baseline
    if before == 0 or not math.isfinite(before):
        return None
    return float(1.0 - abs(var_real - var_corrected) / abs(before))


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
) -> dict[str, Any]:
    """Fit remedies on a model and measure what each gains; returns report.json.

    `run_dir`: a `varloss train` run folder, or any model `load_adapter` takes (`pythae:PATH`,
    ...). Its data: the data set the folder names, else `dataset` (a data-set name), else
    `train` images (any `measure` input; `test` images to measure against, default the same).

    `method`: a name of `METHODS`, a comma-separated list or "all" (the prior is always added).
    `n_samples`: generated samples per method (default: as many as test images). `fid`: "auto"
    (only with a cached domain classifier), "on" (train it if needed) or "off"; True/False mean
    "on"/"off". `command` (the CLI passes its command line) is recorded in the settings.
    `threads`: torch's CPU threads, "auto" (the CLI's default: timed on a batch of the model's
    reconstructions, samples and their measurement, `varloss._threads`), a count or None (as
    set); recorded in the settings, the caller's setting given back at the end.
    """
    fid = fid_mode(fid)
    methods = parse_methods(method)
    _check_arguments(n_samples, sampler_params or {})
    model = _load_model(run_dir, _Data(dataset, train, test), device)  # refused: nothing written
    check_methods_fit(methods, model)
    run_dir = Path(model.source)
    data = _Data(dataset or (None if train is not None else model.dataset), train, test)
    limit = train_limit if train_limit is not None else model.dataset_limit
    folder = RunFolder(out if out is not None else run_dir / CORRECT_DIR)
    # the lock is taken before the data loads: a second process is told at once
    with folder.lock(), threads_kept():
        inputs = _load_inputs(run_dir, model, data, n_samples, limit, data_path)
        probe = first_batch_probe(inputs.train_images, inputs.model, batch_size=256)
        threads_used = choose_threads(threads, probe).to_dict()
        rows: dict[str, dict[str, Any]] = {}
        grids: dict[str, torch.Tensor] = {}
        fitted: dict[str, Sampler] = {}
        bar = progress_bar(methods, desc="correct", disable=not progress)
        for name in bar:
            bar.set_postfix(method=name)
            params = {"seed": seed, **(sampler_params or {}).get(name, {})}
            # a second stage that trains shows its epochs in the bar (minutes on a CPU)
            shown = functools.partial(_show_epoch, bar, name)
            sampler, source = _fit_or_load(name, params, inputs, folder, fitted, shown)
            rows[name], samples = _evaluate(name, sampler, inputs, seed, fid)
            rows[name].update(sampler_dir=str(_sampler_dir(folder, name)), sampler_source=source)
            grids[name] = samples[:grid_size]
        _compare_with_baseline(rows)
        settings = _settings(inputs, methods, seed, fid, rows[BASELINE], command)
        settings["threads"] = threads_used
        report = _json_safe(_report(methods, rows, settings))
        _write_outputs(folder, inputs, rows, grids, report, grid_size)
    return report


def _check_arguments(n_samples: int | None, sampler_params: dict[str, dict[str, Any]]) -> None:
    """Refuse bad arguments before anything is loaded or written."""
    if n_samples is not None and int(n_samples) < 2:
        raise InputError(f"n_samples must be at least 2, got {n_samples!r}.")
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


def _load_inputs(
    run_dir: Path,
    model: ModelAdapter,
    data: _Data,
    n_samples: int | None,
    limit: int | None,
    data_path: str | None,
) -> _Inputs:
    """The model's train and test data: its data set's splits, or the train (test) images."""
    if data.train is not None:
        train_images = _read(data.train, "train", limit)
        test_images = train_images if data.test is None else _read(data.test, "test")
        test_set: Any = test_images
    else:
        train_images = load_dataset(data.dataset, "train", data_path=data_path, limit=limit).images
        test_set = load_dataset(data.dataset, "test", data_path=data_path)
        test_images = test_set.images.detach().to("cpu", torch.float32)
    model.eval()
    return _Inputs(
        run_dir=run_dir,
        data=data,
        dataset=data.dataset,
        train_limit=limit,
        model=model,
        fingerprint=model_fingerprint(model),
        train_images=train_images,
        test_set=test_set,
        test_images=test_images,
        n_generated=int(n_samples) if n_samples is not None else int(test_images.shape[0]),
    )


def _sampler_dir(folder: RunFolder, method: str) -> Path:
    return folder.file(f"{SAMPLERS_DIR}/{method}")


def _fit_or_load(
    method: str,
    params: dict[str, Any],
    inputs: _Inputs,
    folder: RunFolder,
    fitted: dict[str, Sampler],
    on_epoch: Callable[[int, int], Any] | None = None,
) -> tuple[Sampler, str]:
    """The method's sampler and where it came from: "loaded", "variant" or "fitted".

    A saved sampler is loaded when it was fitted on this model with these parameters (a damaged
    or stale folder is fitted again); two-stage variants reuse one trained second stage, whose
    training tells `on_epoch(epoch, epochs)` after each epoch.
    """
    is_two_stage = METHODS[method][0] == "two-stage"
    if is_two_stage:
        params.setdefault("progress", False)
    wanted = create_sampler(method, **params)
    if is_two_stage:
        wanted.on_epoch = on_epoch
    directory = _sampler_dir(folder, method)
    if directory.is_dir():
        try:
            config = read_sampler_config(directory)
            same_params = config.get("params") == _json_safe(wanted.params())
            if config.get("model_fingerprint") == inputs.fingerprint and same_params:
                sampler = load_sampler(directory, inputs.model)
                if is_two_stage:
                    fitted.setdefault("two-stage", sampler)
                return sampler, "loaded"
        except InputError:
            pass  # damaged or from another version: fitted again below
    shared = fitted.get("two-stage")
    if is_two_stage and shared is not None:
        # The trained second stage is reused when only the renormalisation setting differs.
        variant = shared.variant(wanted.renormalize, wanted.target)
        if variant.params() == wanted.params():
            variant.save(directory)
            return variant, "variant"
    sampler = wanted.fit(inputs.model, inputs.train_images)
    sampler.save(directory)
    if is_two_stage:
        fitted["two-stage"] = sampler
    return sampler, "fitted"


def _show_epoch(bar: Any, method: str, epoch: int, epochs: int) -> None:
    bar.set_postfix(method=method, epoch=f"{epoch}/{epochs}")


def _evaluate(
    name: str, sampler: Sampler, inputs: _Inputs, seed: int, fid: str
) -> tuple[dict[str, Any], torch.Tensor]:
    """One method's row (its samples measured against the test split, FID) and its samples."""
    started = time.perf_counter()
    codes = torch.Generator().manual_seed(stream_seed(seed, Stream.EVALUATION_CODES))
    samples = sampler.sample(inputs.n_generated, codes)
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
        inputs.test_set, samples, dataset=inputs.dataset, mode=fid
    )
    row = {
        **measured,
        "measured_by": "varloss.measure",
        "fid": fid_result,
        "fid_reason": fid_reason,
        "sampler": sampler.settings(),
        "fit_seconds": sampler.fit_seconds,
        "sample_seconds": sample_seconds,
    }
    if isinstance(sampler, TwoStageSampler):
        row["latent"] = latent_variance(sampler, inputs, seed)
    return row, samples


def latent_variance(sampler: TwoStageSampler, inputs: _Inputs, seed: int) -> dict[str, Any]:
    """The second stage's variance loss in latent space (standardised codes mu of the test
    images against their second-stage reconstructions and raw samples) and its ratio to the
    second stage's MSE: the quantity the renormalisation rule makes up for."""
    generator = torch.Generator().manual_seed(stream_seed(seed, Stream.SECOND_STAGE_CODES))
    sets = sampler.latent_sets(inputs.model, inputs.test_images, inputs.n_generated, generator)
    report = measure(sets["codes"], sets["reconstructed"], sets["generated"])
    return {
        "space": "first-stage codes mu of the test images, standardised per dimension",
        "n_codes": report.n_real,
        "latent_dim": int(sets["codes"].shape[1]),
        "var_codes": report.var_real,
        **{key: getattr(report, key) for key in _LATENT_KEYS},
        "renormalized": sampler.renormalize,
    }


_LATENT_KEYS = (
    "var_reconstructed",
    "var_generated",
    "variance_loss_reconstructed",
    "variance_loss_generated",
    "mse",
    "ratio_reconstructed",
    "ratio_generated",
)


def _fid_value(result: dict[str, Any] | None) -> float | None:
    return None if not result else float(result["fid"])


def _compare_with_baseline(rows: dict[str, dict[str, Any]]) -> None:
    """Add to every row the gap it closes and its FID gain over the prior (the baseline)."""
    baseline = rows[BASELINE]
    before = _fid_value(baseline["fid"])
    for row in rows.values():
        row["gap_closed"] = gap_closed(
            row["var_real"], baseline["var_generated"], row["var_generated"]
        )
        after = _fid_value(row["fid"])
        row["fid_before"], row["fid_after"] = before, after
        row["fid_gain"] = None if before is None or after is None else before - after


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
        "varloss_version": __version__,
    }


def _report(
    methods: list[str], rows: dict[str, dict[str, Any]], settings: dict[str, Any]
) -> dict[str, Any]:
    """report.json: the same schema for one method and for several (the methods table)."""
    return {
        "method": "all" if methods == list(ALL_METHODS) else ",".join(methods),
        "baseline": rows[BASELINE],
        "methods": {name: rows[name] for name in methods},
        "table": method_table(rows),
        "settings": settings,
    }


def method_table(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One short row per method: the numbers `varloss correct` prints."""
    return [
        {
            "method": name,
            "var_real": row["var_real"],
            "var_generated": row["var_generated"],
            "variance_loss_generated": row.get("variance_loss_generated"),
            "gap_closed": row.get("gap_closed"),
            "fid": row.get("fid_after"),
            "fid_gain": row.get("fid_gain"),
        }
        for name, row in rows.items()
    ]


def _write_outputs(
    folder: RunFolder,
    inputs: _Inputs,
    rows: dict[str, dict[str, Any]],
    grids: dict[str, torch.Tensor],
    report: dict[str, Any],
    grid_size: int,
) -> None:
    """samples.png, then report.json, then the manifest (last), each written atomically."""
    real_label = f"real (test)  var={rows[BASELINE]['var_real']:.4f}"
    picture = {real_label: inputs.test_images[:grid_size]}
    for name, samples in grids.items():
        label = "prior (baseline)" if name == BASELINE else name
        picture[f"{label}  var={rows[name]['var_generated']:.4f}"] = samples
    save_image_grid(picture, folder.file(SAMPLES_FILE))
    folder.write_json(REPORT_FILE, report)
    folder.seal()


def _json_safe(value: Any) -> Any:
    """`value` as JSON would give it back (tuples become lists, numpy scalars numbers)."""

    def default(item: Any) -> Any:
        if isinstance(item, np.generic):
            return item.item()
        raise TypeError(f"not JSON serialisable: {type(item).__name__}")

    return json.loads(json.dumps(value, default=default))
