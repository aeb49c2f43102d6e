"""FID Inception features as the reference computes them: uint8 pixels, grey -> RGB, TF1 bilinear
resize to 299 (align_corners=False, no half-pixel centres), (x - 128) / 128. Checked against an
independent numpy implementation on small TorchScript weights built here, weights files
recognised by content, and (when `varloss weights fetch inception` has run) the real weights
against NVIDIA's grid-sample formulation of the same resize. The labelled clean-fid variant
(`resize="pil-bicubic"`) is checked against PIL's own resize."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from varloss.data import ImageSet
from varloss.errors import InputError
from varloss.quality import fid, get_extractor
from varloss.quality.inception import (
    STATE_DICT_KEYS,
    InceptionExtractor,
    pil_bicubic_matrix,
    pil_bicubic_resize,
    recognise_weights,
    tf1_bilinear_resize,
)
from varloss.quality.weights import cached_weights


def numpy_tf1_resize(image: np.ndarray, size: int) -> np.ndarray:
    """TF1 ResizeBilinear (legacy: in = out * scale), written as TF's kernel computes it."""
    height, width = image.shape[-2:]
    out = np.zeros(image.shape[:-2] + (size, size))
    for y in range(size):
        in_y = y * height / size
        top, bottom = int(np.floor(in_y)), min(int(np.ceil(in_y)), height - 1)
        y_lerp = in_y - top
        for x in range(size):
            in_x = x * width / size
            left, right = int(np.floor(in_x)), min(int(np.ceil(in_x)), width - 1)
            x_lerp = in_x - left
            top_row = (
                image[..., top, left] + (image[..., top, right] - image[..., top, left]) * x_lerp
            )
            low_row = (
                image[..., bottom, left]
                + (image[..., bottom, right] - image[..., bottom, left]) * x_lerp
            )
            out[..., y, x] = top_row + (low_row - top_row) * y_lerp
    return out


class TinyInception(nn.Module):
    """Stands in for the 299-input TorchScript: 3 x 299 x 299 -> 2048 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 9, stride=6)
        self.head = nn.Linear(8 * 4 * 4, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 3 and x.shape[2] == 299
        hidden = nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 4)
        return torch.relu(self.head(hidden.flatten(1)))


class TinyNvidiaInception(nn.Module):
    """Stands in for NVIDIA's file: uint8-valued images of any size, resized inside."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyInception()

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = nn.functional.interpolate(img, size=(299, 299), mode="bilinear")
        return self.net((x - 128.0) / 128.0)


