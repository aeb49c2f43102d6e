"""The real download code against an HTTP server on 127.0.0.1: success, bad checksum, truncated
transfer, server down; and a canonical set fetched through mirrors (first one bad, second good)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from varloss._hashing import sha256_arrays
from varloss.data import ChecksumError, DownloadError, download_url, load
from varloss.data.catalogue import DATASETS
from varloss.data.formats import write_idx
from varloss.errors import InputError


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[bytes, str]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body, mode = self.routes.get(self.path, (b"", "missing"))
        if mode == "missing":
            self.send_error(404)
            return
        self.send_response(200)
        declared = len(body) * 2 if mode == "truncated" else len(body)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if mode == "truncated":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server():
    routes: dict[str, tuple[bytes, str]] = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, routes, httpd
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_download_success_verifies_and_leaves_only_the_file(server, tmp_path: Path) -> None:
    base, routes, _ = server
    body = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    routes["/blob.bin"] = (body, "ok")
    md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
    sha = hashlib.sha256(body).hexdigest()
    out = download_url(
        f"{base}/blob.bin", tmp_path / "blob.bin", md5=md5, sha256=sha, progress=False
    )
    assert out.read_bytes() == body
    assert [p.name for p in tmp_path.iterdir()] == ["blob.bin"]


def test_checksum_mismatch_raises_and_leaves_nothing(server, tmp_path: Path) -> None:
    base, routes, _ = server
    routes["/blob.bin"] = (b"x" * 1000, "ok")
    with pytest.raises(ChecksumError, match="MD5"):
        download_url(f"{base}/blob.bin", tmp_path / "blob.bin", md5="0" * 32, progress=False)
    with pytest.raises(ChecksumError, match="SHA-256"):
        download_url(f"{base}/blob.bin", tmp_path / "blob.bin", sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_raises_and_leaves_nothing(server, tmp_path: Path) -> None:
    base, routes, _ = server
    routes["/cut.bin"] = (b"y" * 50_000, "truncated")
    with pytest.raises(DownloadError) as caught:
        download_url(f"{base}/cut.bin", tmp_path / "cut.bin", progress=False)
    assert not isinstance(caught.value, ChecksumError)
    assert "50000" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_server_down_and_missing_file_raise_download_error(server, tmp_path: Path) -> None:
    base, _, _ = server
    with pytest.raises(DownloadError, match="could not fetch"):
        download_url(
            f"http://127.0.0.1:{_closed_port()}/x", tmp_path / "x", timeout=5, progress=False
        )
    with pytest.raises(DownloadError, match="404"):
        download_url(f"{base}/absent", tmp_path / "absent", progress=False)
    assert list(tmp_path.iterdir()) == []


def _tiny_idx_set() -> tuple[dict[str, bytes], dict[str, tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(1)
    arrays = {
        "train": (rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.arange(6, dtype=np.uint8)),
        "test": (rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), np.arange(4, dtype=np.uint8)),
    }
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = arrays[split]
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(write_idx(images), mtime=0)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(write_idx(labels), mtime=0)
    return files, arrays


def _tiny_mnist(registered, files: dict[str, bytes], arrays) -> None:
    """Swap the mnist registry entry for one whose checksums describe the tiny files."""
    entry = dataclasses.replace(
        DATASETS["mnist"],
        counts={"train": 6, "test": 4},
        files={n: hashlib.md5(b, usedforsecurity=False).hexdigest() for n, b in files.items()},
        pins={
            s: {"images": sha256_arrays(x[:, None]), "labels": sha256_arrays(y)}
            for s, (x, y) in arrays.items()
        },
    )
    registered(DATASETS, "mnist", entry)


def _visible(entry: Path) -> list[str]:
    """The files of a cache entry, sorted, without hidden ones (its lock stays after a failure)."""
    return (
        sorted(p.name for p in entry.iterdir() if not p.name.startswith("."))
        if entry.exists()
        else []
    )


def test_mirrors_skip_a_corrupt_mirror_then_cache(
    server, tmp_path, monkeypatch, registered
) -> None:
    base, routes, httpd = server
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    files, arrays = _tiny_idx_set()
    _tiny_mnist(registered, files, arrays)
    for name, body in files.items():
        routes[f"/bad/{name}"] = (body[:-3] + b"\0\0\0", "ok")  # same size, wrong MD5
        routes[f"/good/{name}"] = (body, "ok")
    mirrors = [f"{base}/bad/", f"{base}/good/"]
    loaded = load("mnist", "test", sources=("cache", "mirrors"), mirrors=mirrors)
    expected = arrays["test"][0].astype(np.float32)[:, None] / np.float32(255)
    np.testing.assert_array_equal(loaded.images.numpy(), expected)
    assert loaded.labels.tolist() == [0, 1, 2, 3]
    cached = _visible(tmp_path / "cache" / "mnist")
    assert cached == [
        "cache.json",
        "manifest.json",
        "test-images.npy",
        "test-labels.npy",
        "train-images.npy",
        "train-labels.npy",
    ]
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    httpd.shutdown()  # the second load must come from the cache alone
    again = load("mnist", "train", sources=("cache", "mirrors"), mirrors=mirrors)
    assert again.images.shape == (6, 1, 28, 28)


def test_arrays_failing_their_pins_are_discarded(
    server, tmp_path, monkeypatch, capsys, registered
) -> None:
    base, routes, _ = server
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    files, arrays = _tiny_idx_set()
    _tiny_mnist(registered, files, arrays)
    entry = DATASETS["mnist"]
    wrong_pins = {s: {"images": "0" * 64, "labels": p["labels"]} for s, p in entry.pins.items()}
    registered(DATASETS, "mnist", dataclasses.replace(entry, pins=wrong_pins))
    for name, body in files.items():
        routes[f"/m/{name}"] = (body, "ok")
    with pytest.raises(InputError, match="could not be obtained from web mirrors"):
        load("mnist", "test", sources=("cache", "mirrors"), mirrors=[f"{base}/m/"])
    assert "do not match their pinned SHA-256" in capsys.readouterr().err
    entry_dir = tmp_path / "cache" / "mnist"
    assert _visible(entry_dir) == []


def test_unreachable_mirrors_give_one_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VARLOSS_DATA_MIRRORS", f"http://127.0.0.1:{_closed_port()}/")
    with pytest.raises(InputError, match="fashion-mnist.*web mirrors.*data_path"):
        load("fashion-mnist", "test", sources=("cache", "mirrors"))
    assert _visible(tmp_path / "cache" / "fashion-mnist") == []


def _patched(registered, name: str, files: dict[str, bytes], counts: dict[str, int]) -> None:
    entry = dataclasses.replace(
        DATASETS[name],
        counts=counts,
        files={n: hashlib.md5(b, usedforsecurity=False).hexdigest() for n, b in files.items()},
    )
    registered(DATASETS, name, entry)


def test_cifar_and_celeba_canonical_downloads_through_a_mirror(
    server, tmp_path, monkeypatch, registered
):
    import io
    import pickle
    import tarfile
    import zipfile

    from PIL import Image

    base, routes, _ = server
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(5)
    members = {}
    for name, n in (("data_batch_1", 3), ("test_batch", 2)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        members[name] = (data, pickle.dumps({b"data": data, b"labels": list(range(n))}, protocol=2))
    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w:gz") as archive:
        for name, (_, blob) in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    cifar_files = {"cifar-10-python.tar.gz": tarball.getvalue()}
    _patched(registered, "cifar10", cifar_files, {"train": 3, "test": 2})

    faces = io.BytesIO()
    with zipfile.ZipFile(faces, "w") as archive:
        for i in range(3):
            pixels = np.full((218, 178, 3), 60 * i, np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")  # any format PIL reads
            archive.writestr(f"img_align_celeba/{i + 1:06d}.jpg", buffer.getvalue())
    partition = b"000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n"
    celeba_files = {"img_align_celeba.zip": faces.getvalue(), "list_eval_partition.txt": partition}
    _patched(registered, "celeba", celeba_files, {"train": 1, "valid": 1, "test": 1})
    for name, body in {**cifar_files, **celeba_files}.items():
        routes[f"/m/{name}"] = (body, "ok")
    monkeypatch.setenv("VARLOSS_DATA_MIRRORS", f"{base}/m/")

    train = load("cifar10", "train", sources=("cache", "mirrors"))
    expected = members["data_batch_1"][0].reshape(-1, 3, 32, 32).astype(np.float32) / 255
    np.testing.assert_allclose(train.images.numpy(), expected, rtol=0, atol=1e-7)
    test = load("celeba", "test", sources=("cache", "mirrors"), size=16)
    assert test.images.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(test.images.numpy(), 120 / 255, rtol=0, atol=1e-7)
    assert load("celeba", "valid", sources=("cache",), size=16).images.shape == (1, 3, 16, 16)
    assert [p for p in (tmp_path / "cache" / "downloads").iterdir()] == []
