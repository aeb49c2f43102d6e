"""measure() and `varloss measure`: numbers against numpy, every input kind, every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import varloss
from varloss.cli import app
from varloss.data import read_images
from varloss.errors import InputError


@pytest.fixture()
def sets() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    real = rng.random((240, 1, 6, 5))
    reconstructed = 0.7 * real + 0.1 * rng.random(real.shape)
    generated = 0.5 * rng.random((130, 1, 6, 5)) + 0.2
    return real, reconstructed, generated


def _numpy_reference(real, reconstructed, generated) -> dict[str, float]:
    x, y, g = (a.reshape(len(a), -1).astype(np.float64) for a in (real, reconstructed, generated))
    return {
        "var_real": np.var(x, axis=0).mean(),
        "var_reconstructed": np.var(y, axis=0).mean(),
        "var_generated": np.var(g, axis=0).mean(),
        "mse": ((x - y) ** 2).mean(),
        "bias2": ((x - y).mean(axis=0) ** 2).mean(),
        "cov_term": 2 * ((y - y.mean(0)) * ((x - y) - (x - y).mean(0))).mean(0).mean(),
        "variance_loss_reconstructed": np.var(x, axis=0).mean() - np.var(y, axis=0).mean(),
        "variance_loss_generated": np.var(x, axis=0).mean() - np.var(g, axis=0).mean(),
    }


def test_measure_matches_numpy_to_1e9(sets) -> None:
    report = varloss.measure(*sets, batch_size=37)
    for key, value in _numpy_reference(*sets).items():
        assert getattr(report, key) == pytest.approx(value, rel=1e-9), key
    assert (report.n_real, report.n_reconstructed, report.n_generated) == (240, 240, 130)
    assert report.dims == [1, 6, 5]
    assert report.maps["var_real"].shape == (1, 6, 5)
    np.testing.assert_allclose(report.maps["var_real"], np.var(sets[0], axis=0), rtol=1e-12)
    x, y = (a.reshape(len(a), -1) for a in sets[:2])
    numpy_ratio = (np.var(x, axis=0).mean() - np.var(y, axis=0).mean()) / ((x - y) ** 2).mean()
    assert report.ratio_reconstructed == pytest.approx(numpy_ratio, rel=1e-9)


def test_files_folders_tensors_and_iterables_give_the_same_numbers(sets, tmp_path: Path) -> None:
    real, reconstructed, generated = sets
    real8 = (real * 255).round().astype(np.uint8)
    gen8 = (generated * 255).round().astype(np.uint8)
    np.save(tmp_path / "real.npy", real8)
    np.savez(tmp_path / "gen.npz", samples=gen8, other=gen8[:3])
    folder = tmp_path / "gen_png"
    folder.mkdir()
    for i, image in enumerate(gen8[:, 0]):
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    from_arrays = varloss.measure(real8, generated=gen8)
    from_files = varloss.measure(
        str(tmp_path / "real.npy"), generated=f"{tmp_path}/gen.npz:samples"
    )
    from_folder = varloss.measure(torch.from_numpy(real8), generated=folder)
    batches = (gen8[i : i + 50] for i in range(0, len(gen8), 50))
    from_iterable = varloss.measure(list(np.array_split(real8, 7)), generated=batches)
    reference = np.var(real8.reshape(240, -1) / 255.0, axis=0).mean()
    # PyTorch users' files: torch.save (a tensor, or a dict by key) and safetensors.
    from safetensors.torch import save_file

    torch.save(torch.from_numpy(real8), tmp_path / "real.pt")
    torch.save({"samples": torch.from_numpy(gen8), "step": 3}, tmp_path / "gen.pth")
    save_file({"samples": torch.from_numpy(gen8)}, str(tmp_path / "gen.safetensors"))
    from_torch = varloss.measure(str(tmp_path / "real.pt"), generated=f"{tmp_path}/gen.pth:samples")
    from_safetensors = varloss.measure(real8, generated=tmp_path / "gen.safetensors")
    reports = (from_arrays, from_files, from_folder, from_iterable, from_torch, from_safetensors)
    for report in reports:
        assert report.var_real == pytest.approx(reference, rel=1e-12)
        assert report.var_generated == pytest.approx(from_arrays.var_generated, rel=1e-12)
    with pytest.raises(InputError, match="has no array 'x'; it holds: samples"):
        varloss.measure(real8, generated=f"{tmp_path}/gen.safetensors:x")
    with pytest.raises(InputError, match="holds one tensor, not named arrays"):
        varloss.measure(f"{tmp_path}/real.pt:x", generated=gen8)
    import datetime

    torch.save(datetime.date(2026, 1, 1), tmp_path / "code.pt")  # a global: weights_only refuses
    with pytest.raises(InputError, match="never runs code stored in one") as refused:
        varloss.measure(tmp_path / "code.pt", generated=gen8)
    assert "weights_only" not in str(refused.value)  # varloss's sentence, not torch's advice


def test_reconstructions_pair_across_different_batch_splits(sets) -> None:
    real, reconstructed, _ = sets
    split_a = np.array_split(real, [10, 11, 200])
    split_b = np.array_split(reconstructed, 9)
    report = varloss.measure(iter(split_a), iter(split_b))
    assert report.mse == pytest.approx(((real - reconstructed) ** 2).mean(), rel=1e-12)


def test_channels_last_images_are_detected_and_broken_down_per_channel() -> None:
    rng = np.random.default_rng(1)
    nhwc = rng.random((50, 8, 8, 3))
    report = varloss.measure(nhwc, nhwc * 0.5)
    assert report.dims == [3, 8, 8]
    expected = [np.var(nhwc[..., c], axis=0).mean() for c in range(3)]
    np.testing.assert_allclose(report.per_channel["var_real"], expected, rtol=1e-12)


def test_value_range_maps_a_set_to_unit_range(sets) -> None:
    real, _, generated = sets
    plain = varloss.measure(real, generated=generated)
    shifted = varloss.measure(real, generated=generated * 2 - 1, value_range={"generated": (-1, 1)})
    assert shifted.var_generated == pytest.approx(plain.var_generated, rel=1e-12)
    with pytest.raises(InputError, match=r"generated values lie in .*--range generated=-1,1"):
        varloss.measure(real, generated=generated * 2 - 1.4)
    with pytest.raises(InputError, match=r"\[0, 255\]"):
        varloss.measure(real, real * 255)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: (r, r[:-1]), "reconstructed has 239 samples but real has 240"),
        (
            lambda r: (r, r[:, :, :5, :4]),
            "reconstructed samples are 1 x 5 x 4 but real samples are",
        ),
        (lambda r: (np.where(r > 0.99, np.nan, r), r), "real contains NaN"),
        (lambda r: (r, np.where(r > 0.99, np.inf, r)), "reconstructed contains NaN or infinite"),
        (lambda r: (r[:0], r[:0]), "real is empty"),
        (lambda r: (r[:1], r[:1]), "real has 1 sample"),
        (lambda r: (r[0, 0, 0], r[0, 0, 0]), "real has shape 5; expected N x D"),
    ],
)
def test_bad_inputs_raise_one_clear_sentence(sets, make, message: str) -> None:
    real, reconstructed = make(sets[0])
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        varloss.measure(real, reconstructed)


def test_read_images_scales_uint8(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", array)
    images = read_images(tmp_path / "a.npy")
    assert images.shape == (2, 1, 3, 4)
    np.testing.assert_allclose(images[:, 0], array / 255.0)


# --------------------------------------------------------------------------------------------
# the CLI


def test_cli_writes_json_and_maps(sets, tmp_path: Path) -> None:
    real, reconstructed, generated = sets
    for name, array in (("real", real), ("recon", reconstructed), ("gen", generated)):
        np.save(tmp_path / f"{name}.npy", array)
    result = CliRunner().invoke(
        app,
        [
            "measure",
            "--real",
            str(tmp_path / "real.npy"),
            "--reconstructed",
            str(tmp_path / "recon.npy"),
            "--generated",
            str(tmp_path / "gen.npy"),
            "--json",
            str(tmp_path / "out.json"),
            "--maps",
            str(tmp_path / "maps.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "out.json").read_text())
    keys = {
        "n_real",
        "n_reconstructed",
        "n_generated",
        "dims",
        "var_real",
        "var_reconstructed",
        "var_generated",
        "variance_loss_reconstructed",
        "variance_loss_generated",
        "mse",
        "bias2",
        "cov_term",
        "settings",
    }
    assert keys <= set(saved)
    for key, value in _numpy_reference(*sets).items():
        assert saved[key] == pytest.approx(value, rel=1e-9)
    assert (tmp_path / "maps.png").stat().st_size > 1000
    assert "ratio loss / mse" in result.output


_DRIVER = """
import contextlib, io, json, sys
from varloss.cli import run
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    sys.argv = ["varloss", "measure", *args]
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            run()
        except SystemExit as exit:
            code = exit.code
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def _cli_many(cases: list[list[str]]) -> list[tuple[int, str]]:
    """Run `varloss measure` through the console-script entry point once per argument list.

    One fresh interpreter for all cases (importing torch once keeps this test fast); each case
    goes through `varloss.cli:run`, which is what the installed `varloss` script calls.
    """
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return [tuple(r) for r in json.loads(done.stdout.strip().splitlines()[-1])]


