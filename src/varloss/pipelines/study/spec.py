"""The study spec: YAML (a preset or a file) -> a validated `StudySpec` of `RunSpec`s.

A run of the study is a `varloss train` run, so `RunSpec`'s fields are the `TrainConfig` fields
whose metadata names them study fields (`RUN_FIELDS`, with the same names, types and meanings),
and every run is checked by building its `TrainConfig`: a value the trainer refuses (say
`limit: 1`) is refused when the spec is read, before anything trains, with the trainer's
sentence. The spec adds what only it can check up front: that the family, the data set and the
likelihood are registered names.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from varloss._hashing import sha256_json
from varloss.data import available_names
from varloss.errors import InputError
from varloss.losses import LIKELIHOODS
from varloss.models import MODEL_FAMILIES, load_plugins
from varloss.train_config import (
    STUDY_DEFAULT,
    STUDY_OPTIONAL,
    STUDY_REQUIRED,
    TrainConfig,
    drop_later_defaults,
)

__all__ = ["RUN_FIELDS", "RunSpec", "StudySpec", "load_spec", "parse_spec", "preset_names"]

_PRESET_FOLDER = "presets"
_PRESET_SUFFIX = ".yaml"
_TOP_FIELDS = ("name", "preset", "description", "plugins", "defaults", "grid", "runs", "hyper")
_DATASET_FORMS = ("folder", "npz")  # folder:PATH and npz:PATH besides the registered names


class RunSettings:
    """What a study run adds to its train settings (the fields of `RunSpec`): its identity
    (run id, point id, training key) and its `TrainConfig`."""

    def settings(self) -> dict[str, Any]:
        """The settings that determine the result (JSON-safe, canonical key order)."""
        data = dataclasses.asdict(self)
        data.pop("data_path")
        drop_later_defaults(data, self.patience)  # as before these settings: the same run id
        data["hyper"] = {k: _json_safe(v) for k, v in sorted(self.hyper.items())}
        return data

    @property
    def run_id(self) -> str:
        """Readable and stable: the main settings plus a hash of all of them.

        e.g. `conv-mnist-z16-e2-bernoulli-s0-1a2b3c4d`; equal settings give equal ids on every
        machine, different settings (limit, lr, hyper-parameters...) give different ids.
        """
        digest = sha256_json(self.settings(), 8)
        dataset = re.sub(r"[^A-Za-z0-9]+", "_", self.dataset).strip("_")[:24] or "data"
        loss = self.loss or "default"
        return f"{self.family}-{dataset}-z{self.latent}-e{self.epochs}-{loss}-s{self.seed}-{digest}"

    @property
    def point_id(self) -> str:
        """The run id without the seed: runs that differ only in their seed share it (one point
        of the study's figure, with error bars across its seeds), e.g.
        `conv-mnist-z16-e2-bernoulli-5e6f7a8b`."""
        digest = sha256_json({**self.settings(), "seed": None}, 8)
        return f"{self.run_id.rsplit('-s', 1)[0]}-{digest}"

    @property
    def training_key(self) -> str:
        """A hash of the settings that decide what is trained: runs that differ only in their
        reconstruction protocol share it (the study trains their model once)."""
        return sha256_json({**self.settings(), "reconstruction": None}, 16)

    def to_dict(self) -> dict[str, Any]:
        """All fields (data_path included), JSON-safe; `RunSpec(**d)` rebuilds it."""
        return {**self.settings(), "data_path": self.data_path}

    def train_config(self, out: str | Path, device: str | None = None) -> TrainConfig:
        """The `TrainConfig` of this run writing into `out` on `device` (None: auto); the
        optional settings a run leaves out (None) take the trainer's defaults."""
        values = {name: getattr(self, name) for name in RUN_FIELDS}
        values["hyper"] = dict(self.hyper)
        values.update(out=str(out), device=device)
        defaulted = {*_OPTIONAL, "device"}
        return TrainConfig(
            **{k: v for k, v in values.items() if not (v is None and k in defaulted)}
        )


def _run_fields() -> list[tuple[str, Any, Any]]:
    """RunSpec's fields: each TrainConfig field whose metadata names it a study field, in
    TrainConfig's order, with its type and (unless the study requires it) a default: the
    TrainConfig default (`STUDY_DEFAULT`) or None, the trainer's default (`STUDY_OPTIONAL`)."""
    fields = []
    for spec in dataclasses.fields(TrainConfig):
        kind = spec.metadata["study"]
        if kind == STUDY_REQUIRED:
            fields.append((spec.name, spec.type, field()))
        elif kind == STUDY_DEFAULT and spec.default_factory is not dataclasses.MISSING:
            fields.append((spec.name, spec.type, field(default_factory=spec.default_factory)))
        elif kind == STUDY_DEFAULT:
            fields.append((spec.name, spec.type, field(default=spec.default)))
        elif kind == STUDY_OPTIONAL:
            fields.append((spec.name, f"{spec.type} | None", field(default=None)))
    return fields


RunSpec = dataclasses.make_dataclass("RunSpec", _run_fields(), bases=(RunSettings,))
RunSpec.__module__ = __name__  # where pickle (process pools, Dask) finds it
RunSpec.__doc__ = """One training run of the study: the `TrainConfig` settings that define it
(`_run_fields`), each with the meaning of the TrainConfig field of the same name.

`loss=None` means the family's default likelihood, `limit=None` the whole training split,
`batch_size`/`lr`/`validation`/`min_delta=None` the trainer's defaults; `data_path` says where
the data lives and is not part of the run's identity. `reconstruction` (mean or sample),
`patience`, `validation` and `min_delta` are left out of the run id at their defaults, so
earlier ids stay the same.
"""
RUN_FIELDS = tuple(spec.name for spec in dataclasses.fields(RunSpec))


def _study_fields(kind: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["study"] == kind)


_REQUIRED = _study_fields(STUDY_REQUIRED)  # every run must give these
_OPTIONAL = _study_fields(STUDY_OPTIONAL)  # None: the trainer's default


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


# ---------------------------------------------------------------------------------------------
# reading a spec


def preset_names() -> list[str]:
    """The built-in study presets (YAML files shipped in `varloss/presets/`)."""
    folder = resources.files("varloss") / _PRESET_FOLDER
    return sorted(
        p.name.removesuffix(_PRESET_SUFFIX)
        for p in folder.iterdir()
        if p.name.endswith(_PRESET_SUFFIX)
    )


def load_spec(preset_or_path: str | Path) -> StudySpec:
    """Read a built-in preset (`quick`, `paper`) or a YAML file into a validated StudySpec."""
    text_name = str(preset_or_path)
    if text_name in preset_names():
        preset_file = resources.files("varloss") / _PRESET_FOLDER / (text_name + _PRESET_SUFFIX)
        text = preset_file.read_text("utf-8")
        return parse_spec(text, where=f"preset {text_name}", preset=text_name)
    path = Path(preset_or_path)
    if not path.is_file():
        raise InputError(
            f"study spec {text_name!r} is neither a preset ({', '.join(preset_names())}) "
            "nor an existing YAML file."
        )
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"study spec {text_name!r} is not UTF-8 text (byte {error.start} is "
            f"{error.object[error.start : error.start + 1]!r}); expected a YAML file saved as "
            "UTF-8."
        ) from None
    return parse_spec(text, where=str(path))


