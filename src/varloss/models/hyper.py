"""Model hyper-parameters from the user (`--set KEY=VALUE`, a study spec, `create_model(**hyper)`),
checked against the family config's field types, never coerced: "64" is not [6, 4].

    check_hyper(DenseConfig, {"hidden_sizes": [512, 256]})  ->  {"hidden_sizes": (512, 256)}
    check_hyper(DenseConfig, {"hidden_sizes": 64})           ->  InputError naming the field
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Union

from varloss.errors import InputError
from varloss.models.base import ModelConfig

# Set by create_model's own arguments, not through hyper-parameters.
POSITIONAL = {"image_shape", "latent_dim", "loss"}


def parse_settings(pairs: Iterable[str] | None) -> dict[str, Any]:
    """`KEY=VALUE` strings as a dict; a VALUE is JSON when it parses (numbers, lists, true,
    null), else the string itself (`activation=elu`). Types are checked by `check_hyper`."""
    settings: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {pair!r} must be KEY=VALUE, e.g. hidden_sizes=[512,256].")
        try:
            settings[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            settings[key.strip()] = text
    return settings


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON-like value is of the annotated type (lists stand for tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            return False
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return all(_matches(item, args[0]) for item in value) if args else True
        return len(value) == len(args) and all(map(_matches, value, args))
    if origin is dict:
        key_type, value_type = args or (Any, Any)
        return isinstance(value, dict) and all(
            _matches(k, key_type) and _matches(v, value_type) for k, v in value.items()
        )
    return isinstance(value, origin or hint)


def _example(hint: Any) -> str:
    """How to write a value of `hint` on the command line."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return _example(next(a for a in typing.get_args(hint) if a is not type(None)))
    if origin in (tuple, list):
        return "a JSON list, e.g. [512, 256]"
    if origin is dict:
        return 'a JSON object, e.g. {"sigma": 0.1}'
    return "e.g. " + {bool: "true", int: "64", float: "0.5", str: "relu"}.get(hint, "null")


def check_hyper(
    config_class: type[ModelConfig], hyper: dict[str, Any], family: str | None = None
) -> dict[str, Any]:
    """`hyper` checked against `config_class`'s fields (names and types), lists made tuples."""
    family = family or config_class.family
    hints = typing.get_type_hints(config_class)
    settable = sorted({f.name for f in dataclasses.fields(config_class)} - POSITIONAL)
    unknown = sorted(set(hyper) - set(settable))
    if unknown:
        raise InputError(
            f"{family} model hyper-parameters {unknown} are unknown; valid: {', '.join(settable)}."
        )
    for name, value in hyper.items():
        hint = hints[name]
        if not _matches(value, hint):
            shown = str(hint) if typing.get_origin(hint) else getattr(hint, "__name__", hint)
            raise InputError(
                f"{family} model hyper-parameter {name} must be {shown} ({_example(hint)}), "
                f"got {json.dumps(value) if _is_json(value) else repr(value)}."
            )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