class SmallFeatures(nn.Module):
    """A 299-input TorchScript with 16 features, for tests where the Fréchet step at 2048
    dimensions would take most of the time."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 13, stride=13)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).mean((2, 3))


def scripted(module: nn.Module, path) -> str:
    torch.manual_seed(0)
    module = module.eval()
    torch.jit.script(module).save(str(path))
    return str(path)


@pytest.mark.parametrize(("height", "width", "size"), [(28, 28, 299), (7, 5, 11), (40, 33, 13)])
def test_tf1_resize_matches_the_kernel(height, width, size) -> None:
    image = np.random.default_rng(height).uniform(0, 255, (2, 3, height, width))
    expected = numpy_tf1_resize(image, size)
    resized = tf1_bilinear_resize(torch.from_numpy(image), size).numpy()
    np.testing.assert_allclose(resized, expected, rtol=0, atol=1e-9)


def test_features_match_an_independent_pipeline(tmp_path) -> None:
    weights = scripted(TinyInception(), tmp_path / "tiny.pt")
    extractor = InceptionExtractor(weights, batch_size=3)
    images = torch.from_numpy(np.random.default_rng(1).uniform(0, 1, (5, 1, 12, 10)))
    features = extractor.features(images.float()).numpy()
    # independent: numpy quantisation, grey -> RGB, numpy TF1 resize, scaling; the same weights
    pixels = np.round(np.clip(images.float().numpy().astype(np.float64), 0, 1) * 255.0)
    network_input = (numpy_tf1_resize(np.repeat(pixels, 3, axis=1), 299) - 128.0) / 128.0
    module = torch.jit.load(weights)
    with torch.no_grad():
        expected = module(torch.from_numpy(network_input).float()).double().numpy()
    assert features.shape == (5, 2048) and features.dtype == np.float64
    assert np.abs(expected).max() > 0.1  # the features are not all zero
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-4)
    info = extractor.info()
    assert info["weights_kind"] == "torchscript-299" and info["weights_known"] is None
    assert "tf1-bilinear-299" in info["resize_mode"]


def test_channels_last_gives_the_same_features(tmp_path) -> None:
    weights = scripted(TinyInception(), tmp_path / "tiny.pt")
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    plain = InceptionExtractor(weights).features(images)
    last = InceptionExtractor(weights, channels_last=True).features(images)
    torch.testing.assert_close(last, plain, rtol=0, atol=1e-5)


def test_nvidia_style_torchscript_gets_uint8_pixels_at_native_size(tmp_path) -> None:
    weights = scripted(TinyNvidiaInception(), tmp_path / "nvidia.pt")
    extractor = InceptionExtractor(weights)
    assert extractor.weights.kind == "torchscript-uint8"
    images = torch.rand(3, 1, 9, 9, generator=torch.Generator().manual_seed(3))
    pixels = (images * 255).round().repeat(1, 3, 1, 1)
    module = torch.jit.load(weights)
    with torch.no_grad():
        expected = module(pixels, return_features=True).double()
    torch.testing.assert_close(extractor.features(images), expected, rtol=0, atol=1e-6)


def test_state_dict_is_recognised_and_needs_torch_fidelity(tmp_path) -> None:
    path = tmp_path / "pt_inception.pth"
    torch.save({key: torch.zeros(1) for key in STATE_DICT_KEYS} | {"fc.bias": torch.zeros(1)}, path)
    assert recognise_weights(path).kind == "state-dict"
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match=r"state dict.*varloss\[fid\]"):
            InceptionExtractor(path)


def test_other_files_are_refused_in_one_sentence(tmp_path) -> None:
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, other)
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    for path in (other, text):
        with pytest.raises(InputError, match="neither a TorchScript Inception-v3") as error:
            recognise_weights(path)
        assert str(error.value).count(". ") == 0
    with pytest.raises(InputError, match="does not exist"):
        get_extractor("inception", weights=tmp_path / "missing.pt")


def test_fid_on_inception_features_records_them(tmp_path) -> None:
    weights = scripted(SmallFeatures(), tmp_path / "small.pt")
    rng = np.random.default_rng(4)
    real, generated = rng.uniform(0, 1, (24, 1, 8, 8)), rng.uniform(0, 0.8, (24, 1, 8, 8))
    result = fid(real, generated, features="inception", weights=weights, kid=True)
    assert result["extractor"]["name"] == "inception-v3-tf"
    assert result["extractor"]["weights_kind"] == "torchscript-299"
    assert (
        result["fid"] > 0 and result["kid"] > 0 and result["settings"]["kid"]["subset_size"] == 24
    )


def pil_clean_fid_input(pixels: np.ndarray) -> np.ndarray:
    """clean-fid's "clean" pre-processing of N x 3 x H x W uint8-valued pixels, by PIL itself:
    each channel a float32 image, PIL bicubic to 299 x 299, clipped to [0, 255], (x - 128) / 128."""
    from PIL import Image

    out = np.zeros(pixels.shape[:2] + (299, 299))
    for index in np.ndindex(*pixels.shape[:2]):
        channel = Image.fromarray(pixels[index].astype(np.float32))
        assert channel.mode == "F"
        out[index] = np.asarray(channel.resize((299, 299), resample=Image.BICUBIC)).clip(0, 255)
    return (out - 128.0) / 128.0


@pytest.mark.parametrize(
    ("height", "width"), [(28, 28), (32, 32), (64, 64), (300, 300), (512, 512), (28, 64), (512, 17)]
)
def test_pil_bicubic_resize_matches_pil(height, width) -> None:
    """Up- and downsampling (the support widens by the scale) to 299, as PIL computes it."""
    pixels = np.random.default_rng(height + width).integers(0, 256, (1, 2, height, width))
    expected = pil_clean_fid_input(pixels) * 128.0 + 128.0  # back to pixel units
    resized = pil_bicubic_resize(torch.from_numpy(pixels).double()).numpy()
    rows, cols = pil_bicubic_matrix(height), pil_bicubic_matrix(width)
    unclipped = (rows @ torch.from_numpy(pixels).double() @ cols.T).numpy()
    assert unclipped.min() < -1 or unclipped.max() > 256  # bicubic overshoots: the clip matters
    np.testing.assert_allclose(resized, expected, rtol=0, atol=1e-3)
    tf1 = tf1_bilinear_resize(torch.from_numpy(pixels).double(), 299).numpy()
    assert np.abs(tf1 - expected).max() > 1.0  # the two resizes differ: the label matters


def test_pil_bicubic_extractor_feeds_clean_fid_s_input(tmp_path) -> None:
    weights = scripted(TinyInception(), tmp_path / "tiny.pt")
    extractor = InceptionExtractor(weights, batch_size=2, resize="pil-bicubic")
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(8))
    pixels = np.round(np.clip(images.numpy().astype(np.float64), 0, 1) * 255.0)
    expected = pil_clean_fid_input(np.repeat(pixels, 3, axis=1))
    network_input = extractor.preprocess(images).double().numpy()
    np.testing.assert_allclose(network_input, expected, rtol=0, atol=1e-3 / 128)
    with torch.no_grad():
        expected_features = extractor.model(torch.from_numpy(expected).float()).double()
    torch.testing.assert_close(extractor.features(images), expected_features, rtol=0, atol=1e-4)
    default = InceptionExtractor(weights)
    info, default_info = extractor.info(), default.info()
    assert info["resize"] == "pil-bicubic" and default_info["resize"] == "tf1-bilinear"
    assert "not the number TTUR/Dai & Wipf report" in info["resize_label"]
    assert "pil-bicubic-299" in info["resize_mode"] and "tf1" not in info["resize_mode"]
    assert default_info["resize_mode"] == default.resize_mode != extractor.resize_mode


def test_resize_is_refused_where_it_cannot_apply(tmp_path) -> None:
    nvidia = scripted(TinyNvidiaInception(), tmp_path / "nvidia.pt")
    with pytest.raises(InputError, match="resizes inside .* cannot take another resize") as error:
        InceptionExtractor(nvidia, resize="pil-bicubic")
    assert str(error.value).count(". ") == 0
    assert InceptionExtractor(nvidia, resize="tf1-bilinear").resize == "tf1-bilinear"
    weights = scripted(SmallFeatures(), tmp_path / "small.pt")
    with pytest.raises(InputError, match=r"--resize .*tf1-bilinear .*pil-bicubic .*'lanczos'"):
        get_extractor("inception", weights=weights, resize="lanczos")
    with pytest.raises(InputError, match="--resize pil-bicubic cannot apply to the extractor"):
        get_extractor(nn.Flatten(), resize="pil-bicubic")
    made = InceptionExtractor(weights)  # an extractor given as made keeps its own resize
    assert get_extractor(made, resize="tf1-bilinear") is made
    with pytest.raises(InputError, match="'inception-v3-tf' as made"):
        get_extractor(made, resize="pil-bicubic")
    with pytest.raises(InputError, match="not to the domain classifier"):
        get_extractor("domain", dataset="digits", resize="tf1-bilinear")


def test_the_real_statistics_cache_is_keyed_by_the_resize(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    weights = scripted(SmallFeatures(), tmp_path / "small.pt")
    generator = torch.Generator().manual_seed(9)
    real = ImageSet(torch.rand(20, 1, 8, 8, generator=generator), None, "toy", "test")
    generated = torch.rand(20, 1, 8, 8, generator=generator) * 0.6
    options = {"features": "inception", "weights": weights, "fid_infinity": False}
    resizes = ("tf1-bilinear", "pil-bicubic", "pil-bicubic", None)
    runs = [fid(real, generated, resize=resize, **options) for resize in resizes]
    cached = [run["settings"]["real_statistics_cached"] for run in runs]
    assert cached == [False, False, True, True]  # one cache entry per resize; None: the default
    used = [run["extractor"]["resize"] for run in runs]
    assert used == ["tf1-bilinear", "pil-bicubic", "pil-bicubic", "tf1-bilinear"]
    assert runs[1]["fid"] == runs[2]["fid"] != runs[0]["fid"] == runs[3]["fid"]


REAL = cached_weights("inception")


@pytest.mark.skipif(
    REAL is None, reason="run `varloss weights fetch inception` to test the real file"
)
def test_real_weights_agree_with_nvidia_s_resize() -> None:
    """The fetched file, fed by varloss, against NVIDIA's grid-sample form of the TF1 resize."""
    extractor = InceptionExtractor(REAL, batch_size=2)
    assert extractor.weights.known is not None and extractor.weights.kind == "torchscript-299"
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    features = extractor.features(images)
    pixels = (images * 255).round().repeat(1, 3, 1, 1)
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / 28 - 1 / 299
    theta[1, 2] += 1 / 28 - 1 / 299
    grid = nn.functional.affine_grid(theta.repeat(2, 1, 1), [2, 3, 299, 299], align_corners=False)
    resized = nn.functional.grid_sample(
        pixels, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    with torch.no_grad():
        expected = extractor.model((resized - 128) / 128).double()
    assert features.shape == (2, 2048) and float(features.abs().max()) > 0.5
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-4)


