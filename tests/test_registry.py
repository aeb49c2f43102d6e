"""The one registry helper: its duplicate policy and its unknown-name sentence, alone and
through real registries (model families, file readers, data sets, correction methods)."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from varloss._registry import Registry
from varloss.data import load, read_images, register_reader
from varloss.data.catalogue import DATASETS
from varloss.data.readers import READERS
from varloss.errors import InputError
from varloss.models import MODEL_FAMILIES, ModelConfig, create_model, register
from varloss.models.dense import DenseVAE
from varloss.samplers import parse_methods


def _one_sentence(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and text.endswith(".") and text.count(". ") == 0, text
    return text


def test_duplicate_policy_of_the_helper() -> None:
    colours = Registry("colour")
    red, other_red = object(), object()
    assert colours.register("red", red) is red
    assert colours.register("red", red) is red  # the very same object again: a no-op
    with pytest.raises(InputError) as refused:
        colours.register("red", other_red)
    text = _one_sentence(refused)
    assert text.startswith("colour 'red' is already registered (") and "replace=True" in text
    assert colours["red"] is red and len(colours) == 1  # a refusal changes nothing
    assert colours.register("red", other_red, replace=True) is other_red
    assert colours["red"] is other_red
    # Several names at once: all are checked before any is given.
    blue = object()
    with pytest.raises(InputError, match="colour 'red' is already registered"):
        colours.register_all(["blue", "red"], blue)
    assert "blue" not in colours
    colours.register_all(["blue", "navy"], blue)
    assert colours.names() == ["red", "blue", "navy"] and list(colours.items())[1] == ("blue", blue)
    assert colours.unregister("navy") is blue and "navy" not in colours
    with pytest.raises(InputError, match="a colour name must be a non-empty string"):
        colours.register("", blue)


def test_the_same_definition_imported_again_is_not_a_duplicate() -> None:
    """A plugin file imported twice defines new objects of the same module and qualified name:
    the newer takes the name. A lambda or a local function is never taken for another."""
    source = "def reader(path):\n    return path\n"
    first, second = (types.ModuleType("plugin_twice") for _ in range(2))
    exec(source, first.__dict__)  # noqa: S102 - two imports of one plugin file
    exec(source, second.__dict__)  # noqa: S102
    readers = Registry("reader")
    readers.register("x", first.reader)
    assert readers.register("x", second.reader) is second.reader
    assert readers["x"] is second.reader
    readers.register("y", lambda: 1)
    with pytest.raises(InputError, match="reader 'y' is already registered"):
        readers.register("y", lambda: 2)


def test_unknown_name_sentence_of_the_helper() -> None:
    colours = Registry("colour", hint="or give an RGB triple")
    colours.register("red", 1)
    colours.register("green", 2)
    with pytest.raises(InputError) as unknown:
        colours["blue"]
    assert _one_sentence(unknown) == (
        "unknown colour 'blue'; known: red, green; or give an RGB triple."
    )
    with pytest.raises(InputError, match=r"unknown colour \['red'\]; known: red, green;"):
        colours[["red"]]  # an unhashable name is unknown, not a TypeError
    assert colours.get("blue") is None and colours.get("red") == 1 and "blue" not in colours
    with pytest.raises(InputError, match="unknown colour 'blue'; known: none."):
        Registry("colour")["blue"]
    with pytest.raises(InputError, match="unknown colour 'blue'"):
        colours.unregister("blue")


def test_model_families_follow_the_one_policy() -> None:
    @dataclass
    class ImpostorConfig(ModelConfig):
        family: ClassVar[str] = "dense"

    class ImpostorVAE(DenseVAE):
        config_class = ImpostorConfig

    with pytest.raises(InputError) as refused:
        register(ImpostorVAE)
    assert "model family 'dense' is already registered (varloss.models.dense.DenseVAE)" in (
        _one_sentence(refused)
    )
    assert MODEL_FAMILIES["dense"] is DenseVAE and register(DenseVAE) is DenseVAE
    with pytest.raises(InputError) as unknown:
        create_model("vqvae", (1, 8, 8), 2)
    text = _one_sentence(unknown)
    assert text.startswith(f"unknown model family 'vqvae'; known: {', '.join(MODEL_FAMILIES)};")
    assert "VARLOSS_PLUGINS" in text


def test_file_readers_follow_the_one_policy(tmp_path, registered) -> None:
    def read_text_matrix(path, key, name):
        return np.loadtxt(path, ndmin=2)

    (tmp_path / "a.txt").write_text("0 0.5\n1 0.25\n")
    with pytest.raises(InputError, match="is not an array file"):
        read_images(tmp_path / "a.txt")
    registered(READERS, ".txt", read_text_matrix)
    np.testing.assert_array_equal(read_images(tmp_path / "a.txt"), [[0, 0.5], [1, 0.25]])
    register_reader(".txt", read_text_matrix)  # the same reader again: a no-op
    with pytest.raises(InputError, match="file suffix '.npy' is already registered"):
        register_reader((".tsv", ".npy"), read_text_matrix)
    assert ".tsv" not in READERS  # refused as a whole


def test_data_sets_and_methods_say_unknown_names_one_way() -> None:
    with pytest.raises(InputError) as unknown:
        load("imagenet")
    assert _one_sentence(unknown) == (
        f"unknown data set 'imagenet'; known: {', '.join(DATASETS)}; or folder:PATH and "
        "npz:PATH[:KEY]."
    )
    with pytest.raises(InputError, match="unknown correction method 'sharpen'; known: prior, "):
        parse_methods("match,sharpen")
    with pytest.raises(InputError, match="data set 'mnist' is already registered"):
        DATASETS.register("mnist", DATASETS["digits"])