@pytest.mark.slow
def test_cli_bad_inputs_exit_non_zero_without_traceback_or_output(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    np.save(tmp_path / "real.npy", rng.random((20, 4)))
    np.save(tmp_path / "short.npy", rng.random((19, 4)))
    np.save(tmp_path / "nan.npy", np.full((20, 4), np.nan))
    np.save(tmp_path / "wide.npy", rng.random((20, 4)) * 2 - 1)
    np.save(tmp_path / "one.npy", rng.random((1, 4)))
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    np.save(tmp_path / "narrow.npy", rng.random((20, 3)))
    np.savez(tmp_path / "two.npz", a=rng.random((20, 4)), b=rng.random((20, 4)))
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    np.save(tmp_path / "complex.npy", rng.random((20, 4)) + 1j)
    np.save(tmp_path / "uint16.npy", rng.integers(0, 65536, (20, 4), dtype=np.uint16))
    np.save(tmp_path / "scalar.npy", np.array(0.5))
    real = str(tmp_path / "real.npy")
    out = tmp_path / "out.json"
    cases = {
        "reconstructed has 19 samples": [
            "--real",
            real,
            "--reconstructed",
            str(tmp_path / "short.npy"),
        ],
        "reconstructed samples are 3": [
            "--real",
            real,
            "--reconstructed",
            str(tmp_path / "narrow.npy"),
        ],
        "contains NaN": ["--real", real, "--reconstructed", str(tmp_path / "nan.npy")],
        "real has 1 sample": ["--real", str(tmp_path / "one.npy"), "--generated", real],
        "real is empty": ["--real", str(tmp_path / "empty.npy"), "--generated", real],
        "neither an existing path": ["--real", real, "--generated", str(tmp_path / "missing.npy")],
        "could not be read as .npy": ["--real", real, "--generated", str(tmp_path / "broken.npy")],
        "has no array 'c'": ["--real", real, "--generated", f"{tmp_path}/two.npz:c"],
        "holds 2 arrays": ["--real", real, "--generated", str(tmp_path / "two.npz")],
        "rescale one of them": ["--real", real, "--generated", str(tmp_path / "wide.npy")],
        "expected real numbers": ["--real", real, "--generated", str(tmp_path / "complex.npy")],
        "declare it": ["--real", real, "--generated", str(tmp_path / "uint16.npy")],
        "a 0-d array": ["--real", real, "--generated", str(tmp_path / "scalar.npy")],
    }
    results = _cli_many([[*args, "--json", str(out)] for args in cases.values()])
    for message, (code, stderr) in zip(cases, results, strict=True):
        assert code == 2, (message, stderr)
        assert message in stderr, (message, stderr)
        assert "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert not out.exists()
        assert not list(tmp_path.glob(".*.tmp"))
    # the same driver accepts good input (so the checks above cannot pass by accident)
    [(code, stderr)] = _cli_many([["--real", real, "--generated", real, "--json", str(out)]])
    assert code in (0, None), stderr
    assert json.loads(out.read_text())["variance_loss_generated"] == pytest.approx(0.0, abs=1e-15)


def test_registered_data_sets_are_accepted_by_name() -> None:
    from varloss.data import load

    test = load("digits", "test").images.numpy()
    report = varloss.measure("digits:test", generated="digits:train")
    assert report.n_real == len(test) and report.n_generated == 1500
    assert report.var_real == pytest.approx(
        np.var(test.reshape(len(test), -1), axis=0).mean(), rel=1e-9
    )
    assert report.settings["inputs"]["real"].startswith("data set digits:test")
    with pytest.raises(InputError, match="neither an existing path nor a data set"):
        varloss.measure("no-such-set:test", generated="digits:train")


# --------------------------------------------------------------------------------------------
# inputs that are not images, or whose range is not declared


def test_complex_and_other_non_image_dtypes_are_refused(sets) -> None:
    real = sets[0]
    with pytest.raises(
        InputError,
        match=r"generated holds complex128 values; expected real "
        r"numbers \(uint8, integers or floats\)",
    ):
        varloss.measure(real, generated=real + 1j)
    with pytest.raises(InputError, match="reconstructed holds complex64 values"):
        varloss.measure(real, torch.from_numpy(real).to(torch.complex64))
    with pytest.raises(InputError, match="generated holds <U1 values; expected real numbers"):
        varloss.measure(real, generated=np.full((5, 3), "a"))


def test_uint16_beside_unit_floats_needs_its_range_declared(sets) -> None:
    real = sets[0]
    real16 = np.round(real * 65535).astype(np.uint16)
    with pytest.raises(InputError, match=r"real holds uint16 values.*--range real=0,65535"):
        varloss.measure(real16, generated=sets[2])
    declared = varloss.measure(real16, generated=sets[2], value_range={"real": (0, 65535)})
    expected = np.var(real16.reshape(len(real16), -1) / 65535.0, axis=0).mean()
    assert declared.var_real == pytest.approx(expected, rel=1e-12)
    # int64 pixels in [0, 255] are no different: integers other than uint8 have no standard range
    with pytest.raises(InputError, match="real holds int64 values"):
        varloss.measure(np.round(real * 255).astype(np.int64), generated=sets[2])
    # bool masks are 0 and 1 (not 1/255 as a uint8 cast would make them)
    masks = real > 0.5
    assert varloss.measure(masks, generated=sets[2]).var_real == pytest.approx(
        np.var(masks.reshape(len(masks), -1).astype(np.float64), axis=0).mean(), rel=1e-12
    )


@pytest.mark.parametrize("form", ["array", "tensor", ".npy file", "batch of an iterable"])
def test_zero_dimensional_arrays_are_refused_in_every_form(sets, tmp_path: Path, form) -> None:
    np.save(tmp_path / "scalar.npy", np.array(0.5))
    source = {
        "array": lambda: np.array(0.5),
        "tensor": lambda: torch.tensor(0.5),
        ".npy file": lambda: tmp_path / "scalar.npy",
        "batch of an iterable": lambda: iter([np.array(0.5), np.array(0.7)]),
    }[form]()
    with pytest.raises(InputError, match=r"generated is a single number \(a 0-d array\)"):
        varloss.measure(sets[0], generated=source)


def test_gif_folders_and_files_are_images_everywhere(tmp_path: Path) -> None:
    """One suffix list: a .gif folder loads as `folder:PATH` and as `measure --real PATH`."""
    from varloss.data import IMAGE_SUFFIXES, load

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    folder = tmp_path / "gifs"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i}.gif")
    assert ".gif" in IMAGE_SUFFIXES
    expected = pixels[:, None] / 255.0
    np.testing.assert_allclose(read_images(folder), expected, rtol=1e-12)
    np.testing.assert_allclose(load(f"folder:{folder}").images.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(read_images(folder / "2.gif"), expected[2:3], rtol=1e-12)
    report = varloss.measure(str(folder), generated=folder)
    assert report.var_real == pytest.approx(np.var(pixels / 255.0, axis=0).mean(), rel=1e-12)


def test_one_channels_last_rule_for_measure_fid_and_data_sets(tmp_path: Path) -> None:
    """The same N x H x W x 4 array (RGBA, a layout two old converters disagreed on) reads as
    the same N x 4 x H x W images through measure, fid's reader and the npz: data sets."""
    from varloss.data import load
    from varloss.quality.score import load_images

    rgba = np.random.default_rng(6).integers(0, 256, (5, 7, 6, 4), dtype=np.uint8)
    expected = rgba.transpose(0, 3, 1, 2) / 255.0
    np.savez(tmp_path / "rgba.npz", images=rgba)
    np.testing.assert_allclose(read_images(rgba), expected, rtol=1e-12)
    np.testing.assert_allclose(load_images(rgba, "real")[0].numpy(), expected, rtol=1e-6)
    loaded = load(f"npz:{tmp_path / 'rgba.npz'}").images.numpy()
    np.testing.assert_allclose(loaded, expected, rtol=1e-6)
    assert varloss.measure(rgba, rgba).dims == [4, 7, 6]