def parse_spec(
    text_or_mapping: str | Mapping[str, Any],
    *,
    where: str = "study spec",
    preset: str | None = None,
) -> StudySpec:
    """Validate a spec (YAML text or an already-parsed mapping) into a StudySpec.

    Layout: `name`, optional `preset`/`description`/`plugins`, `defaults` (run fields applied to
    every run), `grid` (a mapping or a list of mappings whose list values are crossed), `runs` (a
    list of explicit runs) and `hyper` (family -> hyper-parameters). Every error names the field.
    """
    data = _read_mapping(text_or_mapping, where)
    name = _string_field(data, "name", where) or preset or "study"
    description = _string_field(data, "description", where) or ""
    spec_preset = _string_field(data, "preset", where) if "preset" in data else preset
    plugins = _plugins_field(data, where)
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
    raw_runs = _grid_runs(data.get("grid"), where) + _explicit_runs(data.get("runs"), where)
    if not raw_runs:
        raise InputError(f"{where} lists no runs; give a `grid` and/or `runs`.")
    runs: dict[str, RunSpec] = {}  # by run id: a grid and an explicit run may name the same run
    for label, raw in raw_runs:
        merged = {**defaults, **raw}
        family = merged.get("family")
        hyper = dict(family_hyper.get(family, {})) if isinstance(family, str) else {}
        hyper.update(defaults.get("hyper") or {})
        hyper.update(raw.get("hyper") or {})
        for seed in _seeds(merged.get("seed", 0), label):  # `seed: [0, 1, 2]`: one run each
            run = _validate_run({**merged, "hyper": hyper, "seed": seed}, label)
            runs.setdefault(run.run_id, run)
    return StudySpec(
        name=name,
        runs=list(runs.values()),
        preset=spec_preset,
        description=description,
        source=_json_safe(dict(data)),
        plugins=plugins,
    )


