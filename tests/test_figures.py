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
from varloss.records import FitRecord, ResultsRow


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


# ---------------------------------------------------------------------------------------------
# family style: one home, used by the study and the spectrum figures


def test_every_family_has_its_own_marker_and_keeps_the_seed_s_colour() -> None:
    from varloss.figures import FAMILY_COLOURS, family_style

    builtin = ["dense", "conv", "resnet", "draw", "convdraw"]
    styles = {family: family_style(family) for family in builtin}
    assert len({style.marker for style in styles.values()}) == len(builtin)
    assert len({(style.colour, style.marker) for style in styles.values()}) == len(builtin)
    # the seed's colours: blue dense, red ResNet-like, green convolutional, yellow iterative
    assert styles["dense"].colour == "#1f5fbf" and styles["resnet"].colour == "#d62728"
    assert styles["conv"].colour == "#2ca02c"
    assert styles["draw"].colour == styles["convdraw"].colour == "#f2c500"
    assert styles["draw"].marker != styles["convdraw"].marker
    assert styles["draw"].edge != styles["draw"].colour  # yellow gets a dark edge
    assert {f: s.colour for f, s in styles.items()} == FAMILY_COLOURS
    # a family of one's own: a marker no built-in family uses, the same in every call
    tiny = family_style("tiny")
    assert tiny.marker not in {style.marker for style in styles.values()}
    assert tiny == family_style("tiny") and tiny.label == "tiny"


def _study_rows() -> list[ResultsRow]:
    rows = []
    for index, family in enumerate(["dense", "conv", "resnet", "draw", "convdraw"]):
        for shift, dataset in enumerate(["mnist", "fashion-mnist"]):
            mse = 0.01 * (index + 1) + 0.003 * shift
            rows.append(
                ResultsRow(run_id=f"{family}-{dataset}", family=family, dataset=dataset,
                           latent=8, epochs=3, loss="bernoulli", reconstruction="sample",
                           seed=0, mse=mse, variance_loss_reconstructed=0.9 * mse,
                           variance_loss_generated=0.7 * mse, bias2=0.0001, cov_term=0.0)
            )  # fmt: skip
    return rows


def test_study_figure_draws_each_family_in_its_marker_one_panel_per_data_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from varloss.figures import family_style, plot_study
    from varloss.figures import study as study_figure

    drawn = []
    monkeypatch.setattr(study_figure, "_save_png_and_svg", lambda plt, fig, path: drawn.append(fig))
    rows = _study_rows()
    fit = FitRecord.from_json(
        {"reconstructed": {"slope": 0.9, "intercept": 0.0, "r2": 1.0, "n": 10},
         "family_ratios": []}
    )  # fmt: skip
    plot_study(rows, fit, tmp_path / "figure.png")
    (fig,) = drawn
    titles = [axis.get_title() for axis in fig.axes]
    assert titles[:2] == [
        "Variance loss against MSE: fashion-mnist",
        "Variance loss against MSE: mnist",
    ]
    for axis, dataset in zip(fig.axes[:2], ["fashion-mnist", "mnist"], strict=True):
        # every point's (x, marker, colour): two per run (reconstructed, generated)
        points = {
            (round(float(line.get_xdata()[0]), 9), line.get_marker(), line.get_markerfacecolor())
            for line in axis.get_lines()
            if line.get_marker() not in ("None", None, "") and len(line.get_xdata()) == 1
        }
        expected = {
            (round(row.mse, 9), family_style(row.family).marker,
             family_style(row.family).colour)
            for row in rows
            if row.dataset == dataset
        }  # fmt: skip
        assert {(x, m, c) for x, m, c in points if c != "none"} == expected
        # y = x and the fitted line in each panel
        assert sum(len(line.get_xdata()) == 50 for line in axis.get_lines()) == 2
    # the legend shows each family in its marker and colour
    legend = {text.get_text(): handle for text, handle in
              zip(fig.axes[1].get_legend().get_texts(), fig.axes[1].get_legend().legend_handles,
                  strict=True)}  # fmt: skip
    for family in ["dense", "conv", "resnet", "draw", "convdraw"]:
        style = family_style(family)
        assert legend[style.label].get_marker() == style.marker
        assert legend[style.label].get_markerfacecolor() == style.colour


def test_spectrum_curves_take_family_markers_and_data_set_line_styles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt

    from varloss.figures import family_style
    from varloss.figures.spectrum import DATASET_LINESTYLES, kept_curves_figure
    from varloss.report import spectrum as report_spectrum
    from varloss.runs import RunFolder

    bands = [
        {"lo": 0.0, "hi": 0.25, "kept_reconstructed": 0.9, "kept_generated": 0.8},
        {"lo": 0.25, "hi": 0.5, "kept_reconstructed": 0.4, "kept_generated": 0.3},
    ]
    rows = _study_rows()
    for row in rows:
        RunFolder(tmp_path / "runs" / row.run_id).write_json(
            "report.json", {"spectrum": {"bands": bands, "high_frequency_radius": 0.25}}
        )
    captured = []
    original = kept_curves_figure

    def capture(curves, **options):
        captured.append(list(curves))
        return original(curves, **options)

    monkeypatch.setattr(report_spectrum, "kept_curves_figure", capture)
    section = report_spectrum.runs_spectrum_section(tmp_path, rows)
    assert section is not None
    (curves,) = captured
    assert len(curves) == len(rows)
    styles = {"fashion-mnist": DATASET_LINESTYLES[0], "mnist": DATASET_LINESTYLES[1]}
    for curve, row in zip(curves, rows, strict=True):
        style = family_style(row.family)
        assert (curve.marker, curve.colour, curve.edge) == (style.marker, style.colour, style.edge)
        assert curve.linestyle == styles[row.dataset]
        assert curve.label == f"{style.label}, {row.dataset}"
    figure = original(curves)
    lines = [line for line in figure.axes[0].get_lines() if line.get_marker() != "None"]
    assert [(line.get_marker(), line.get_linestyle()) for line in lines] == [
        (curve.marker, curve.linestyle) for curve in curves
    ]
    plt.close(figure)
