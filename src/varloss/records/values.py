"""One rule per kind of value in the files a run folder holds: numbers, integers, flags, text and
intervals, from a CSV cell (text) or a JSON value alike. Every record parses through these, so a
number means the same in results.csv and report.json, and a bad value is one sentence naming the
file, the place and what was expected.

Blank cells, JSON nulls and NaN are "not recorded" (None): results.csv writes a missing metric as
an empty cell, and JSON has no NaN. Booleans accept the spellings earlier files used (Python's
`True`/`False` in CSV, JSON's true/false, 1/0, yes/no; any case).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from varloss.errors import InputError

__all__ = ["flag", "integer", "interval", "mapping", "number", "text"]

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _bad(where: str, expected: str, value: Any) -> InputError:
    return InputError(f"{where}: expected {expected}, got {value!r}.")


def number(value: Any, where: str) -> float | None:
    """A float (float64); None when blank, null or NaN."""
    if _missing(value):
        return None
    if isinstance(value, bool):
        raise _bad(where, "a number", value)
    if isinstance(value, int | float):
        parsed = float(value)
    elif isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            raise _bad(where, "a number", value) from None
    else:
        raise _bad(where, "a number", value)
    return None if math.isnan(parsed) else parsed


def integer(value: Any, where: str) -> int | None:
    """An int (integral text such as "3" or "3.0" too); None when blank or null."""
    if _missing(value):
        return None
    if isinstance(value, bool):
        raise _bad(where, "an integer", value)
    if isinstance(value, int):
        return value
    try:
        parsed = float(value) if isinstance(value, str | float) else math.nan
    except ValueError:
        raise _bad(where, "an integer", value) from None
    if not parsed.is_integer():
        raise _bad(where, "an integer", value)
    return int(parsed)


def flag(value: Any, where: str) -> bool | None:
    """True or False in any spelling earlier files used; None when blank or null."""
    if _missing(value):
        return None
    if isinstance(value, bool):
        return value
    spelled = str(value).strip().lower()
    if spelled in _TRUE:
        return True
    if spelled in _FALSE:
        return False
    raise _bad(where, "true or false", value)


def text(value: Any, where: str, *, required: bool = False) -> str | None:
    """A string (numbers written as text are kept as their text); None when blank or null,
    an InputError then when `required`."""
    if _missing(value):
        if required:
            raise InputError(f"{where}: expected a value, found none.")
        return None
    if isinstance(value, Mapping | list | tuple):
        raise _bad(where, "a text value", value)
    return str(value)


def interval(value: Any, where: str) -> tuple[float, float] | None:
    """[low, high] as a pair of floats; None when null."""
    if _missing(value):
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _bad(where, "a [low, high] pair", value)
    low, high = (number(item, where) for item in value)
    if low is None or high is None:
        raise _bad(where, "a [low, high] pair of numbers", value)
    return (low, high)


def mapping(value: Any, where: str) -> dict[str, Any]:
    """A JSON object as a dict; {} when null or absent."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(where, "an object", value)
    return dict(value)
