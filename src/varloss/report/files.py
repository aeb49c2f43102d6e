"""Reading what the pipelines wrote, through the run-folder layer (`varloss.runs`): every file is
checked against the folder's manifest before it is used, so a damaged file is named in one
sentence instead of being drawn as a wrong number.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from varloss.errors import InputError
from varloss.records import read_object  # noqa: F401 - the pages read JSON objects through it
from varloss.report.html import Figure, file_figure
from varloss.runs import MAPS_FILE, RunFolder

# The keys of a `varloss measure --json` file (VarianceReport.to_dict) that mark one.
MEASURE_KEY = "var_real"


def read_maps(folder: RunFolder, name: str = MAPS_FILE) -> dict[str, np.ndarray]:
    """The per-pixel variance maps (`var_*` arrays, float64) of `folder/name`, or {} when absent."""
    if not folder.exists(name):
        return {}
    folder.verify(name)
    path = folder.file(name)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {
                key: np.asarray(data[key], dtype=np.float64)
                for key in data.files
                if key.startswith("var_")
            }
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(
            f"{path} is not a readable .npz file of variance maps ({error})."
        ) from None


def embed(folder: RunFolder, name: str, **words: str) -> Figure | None:
    """`folder/name` (verified) as an embedded image with `title`, `caption`, `alt`; None when
    the folder has no such file."""
    if not folder.exists(name):
        return None
    folder.verify(name)
    return file_figure(folder.file(name), **words)


def read_measure_json(path: Path) -> dict[str, Any] | None:
    """The `varloss measure --json` output in `path`, or None when `path` is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, Mapping) and MEASURE_KEY in data else None


def find_measure_json(directory: Path) -> Path | None:
    """The first `varloss measure --json` output among the folder's *.json files, by name."""
    for path in sorted(directory.glob("*.json")):
        if read_measure_json(path) is not None:
            return path
    return None
