"""The figures package: pictures drawn from the numbers given, whatever the input layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from varloss.errors import InputError
from varloss.figures import (
    map_image,
    plot_variance_maps,
    save_image_grid,
    variance_map_panels,
)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_image_grid_reads_every_layout_through_the_one_converter(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)  # N x H x W x C, uint8
    as_floats = stored.transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # N x C x H x W in [0, 1]
    first = save_image_grid({"real": stored}, tmp_path / "uint8.png")
    second = save_image_grid({"real": as_floats}, tmp_path / "float.png")
    assert np.array_equal(_pixels(first), _pixels(second))
    # uint8 is scaled by 1/255, not clipped to white
    assert _pixels(first).std() > 10


def test_image_grid_shows_flat_rows_as_square_images_and_names_the_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    square = rng.random((4, 8, 8)).astype(np.float32)
    flat = save_image_grid({"x": square.reshape(4, 64)}, tmp_path / "flat.png")
    shaped = save_image_grid({"x": square}, tmp_path / "shaped.png")
    assert np.array_equal(_pixels(flat), _pixels(shaped))
    with pytest.raises(InputError, match="'odd'.*7 features"):
        save_image_grid({"odd": rng.random((2, 7))}, tmp_path / "odd.png")
    assert not (tmp_path / "odd.png").exists()


def test_map_image_folds_channels_and_flat_maps() -> None:
    rng = np.random.default_rng(2)
    maps = rng.random((3, 5, 6))
    image, note = map_image(maps)
    assert np.allclose(image, maps.sum(axis=0) / 3) and note == "mean over 3 channels"
    image, note = map_image(maps[0].reshape(-1)[:25])  # 25 features: a 5 x 5 square
    assert image.shape == (5, 5) and note == ""
    image, note = map_image(np.arange(7.0))
    assert image.shape == (1, 7) and note == "features in one row"


def test_variance_panels_and_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    real, reconstructed = rng.random((1, 4, 4)), rng.random((1, 4, 4))
    panels, diffs, _ = variance_map_panels(
        {"var_real": real, "var_reconstructed": reconstructed, "var_generated": None}
    )
    assert [label for label, _ in panels] == ["variance, real", "variance, reconstructed"]
    ((label, difference),) = diffs
    assert label == "real - reconstructed"
    assert np.array_equal(difference, real[0] - reconstructed[0])
    maps = {"var_real": real, "var_reconstructed": reconstructed}
    path = plot_variance_maps(maps, tmp_path / "m.png")
    assert _pixels(path).shape[1] > 300