@pytest.mark.skipif(
    REAL is None, reason="run `varloss weights fetch inception` to test the real file"
)
def test_real_weights_pil_bicubic_features_agree_with_pil() -> None:
    """The fetched file fed clean-fid's input by varloss, against the same network fed PIL's."""
    extractor = InceptionExtractor(REAL, batch_size=2, resize="pil-bicubic")
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(11))
    pixels = np.round(images.numpy().astype(np.float64) * 255.0).repeat(3, axis=1)
    with torch.no_grad():
        expected = extractor.model(torch.from_numpy(pil_clean_fid_input(pixels)).float()).double()
    features = extractor.features(images)
    assert float(features.abs().max()) > 0.5
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-4)


def test_the_fid_command_prints_and_records_kid_and_fid_infinity(tmp_path, monkeypatch, capsys):
    from test_cli import invoke

    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(6)
    np.save(tmp_path / "real.npy", rng.uniform(0, 1, (40, 1, 10, 10)).astype(np.float32))
    np.save(tmp_path / "gen.npy", rng.uniform(0, 0.7, (40, 1, 10, 10)).astype(np.float32))
    weights = scripted(SmallFeatures(), tmp_path / "small.pt")
    code, out, err = invoke(
        monkeypatch, capsys, "fid", "--real", str(tmp_path / "real.npy"),
        "--generated", str(tmp_path / "gen.npy"), "--features", "inception",
        "--weights", weights, "--json", str(tmp_path / "fid.json"),
    )  # fmt: skip
    assert code == 0, err
    assert "FID (inception-v3-tf)" in out and "KID " in out and "FID∞ " in out
    result = json.loads((tmp_path / "fid.json").read_text())
    assert result["kid"] is not None and result["fid_infinity"] is not None
    assert result["settings"]["kid"]["subset_size"] == 40
    assert result["fid_infinity_fit"]["sizes"] == sorted(set(result["fid_infinity_fit"]["sizes"]))
    assert (
        result["extractor"]["weights_hash"]
        == hashlib.sha256(open(weights, "rb").read()).hexdigest()
    )


