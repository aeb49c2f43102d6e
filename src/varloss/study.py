"""The study: a sweep spec -> `varloss train` runs -> results.csv, fit.json and the figure.

It reproduces the seed's central evidence: across many VAEs (dense, convolutional, ResNet-like,
iterative DRAW-like) the variance loss var(x) - var(x_hat) of the reconstructions lies close to
their MSE. A spec (YAML, validated into `StudySpec`) lists runs as grids and/or explicit runs;
each run is an ordinary `varloss.train.train` call writing the usual run folder under
`OUT/runs/<run-id>/`, so a finished run (it has `report.json`) is skipped on a re-run and an
interrupted one resumes from its checkpoint. Runs execute one after another, in N local
processes, or as tasks on a Dask cluster; results are gathered the same way in every case.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from varloss._io import atomic_write_json, atomic_write_text
from varloss.errors import InputError
from varloss.figures import FAMILY_COLOURS, family_colour, plot_study

__all__ = [
    "FAMILY_COLOURS",
    "family_colour",
    "RESULT_COLUMNS",
    "RunSpec",
    "StudyResult",
    "StudySpec",
    "collect_row",
    "execute_run",
    "fit_line",
    "fit_origin",
    "fit_results",
    "load_spec",
    "parse_spec",
    "plot_study",
    "preset_names",
    "run_study",
    "write_results",
]

SETTING_COLUMNS = ["run_id", "family", "dataset", "latent", "epochs", "loss", "seed", "limit"]
METRIC_COLUMNS = [
    "mse",
    "var_real",
    "var_reconstructed",
    "var_generated",
    "variance_loss_reconstructed",
    "variance_loss_generated",
    "bias2",
    "cov_term",
    "train_seconds",
]
RESULT_COLUMNS = SETTING_COLUMNS + METRIC_COLUMNS

SPEC_FILE = "study.yaml"
RESULTS_FILE = "results.csv"
FIT_FILE = "fit.json"
FIGURE_FILE = "figure.png"
REPORT_FILE = "report.json"  # written by train() only once a run has finished
RUN_TIMING_FILE = "study_run.json"
EXECUTORS = ("local", "dask")


# ---------------------------------------------------------------------------------------------
# the spec


@dataclass
class RunSpec:
    """One training run of the study: the `varloss train` settings that define it.

    `loss=None` means the family's default likelihood, `limit=None` the whole training split,
    `batch_size`/`lr=None` the trainer's defaults; `hyper` are the family's hyper-parameters.
    `data_path` says where the data lives and is not part of the run's identity.
    """

    family: str
    dataset: str
    latent: int
    epochs: int
    loss: str | None = None
    seed: int = 0
    limit: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    hyper: dict[str, Any] = field(default_factory=dict)
    data_path: str | None = None

    def settings(self) -> dict[str, Any]:
        """The settings that determine the result (JSON-safe, canonical key order)."""
        data = dataclasses.asdict(self)
        data.pop("data_path")
        data["hyper"] = {k: _json_safe(v) for k, v in sorted(self.hyper.items())}
        return data

    @property
    def run_id(self) -> str:
        """Readable and stable: the main settings plus a hash of all of them.

        e.g. `conv-mnist-z16-e2-bernoulli-s0-1a2b3c4d`; equal settings give equal ids on every
        machine, different settings (limit, lr, hyper-parameters...) give different ids.
        """
        digest = hashlib.sha256(
            json.dumps(self.settings(), sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()[:8]
        dataset = re.sub(r"[^A-Za-z0-9]+", "_", self.dataset).strip("_")[:24] or "data"
        loss = self.loss or "default"
        return f"{self.family}-{dataset}-z{self.latent}-e{self.epochs}-{loss}-s{self.seed}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        """All fields (data_path included), JSON-safe; `RunSpec(**d)` rebuilds it."""
        data = self.settings()
        data["data_path"] = self.data_path
        return data

    def train_config(self, out: str | Path, device: str | None = None) -> Any:
        """The `varloss.train.TrainConfig` of this run writing into `out`."""
        from varloss.train import TrainConfig

        names = {f.name for f in dataclasses.fields(TrainConfig)}
        values: dict[str, Any] = {
            "family": self.family,
            "dataset": self.dataset,
            "epochs": self.epochs,
            "latent": self.latent,
            "seed": self.seed,
            "out": str(out),
            "loss": self.loss,
            "limit": self.limit,
        }
        optional = {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "device": device,
            "data_path": self.data_path,
        }
        values.update({k: v for k, v in optional.items() if v is not None})
        if self.hyper:
            key = next(
                (n for n in ("hyper", "model", "model_hyper", "hyper_params") if n in names),
                "hyper",
            )
            values[key] = dict(self.hyper)
        dropped = sorted(k for k in values if k not in names and values[k] is not None)
        if dropped:
            raise InputError(f"the trainer does not accept the run settings {dropped}.")
        return TrainConfig(**{k: v for k, v in values.items() if k in names})


@dataclass
class StudySpec:
    """A validated study: its name, the preset it came from (if any) and the runs, in order."""

    name: str
    runs: list[RunSpec]
    preset: str | None = None
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)

    @property
    def quick(self) -> bool:
        """True for the quick preset (small subsets, few epochs): results say so."""
        return self.preset == "quick"

    def to_dict(self) -> dict[str, Any]:
        """The spec as written (`source`) plus the resolved list of runs with their ids."""
        return {
            "name": self.name,
            "preset": self.preset,
            "description": self.description,
            "plugins": self.plugins,
            "spec": self.source,
            "resolved_runs": [{"run_id": r.run_id, **r.to_dict()} for r in self.runs],
        }


_RUN_FIELDS: dict[str, str] = {
    "family": "a model family name",
    "dataset": "a data set name",
    "latent": "a positive integer",
    "epochs": "a positive integer",
    "loss": "a likelihood name or null",
    "seed": "a non-negative integer",
    "limit": "a positive integer or null",
    "batch_size": "a positive integer or null",
    "lr": "a positive number or null",
    "hyper": "a mapping of model hyper-parameters",
    "data_path": "a path or null",
}
_TOP_FIELDS = ("name", "preset", "description", "plugins", "defaults", "grid", "runs", "hyper")
_REQUIRED = ("family", "dataset", "latent", "epochs")


def preset_names() -> list[str]:
    """The built-in study presets (YAML files shipped in `varloss/presets/`)."""
    folder = resources.files("varloss") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_spec(preset_or_path: str | Path) -> StudySpec:
    """Read a built-in preset (`quick`, `paper`) or a YAML file into a validated StudySpec."""
    text_name = str(preset_or_path)
    if text_name in preset_names():
        text = (resources.files("varloss") / "presets" / f"{text_name}.yaml").read_text("utf-8")
        return parse_spec(text, where=f"preset {text_name}", preset=text_name)
    path = Path(preset_or_path)
    if not path.is_file():
        raise InputError(
            f"study spec {text_name!r} is neither a preset ({', '.join(preset_names())}) "
            "nor an existing YAML file."
        )
    return parse_spec(path.read_text("utf-8"), where=str(path))


def parse_spec(
    text_or_mapping: str | Mapping[str, Any],
    *,
    where: str = "study spec",
    preset: str | None = None,
) -> StudySpec:
    """Validate a spec (YAML text or an already-parsed mapping) into a StudySpec.

    Layout: `name`, optional `preset`/`description`, `defaults` (run fields applied to every
    run), `grid` (a mapping or a list of mappings whose list values are crossed), `runs` (a list
    of explicit runs) and `hyper` (family -> hyper-parameters). Every error names the field.
    """
    if isinstance(text_or_mapping, str):
        import yaml

        try:
            data = yaml.safe_load(text_or_mapping)
        except yaml.YAMLError as error:
            raise InputError(f"{where} is not valid YAML: {str(error).splitlines()[0]}") from None
    else:
        data = dict(text_or_mapping)
    if not isinstance(data, Mapping):
        raise InputError(f"{where} must be a YAML mapping with `grid` and/or `runs`.")
    unknown = sorted(set(data) - set(_TOP_FIELDS))
    if unknown:
        raise InputError(
            f"{where} field {unknown[0]!r} is unknown; expected one of {', '.join(_TOP_FIELDS)}."
        )
    name = data.get("name") or preset or "study"
    if not isinstance(name, str):
        raise InputError(f"{where} field 'name' must be a string, got {name!r}.")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise InputError(f"{where} field 'description' must be a string.")
    spec_preset = data.get("preset", preset)
    if spec_preset is not None and not isinstance(spec_preset, str):
        raise InputError(f"{where} field 'preset' must be a string, got {spec_preset!r}.")
    plugins = data.get("plugins") or []
    if isinstance(plugins, str):
        plugins = [plugins]
    if not isinstance(plugins, list) or not all(isinstance(p, str) and p for p in plugins):
        raise InputError(
            f"{where} field 'plugins' must be a list of module names or .py files that register "
            "model families."
        )
    from varloss.models import load_plugins

    load_plugins(plugins)  # before the runs are validated: they may name the plugins' families

    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise InputError(f"{where} field 'defaults' must be a mapping of run fields.")
    _check_keys(defaults, f"{where} defaults")
    family_hyper = data.get("hyper") or {}
    if not isinstance(family_hyper, Mapping) or not all(
        isinstance(v, Mapping) for v in family_hyper.values()
    ):
        raise InputError(f"{where} field 'hyper' must map family names to mappings.")

    raw_runs: list[tuple[str, dict[str, Any]]] = []
    grids = data.get("grid")
    if grids is not None:
        grid_list = [grids] if isinstance(grids, Mapping) else grids
        if not isinstance(grid_list, list) or not all(isinstance(g, Mapping) for g in grid_list):
            raise InputError(f"{where} field 'grid' must be a mapping or a list of mappings.")
        for g_index, grid in enumerate(grid_list):
            label = f"{where} grid" if isinstance(grids, Mapping) else f"{where} grid[{g_index}]"
            _check_keys(grid, label)
            axes = []
            for key, value in grid.items():
                values = value if isinstance(value, list) and key != "hyper" else [value]
                if not values:
                    raise InputError(f"{label}.{key} is an empty list; expected values to cross.")
                axes.append([(key, v) for v in values])
            for combination in itertools.product(*axes):
                raw_runs.append((label, dict(combination)))
    explicit = data.get("runs")
    if explicit is not None:
        if not isinstance(explicit, list) or not all(isinstance(r, Mapping) for r in explicit):
            raise InputError(f"{where} field 'runs' must be a list of mappings of run fields.")
        for r_index, run in enumerate(explicit):
            label = f"{where} runs[{r_index}]"
            _check_keys(run, label)
            raw_runs.append((label, dict(run)))
    if not raw_runs:
        raise InputError(f"{where} lists no runs; give a `grid` and/or `runs`.")

    runs: list[RunSpec] = []
    seen: set[str] = set()
    for label, raw in raw_runs:
        merged = {**defaults, **raw}
        family = merged.get("family")
        hyper = dict(family_hyper.get(family, {})) if isinstance(family, str) else {}
        hyper.update(defaults.get("hyper") or {})
        hyper.update(raw.get("hyper") or {})
        merged["hyper"] = hyper
        run = _validate_run(merged, label)
        if run.run_id not in seen:  # a grid and an explicit run may name the same run
            seen.add(run.run_id)
            runs.append(run)
    source = _json_safe(dict(data))
    return StudySpec(
        name=name,
        runs=runs,
        preset=spec_preset,
        description=description,
        source=source,
        plugins=list(plugins),
    )


def _check_keys(mapping: Mapping[str, Any], label: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in _RUN_FIELDS)
    if unknown:
        raise InputError(
            f"{label} field {unknown[0]!r} is unknown; expected one of {', '.join(_RUN_FIELDS)}."
        )


def _validate_run(values: Mapping[str, Any], label: str) -> RunSpec:
    from varloss.losses import LIKELIHOODS
    from varloss.models import MODEL_FAMILIES

    for name in _REQUIRED:
        if values.get(name) is None:
            raise InputError(f"{label} has no {name!r}; expected {_RUN_FIELDS[name]}.")

    def bad(name: str) -> InputError:
        return InputError(
            f"{label} field {name!r} must be {_RUN_FIELDS[name]}, got {values.get(name)!r}."
        )

    def integer(name: str, minimum: int, optional: bool = False) -> int | None:
        value = values.get(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise bad(name)
        return value

    family = values["family"]
    if family not in MODEL_FAMILIES:
        raise InputError(
            f"{label} field 'family' must be one of {', '.join(MODEL_FAMILIES)}, got {family!r}."
        )
    dataset = values["dataset"]
    if not isinstance(dataset, str) or not dataset:
        raise bad("dataset")
    from varloss.data import available_names

    if dataset.split(":", 1)[0] not in {*available_names(), "folder", "npz"}:
        raise InputError(
            f"{label} field 'dataset' must be one of {', '.join(available_names())}, "
            f"folder:PATH or npz:PATH, got {dataset!r}."
        )
    loss = values.get("loss")
    if loss is not None and loss not in LIKELIHOODS:
        raise InputError(
            f"{label} field 'loss' must be one of {', '.join(LIKELIHOODS)} or null, got {loss!r}."
        )
    # null means the family's default likelihood; resolve it so the run id names it
    loss = loss or MODEL_FAMILIES[family].config_class.default_loss
    lr = values.get("lr")
    if lr is not None and (
        isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf
    ):
        raise bad("lr")
    hyper = values.get("hyper") or {}
    if not isinstance(hyper, Mapping):
        raise bad("hyper")
    data_path = values.get("data_path")
    if data_path is not None and not isinstance(data_path, str):
        raise bad("data_path")
    return RunSpec(
        family=family,
        dataset=dataset,
        latent=integer("latent", 1),  # type: ignore[arg-type]
        epochs=integer("epochs", 1),  # type: ignore[arg-type]
        loss=loss,
        seed=integer("seed", 0) if values.get("seed") is not None else 0,  # type: ignore[arg-type]
        limit=integer("limit", 1, optional=True),
        batch_size=integer("batch_size", 1, optional=True),
        lr=float(lr) if lr is not None else None,
        hyper=dict(hyper),
        data_path=data_path,
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------------
# one run (the task every executor runs)


def execute_run(
    run: Mapping[str, Any],
    run_dir: str,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = False,
    plugins: Sequence[str] = (),
) -> dict[str, Any]:
    """Train one run into `run_dir` (resuming a partial one) and return its results row.

    Module-level and given plain data so that a process pool or a Dask worker can run it. A run
    whose `report.json` exists is not trained again. `progress` shows the trainer's per-batch
    bar (only where it has a terminal to itself: sequential runs in this process). `plugins`
    are imported first (modules registering the run's family; they must be importable where
    the run executes).
    """
    if plugins:
        from varloss.models import load_plugins

        load_plugins(plugins)
    spec = RunSpec(**run)
    directory = Path(run_dir)
    if not (directory / REPORT_FILE).is_file():
        if threads:
            import torch

            torch.set_num_threads(threads)
        from varloss.train import train

        resume = (directory / "checkpoint").exists()
        config = spec.train_config(directory, device)
        start = time.perf_counter()
        train(config, resume=resume, force=not resume and directory.exists(), progress=progress)
        seconds = time.perf_counter() - start
        timing = directory / RUN_TIMING_FILE
        previous = _read_json(timing).get("study_seconds", 0.0) if timing.is_file() else 0.0
        atomic_write_json(
            timing,
            {
                "run_id": spec.run_id,
                "settings": spec.settings(),
                "study_seconds": float(previous) + seconds,
                "resumed": resume,
            },
        )
    return collect_row(spec, directory)


def collect_row(run: RunSpec, run_dir: str | Path) -> dict[str, Any]:
    """The results row of a finished run: its settings and the metrics of its report.json."""
    directory = Path(run_dir)
    report = _read_json(directory / REPORT_FILE)
    row: dict[str, Any] = {
        "run_id": run.run_id,
        "family": run.family,
        "dataset": run.dataset,
        "latent": run.latent,
        "epochs": run.epochs,
        "loss": run.loss or _model_loss(directory) or "",
        "seed": run.seed,
        "limit": run.limit if run.limit is not None else "",
    }
    for key in METRIC_COLUMNS[:-1]:
        value = report.get(key)
        row[key] = float(value) if isinstance(value, int | float) else math.nan
    row["train_seconds"] = _train_seconds(report, directory)
    return row


def _model_loss(directory: Path) -> str | None:
    config = directory / "config.json"
    if config.is_file():
        model = _read_json(config).get("model", {})
        if isinstance(model, dict) and isinstance(model.get("loss"), str):
            return model["loss"]
    return None


def _train_seconds(report: Mapping[str, Any], directory: Path) -> float:
    """Training time recorded by the trainer, else the time the study measured around it."""
    candidates: list[Any] = [report.get("train_seconds")]
    for key in ("settings", "train", "training"):
        inner = report.get(key)
        if isinstance(inner, Mapping):
            candidates += [inner.get("train_seconds"), inner.get("seconds")]
    for value in candidates:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    timing = directory / RUN_TIMING_FILE
    if timing.is_file():
        value = _read_json(timing).get("study_seconds")
        if isinstance(value, int | float):
            return float(value)
    return math.nan


def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------------------
# results and fit


def write_results(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write results.csv (one row per finished run, RESULT_COLUMNS order) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k, "")) for k in RESULT_COLUMNS})
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)  # repr round-trips float64 exactly
    return value


def fit_line(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Least-squares y = slope * x + intercept (float64) with R² = 1 - SS_res / SS_tot.

    Pairs with a non-finite value are left out; fewer than 2 points or a constant x give
    None for the fitted numbers.
    """
    xs, ys = _finite_pairs(x, y)
    result: dict[str, Any] = {"slope": None, "intercept": None, "r2": None, "n": int(xs.size)}
    if xs.size < 2 or np.ptp(xs) == 0:
        return result
    design = np.column_stack([xs, np.ones_like(xs)])
    (slope, intercept), *_ = np.linalg.lstsq(design, ys, rcond=None)
    residual = ys - (slope * xs + intercept)
    result.update(slope=float(slope), intercept=float(intercept), r2=_r2(ys, residual))
    return result