def _read_mapping(text_or_mapping: str | Mapping[str, Any], where: str) -> dict[str, Any]:
    """The spec as a mapping with known top-level fields only."""
    if isinstance(text_or_mapping, str):
        try:
            data = yaml.safe_load(text_or_mapping)
        except yaml.YAMLError as error:
            raise InputError(f"{where} is not valid YAML: {str(error).splitlines()[0]}") from None
    else:
        data = dict(text_or_mapping)
    if not isinstance(data, Mapping):
        raise InputError(f"{where} must be a YAML mapping with `grid` and/or `runs`.")
    unknown = sorted(str(k) for k in data if k not in _TOP_FIELDS)
    if unknown:
        raise InputError(
            f"{where} field {unknown[0]!r} is unknown; expected one of {', '.join(_TOP_FIELDS)}."
        )
    return dict(data)


def _string_field(data: Mapping[str, Any], name: str, where: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{where} field {name!r} must be a string, got {value!r}.")
    return value


def _plugins_field(data: Mapping[str, Any], where: str) -> list[str]:
    plugins = data.get("plugins") or []
    if isinstance(plugins, str):
        plugins = [plugins]
    if not isinstance(plugins, list) or not all(isinstance(p, str) and p for p in plugins):
        raise InputError(
            f"{where} field 'plugins' must be a list of module names or .py files that register "
            "model families."
        )
    return list(plugins)


def _grid_runs(grids: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, run fields) for every combination of every grid, in order."""
    if grids is None:
        return []
    grid_list = [grids] if isinstance(grids, Mapping) else grids
    if not isinstance(grid_list, list) or not all(isinstance(g, Mapping) for g in grid_list):
        raise InputError(f"{where} field 'grid' must be a mapping or a list of mappings.")
    runs = []
    for index, grid in enumerate(grid_list):
        label = f"{where} grid" if isinstance(grids, Mapping) else f"{where} grid[{index}]"
        _check_keys(grid, label)
        axes = []
        for key, value in grid.items():
            values = value if isinstance(value, list) and key != "hyper" else [value]
            if not values:
                raise InputError(f"{label}.{key} is an empty list; expected values to cross.")
            axes.append([(key, v) for v in values])
        runs += [(label, dict(combination)) for combination in itertools.product(*axes)]
    return runs


def _seeds(value: Any, label: str) -> list[Any]:
    """A run's seeds: a list gives one run per seed (each checked by `_validate_run`)."""
    if not isinstance(value, list):
        return [value]
    if not value:
        raise InputError(f"{label} field 'seed' is an empty list; expected seeds to run.")
    return list(value)


def _explicit_runs(explicit: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    if explicit is None:
        return []
    if not isinstance(explicit, list) or not all(isinstance(r, Mapping) for r in explicit):
        raise InputError(f"{where} field 'runs' must be a list of mappings of run fields.")
    runs = []
    for index, run in enumerate(explicit):
        label = f"{where} runs[{index}]"
        _check_keys(run, label)
        runs.append((label, dict(run)))
    return runs


def _check_keys(mapping: Mapping[str, Any], label: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in RUN_FIELDS)
    if unknown:
        raise InputError(
            f"{label} field {unknown[0]!r} is unknown; expected one of {', '.join(RUN_FIELDS)}."
        )


# ---------------------------------------------------------------------------------------------
# one run


def _validate_run(values: Mapping[str, Any], label: str) -> RunSpec:
    """A RunSpec from one run's fields: names checked here, every value by the trainer's rules."""
    for name in _REQUIRED:
        if values.get(name) is None:
            raise InputError(f"{label} has no {name!r}; every run needs {', '.join(_REQUIRED)}.")
    _check_names(values, label)
    if not isinstance(values.get("hyper") or {}, Mapping):
        raise InputError(f"{label} field 'hyper' must be a mapping of model hyper-parameters.")
    run = RunSpec(**{**values, "hyper": dict(values.get("hyper") or {})})
    # null means the family's default likelihood; resolved so that the run id names it
    run.loss = run.loss or MODEL_FAMILIES[run.family].config_class.default_loss
    try:
        run.train_config(out=".")  # every value checked by the trainer's rules
    except InputError as error:
        raise InputError(f"{label}: {error}") from None
    if run.lr is not None:
        run.lr = float(run.lr)
    return run


def _check_names(values: Mapping[str, Any], label: str) -> None:
    """Family, data set and likelihood must be registered names (plugins included)."""
    family = values["family"]
    if family not in MODEL_FAMILIES:
        raise InputError(
            f"{label} field 'family' must be one of {', '.join(MODEL_FAMILIES)}, got {family!r}."
        )
    dataset = values["dataset"]
    names = available_names()
    if not isinstance(dataset, str) or dataset.split(":", 1)[0] not in {*names, *_DATASET_FORMS}:
        raise InputError(
            f"{label} field 'dataset' must be one of {', '.join(names)}, "
            f"folder:PATH or npz:PATH, got {dataset!r}."
        )
    loss = values.get("loss")
    if loss is not None and loss not in LIKELIHOODS:
        raise InputError(
            f"{label} field 'loss' must be one of {', '.join(LIKELIHOODS)} or null, got {loss!r}."
        )


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