def test_pipelines_fid_mode_inception(tmp_path, monkeypatch) -> None:
    """`--fid inception` in train/correct/study: fid_or_reason takes the Inception features, and
    without weights gives the reason (never an error that fails a finished run)."""
    from varloss.pipelines.evaluate import fid_wanted
    from varloss.quality import fid_or_reason
    from varloss.train_config import TrainConfig

    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VARLOSS_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    rng = np.random.default_rng(7)
    real, generated = rng.uniform(0, 1, (30, 1, 8, 8)), torch.rand(30, 1, 8, 8) * 0.5
    result, reason = fid_or_reason(real, generated, dataset="nothing", mode="inception")
    assert result is None and "varloss weights fetch inception" in reason
    monkeypatch.setenv("VARLOSS_INCEPTION_WEIGHTS", scripted(SmallFeatures(), tmp_path / "s.pt"))
    result, reason = fid_or_reason(real, generated, dataset="nothing", mode="inception")
    assert reason is None and result["extractor"]["name"] == "inception-v3-tf"
    assert result["fid"] == pytest.approx(fid(real, generated, features="inception")["fid"])
    # the pipelines' Inception FID comes with KID and FID∞, as `varloss fid` prints them
    alone = fid(real, generated, features="inception", kid=True, fid_infinity=True)
    assert result["kid"] == pytest.approx(alone["kid"]) and result["kid_std"] >= 0
    assert result["fid_infinity"] == pytest.approx(alone["fid_infinity"])
    assert fid_wanted(TrainConfig(dataset="digits", fid="inception"))