def fit_origin(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Least-squares y = slope * x through the origin; R² against the mean (as for the line),
    so it can be compared with `fit_line` and is negative when the origin fit is worse than
    the mean."""
    xs, ys = _finite_pairs(x, y)
    result: dict[str, Any] = {"slope": None, "intercept": 0.0, "r2": None, "n": int(xs.size)}
    if xs.size < 1 or not np.any(xs):
        return result
    (slope,), *_ = np.linalg.lstsq(xs[:, None], ys, rcond=None)
    result.update(slope=float(slope), r2=_r2(ys, ys - slope * xs) if xs.size >= 2 else None)
    return result


def _finite_pairs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    xs = np.asarray(x, dtype=np.float64).ravel()
    ys = np.asarray(y, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise ValueError(f"x and y differ in length: {xs.size} and {ys.size}")
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


def _r2(ys: np.ndarray, residual: np.ndarray) -> float | None:
    total = float(np.sum((ys - ys.mean()) ** 2))
    if total == 0:
        return None
    return 1.0 - float(np.sum(residual**2)) / total


def fit_results(rows: Sequence[Mapping[str, Any]], spec: StudySpec | None = None) -> dict[str, Any]:
    """fit.json: variance loss against MSE for reconstructions and generated samples, by least
    squares with an intercept and through the origin, plus what produced them."""

    def column(name: str) -> np.ndarray:
        return np.array([_float(row.get(name)) for row in rows], dtype=np.float64)

    mse = column("mse")
    reconstructed = column("variance_loss_reconstructed")
    generated = column("variance_loss_generated")
    fit: dict[str, Any] = {
        "x": "mse",
        "y": "variance_loss_reconstructed / variance_loss_generated",
        "reconstructed": fit_line(mse, reconstructed),
        "generated": fit_line(mse, generated),
        "origin": fit_origin(mse, reconstructed),
        "generated_origin": fit_origin(mse, generated),
        "n_runs": len(rows),
        "families": sorted({str(row.get("family")) for row in rows}),
        "datasets": sorted({str(row.get("dataset")) for row in rows}),
    }
    if spec is not None:
        fit.update(
            name=spec.name,
            preset=spec.preset,
            quick=spec.quick,
            n_runs_planned=len(spec.runs),
            settings={"spec": spec.source},
        )
    return fit


def _float(value: Any) -> float:
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------------------------
# running the study


@dataclass
class StudyResult:
    """What a study call produced: rows of finished runs, the fit and the file paths."""

    out: Path
    rows: list[dict[str, Any]]
    fit: dict[str, Any]
    results_path: Path
    fit_path: Path
    figure_path: Path | None
    ran: list[str]
    skipped: list[str]
    failed: dict[str, str]
    seconds: float
    spec: StudySpec
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every run of the spec has finished."""
        return len(self.rows) == len(self.spec.runs)


def run_study(
    spec: StudySpec | str | Path,
    out: str | Path,
    *,
    executor: str = "local",
    jobs: int = 1,
    scheduler: str | None = None,
    device: str | None = None,
    progress: bool = True,
    dask_processes: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    command: str | None = None,
    skip_unavailable: bool = False,
) -> StudyResult:
    """Run (or continue) a study into `out` and write results.csv, fit.json and the figure.

    `executor="local"` trains runs one after another in this process (`jobs=1`) or in `jobs`
    processes; `"dask"` submits each run as a task to the cluster at `scheduler`
    (`tcp://HOST:PORT`; `out` must then be a path every worker can reach) or to a LocalCluster
    of `jobs` workers. Finished runs are skipped, interrupted ones resumed; results.csv is
    rewritten after every finished run, so stopping at any moment loses at most the runs in
    flight (which resume from their checkpoints next time). `command` (the CLI passes its command
    line) is recorded in fit.json's settings. With `skip_unavailable`, each data set is loaded
    once up front and the runs whose data set cannot be obtained (say CIFAR-10 offline) are left
    out with the reason instead of failing one by one.
    """
    start = time.perf_counter()
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    if executor not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}.")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"--jobs must be a positive integer, got {jobs!r}.")
    if scheduler is not None and executor != "dask":
        raise InputError("--scheduler is only used with --executor dask.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / ".study.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputError(
            f"--out {out} is in use by another `varloss study`; wait for it or use another folder."
        ) from None
    previous = _stop_on_sigterm()
    try:
        return _run_locked(
            spec,
            out,
            executor,
            jobs,
            scheduler,
            device,
            progress,
            dask_processes,
            on_row,
            start,
            command,
            skip_unavailable,
        )
    finally:
        lock.release()
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


def _unavailable_data(
    datasets: Iterable[tuple[str, str | None]],
) -> dict[tuple[str, str | None], str]:
    """Load each (data set, data_path) once, both splits; map those that fail to the reason."""
    from varloss.data import load

    reasons: dict[tuple[str, str | None], str] = {}
    for dataset, data_path in sorted(datasets, key=lambda key: (key[0], key[1] or "")):
        try:
            for split in ("train", "test"):
                load(dataset, split, data_path=data_path, limit=2)
        except (InputError, OSError) as error:
            reasons[(dataset, data_path)] = str(error)
    return reasons


def _stop_on_sigterm() -> Any:
    """Make `kill` stop the study like Ctrl-C (worker processes ended, lock released).

    Returns the previous handler, or None where handlers cannot be set (not the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _run_locked(
    spec: StudySpec,
    out: Path,
    executor: str,
    jobs: int,
    scheduler: str | None,
    device: str | None,
    progress: bool,
    dask_processes: bool,
    on_row: Callable[[dict[str, Any]], None] | None,
    start: float,
    command: str | None,
    skip_unavailable: bool = False,
) -> StudyResult:
    import yaml

    atomic_write_text(out / SPEC_FILE, yaml.safe_dump(spec.to_dict(), sort_keys=False))

    def run_dir(run: RunSpec) -> Path:
        return out / "runs" / run.run_id

    rows: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    pending: list[RunSpec] = []
    for run in spec.runs:
        if (run_dir(run) / REPORT_FILE).is_file():
            rows[run.run_id] = collect_row(run, run_dir(run))
            skipped.append(run.run_id)
        else:
            pending.append(run)
    unavailable: dict[str, str] = {}
    if skip_unavailable and pending:
        reasons = _unavailable_data({(run.dataset, run.data_path) for run in pending})
        unavailable = {
            run.run_id: reasons[(run.dataset, run.data_path)]
            for run in pending
            if (run.dataset, run.data_path) in reasons
        }
        pending = [run for run in pending if run.run_id not in unavailable]
    order = {run.run_id: i for i, run in enumerate(spec.runs)}

    def ordered_rows() -> list[dict[str, Any]]:
        return sorted(rows.values(), key=lambda r: order[r["run_id"]])

    results_path = write_results(ordered_rows(), out / RESULTS_FILE)
    ran: list[str] = []
    failed: dict[str, str] = {}
    bar = _progress_bar(
        len(spec.runs) - len(unavailable), len(skipped), enabled=progress, desc=spec.name
    )
    try:
        # absolute paths: workers (other processes, other machines) have their own cwd
        tasks = [(run, str(run_dir(run).resolve())) for run in pending]
        outcomes = _ticking(
            _execute(
                tasks,
                executor,
                jobs,
                scheduler,
                device,
                dask_processes,
                progress,
                spec.plugins,
            ),
            bar,
        )
        for run, outcome in outcomes:
            if isinstance(outcome, BaseException):
                failed[run.run_id] = f"{type(outcome).__name__}: {outcome}"
                bar.write(f"run {run.run_id} failed: {failed[run.run_id]}")
            else:
                rows[run.run_id] = outcome
                ran.append(run.run_id)
                write_results(ordered_rows(), results_path)
                if on_row is not None:
                    on_row(outcome)
            bar.update(1)
            bar.set_postfix_str(f"last: {run.family}/{run.dataset}", refresh=True)
    finally:
        if "outcomes" in locals():
            outcomes.close()  # stops the ticking thread and the runs in flight
        bar.close()

    final_rows = ordered_rows()
    fit = fit_results(final_rows, spec)
    if command:
        fit.setdefault("settings", {})["command"] = command
    fit_path = out / FIT_FILE
    atomic_write_json(fit_path, fit)
    figure_path = None
    if final_rows:
        figure_path = plot_study(
            final_rows, fit, out / FIGURE_FILE, title=f"Study {spec.name}", quick=spec.quick
        )
    return StudyResult(
        out=out,
        rows=final_rows,
        fit=fit,
        results_path=results_path,
        fit_path=fit_path,
        figure_path=figure_path,
        ran=ran,
        skipped=skipped,
        failed=failed,
        seconds=time.perf_counter() - start,
        spec=spec,
        unavailable=unavailable,
    )


def _ticking(
    outcomes: Iterator[Outcome], bar: Any, every: float | None = None
) -> Iterator[Outcome]:
    """Pass the outcomes through while a thread redraws the bar every `every` seconds, so that
    elapsed time and the estimate move during runs of several minutes. By default every second
    on a terminal, every 30 s when stderr goes to a file or pipe (a log gets a line per redraw)."""
    import threading

    from varloss._progress import LOG_INTERVAL_SECONDS, interactive

    if every is None:
        every = 1.0 if interactive() else LOG_INTERVAL_SECONDS

    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every):
            bar.refresh()

    thread = threading.Thread(target=tick, name="study-progress", daemon=True)
    if not bar.disable:
        thread.start()
    try:
        yield from outcomes
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()


def _progress_bar(total: int, done: int, *, enabled: bool, desc: str) -> Any:
    from varloss._progress import progress_bar

    return progress_bar(
        total=total,
        initial=done,
        desc=f"study {desc}",
        unit="run",
        disable=not enabled,
        dynamic_ncols=True,
        bar_format="{desc}: {n_fmt}/{total_fmt} runs |{bar}| elapsed {elapsed}, "
        "ETA {remaining}{postfix}",
    )


Outcome = tuple[RunSpec, "dict[str, Any] | BaseException"]


def _execute(
    tasks: list[tuple[RunSpec, str]],
    executor: str,
    jobs: int,
    scheduler: str | None,
    device: str | None,
    dask_processes: bool,
    progress: bool = False,
    plugins: Sequence[str] = (),
) -> Iterator[Outcome]:
    """Yield (run, row or the exception it raised) as runs finish, whatever the executor.

    Only sequential runs show the trainer's per-batch bar: bars from parallel workers would
    overwrite each other, so there the overall bar alone reports progress."""
    if not tasks:
        return iter(())
    plugins = list(plugins)
    if executor == "dask":
        return _execute_dask(tasks, jobs, scheduler, device, dask_processes, plugins)
    if jobs == 1:
        return _execute_sequential(tasks, device, progress, plugins)
    return _execute_processes(tasks, jobs, device, plugins)


def _execute_sequential(
    tasks: Iterable[tuple[RunSpec, str]],
    device: str | None,
    progress: bool = False,
    plugins: list[str] | None = None,
) -> Iterator[Outcome]:
    for run, directory in tasks:
        try:
            yield (
                run,
                execute_run(
                    run.to_dict(), directory, device, progress=progress, plugins=plugins or ()
                ),
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # one broken run must not sink the others
            yield run, error


def _threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def _execute_processes(
    tasks: list[tuple[RunSpec, str]], jobs: int, device: str | None, plugins: list[str]
) -> Iterator[Outcome]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked child of a process that already ran torch can deadlock.
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn")
    )
    try:
        futures = {
            pool.submit(
                execute_run,
                run.to_dict(),
                directory,
                device,
                _threads_per_job(jobs),
                plugins=plugins,
            ): run
            for run, directory in tasks
        }
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], error if error is not None else future.result()
    except BaseException:
        # stopped (Ctrl-C, kill): stop the runs in flight too; they resume from checkpoints
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)


def _execute_dask(
    tasks: list[tuple[RunSpec, str]],
    jobs: int,
    scheduler: str | None,
    device: str | None,
    processes: bool,
    plugins: list[str],
) -> Iterator[Outcome]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise InputError(
            "--executor dask needs Dask distributed; install it with `pip install varloss[dask]`."
        ) from None
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=jobs,
            threads_per_worker=1,
            processes=processes,
            # loopback only; an in-process (threads) cluster talks inproc:// and takes no host
            **({"host": "127.0.0.1"} if processes else {}),
            dashboard_address=":0",  # a free port: 8787 may be taken
        )
        client = Client(cluster)
        threads: int | None = _threads_per_job(jobs) if processes else None
    else:
        if not re.match(r"^[a-z]+://", scheduler):
            raise InputError(f"--scheduler must look like tcp://HOST:PORT, got {scheduler!r}.")
        client = Client(scheduler, timeout="30s")
        threads = None  # a remote worker knows its own machine
    try:
        futures = {
            client.submit(
                execute_run,
                run.to_dict(),
                directory,
                device,
                threads,
                plugins=plugins,
                key=f"varloss-study-{run.run_id}",
                pure=False,
            ): run
            for run, directory in tasks
        }
        for future in as_completed(futures):
            run = futures[future]
            if future.status == "finished":
                yield run, future.result()
            else:
                yield run, future.exception()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def summary_lines(result: StudyResult) -> list[str]:
    """A few lines for the terminal: what ran, the fit and where the files are."""
    spec = result.spec
    lines = [
        f"study {spec.name}{' (QUICK version)' if spec.quick else ''}: "
        f"{len(result.rows)}/{len(spec.runs)} runs finished "
        f"({len(result.ran)} trained now, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed"
        + (f", {len(result.unavailable)} left out" if result.unavailable else "")
        + f") in {result.seconds:.0f} s"
    ]
    for key, label in (
        ("reconstructed", "variance loss (reconstructions) vs MSE"),
        ("generated", "variance loss (generated samples) vs MSE"),
    ):
        values = result.fit.get(key) or {}
        if values.get("slope") is None:
            lines.append(f"{label}: not enough runs to fit (n={values.get('n', 0)})")
            continue
        r2 = values.get("r2")
        origin = result.fit.get("origin" if key == "reconstructed" else "generated_origin") or {}
        through = f"{origin['slope']:.3f}" if origin.get("slope") is not None else "n/a"
        lines.append(
            f"{label}: slope {values['slope']:.3f}, intercept {values['intercept']:.2e}, "
            f"R² {r2:.3f} (n={values['n']}); through the origin: slope {through}"
            if r2 is not None
            else f"{label}: slope {values['slope']:.3f}, R² n/a (n={values['n']})"
        )
    for run_id, message in result.failed.items():
        lines.append(f"failed: {run_id}: {message}")
    reasons: dict[str, list[str]] = {}
    for run_id, reason in result.unavailable.items():
        reasons.setdefault(reason, []).append(run_id)
    for reason, run_ids in reasons.items():
        runs = f"{len(run_ids)} run{'s' if len(run_ids) != 1 else ''}"
        lines.append(f"left out {runs}, data set unavailable: {reason}")
    if result.figure_path is not None:
        lines.append(f"figure: {result.figure_path} (and {result.figure_path.with_suffix('.svg')})")
    lines.append(f"results: {result.results_path}")
    lines.append(f"fit: {result.fit_path}")
    return lines