def test_the_fid_command_takes_and_labels_resize(tmp_path, monkeypatch, capsys) -> None:
    from test_cli import assert_one_sentence_error, invoke

    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(10)
    np.save(tmp_path / "real.npy", rng.uniform(0, 1, (20, 1, 10, 10)).astype(np.float32))
    np.save(tmp_path / "gen.npy", rng.uniform(0, 0.7, (20, 1, 10, 10)).astype(np.float32))
    weights = scripted(SmallFeatures(), tmp_path / "small.pt")
    arguments = [
        "fid", "--real", str(tmp_path / "real.npy"), "--generated", str(tmp_path / "gen.npy"),
        "--features", "inception", "--weights", weights, "--no-fid-infinity",
    ]  # fmt: skip
    code, out, err = invoke(
        monkeypatch,
        capsys,
        *arguments,
        "--resize",
        "pil-bicubic",
        "--json",
        str(tmp_path / "f.json"),
    )
    assert code == 0, err
    assert (
        "resize pil-bicubic: clean-fid's PIL bicubic: not the number TTUR/Dai & Wipf report" in out
    )
    result = json.loads((tmp_path / "f.json").read_text())
    assert result["extractor"]["resize"] == "pil-bicubic"
    assert "pil-bicubic-299" in result["resize_mode"]
    expected = fid(
        np.load(tmp_path / "real.npy"), np.load(tmp_path / "gen.npy"), features="inception",
        weights=weights, resize="pil-bicubic",
    )  # fmt: skip
    assert result["fid"] == pytest.approx(expected["fid"], rel=1e-12)
    code, out, err = invoke(
        monkeypatch, capsys, *arguments, "--resize", "bicubic", "--json", str(tmp_path / "bad.json")
    )
    assert_one_sentence_error(code, err, "--resize", "tf1-bilinear", "pil-bicubic", "'bicubic'")
    assert not (tmp_path / "bad.json").exists()
    code, out, err = invoke(monkeypatch, capsys, "fid", "--help")
    assert "--resize" in out and "pil-bicubic" in out
