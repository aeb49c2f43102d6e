"""Download one URL to a file: temporary name, progress bar, timeout, checksum, then rename.

Works with any URL urllib understands (http, https, file). Nothing is left at the destination
unless the whole body arrived and its checksum matched.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from varloss._io import atomic_path
from varloss._progress import progress_bar

CHUNK = 1 << 20


class DownloadError(OSError):
    """A transfer failed: the server is unreachable, the body was cut short, or HTTP said no."""


class ChecksumError(DownloadError):
    """The bytes arrived but their checksum is not the one pinned for them."""


def download_url(
    url: str,
    destination: str | os.PathLike[str],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Fetch `url` into `destination` and return its path.

    The body is streamed into a temporary file beside `destination`; the byte count is checked
    against Content-Length, then the MD5 / SHA-256 (when given) against the pinned values, and only
    then is the file renamed into place. Raises DownloadError (ChecksumError for a mismatch) and
    leaves nothing behind on any failure.
    """
    target = Path(destination)
    md5_digest = hashlib.md5(usedforsecurity=False) if md5 else None
    sha_digest = hashlib.sha256() if sha256 else None
    request = urllib.request.Request(url, headers={"User-Agent": "varloss"})
    try:
        with atomic_path(target) as tmp:
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as error:
                raise DownloadError(
                    f"could not fetch {url}: HTTP {error.code} {error.reason}"
                ) from error
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                raise DownloadError(f"could not fetch {url}: {reason}") from error
            with response, open(tmp, "wb") as out:
                header = response.headers.get("Content-Length")
                expected = int(header) if header and header.isdigit() else None
                received = 0
                bar = progress_bar(
                    total=expected,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=target.name,
                    disable=not progress,
                    leave=False,
                    file=sys.stderr,
                )
                with bar:
                    while True:
                        try:
                            block = response.read(CHUNK)
                        except (OSError, ValueError) as error:  # IncompleteRead, reset, timeout
                            raise DownloadError(
                                f"transfer of {url} broke off after {received} bytes: {error}"
                            ) from error
                        if not block:
                            break
                        out.write(block)
                        received += len(block)
                        bar.update(len(block))
                        if md5_digest is not None:
                            md5_digest.update(block)
                        if sha_digest is not None:
                            sha_digest.update(block)
                if expected is not None and received != expected:
                    raise DownloadError(
                        f"transfer of {url} was truncated: {received} of {expected} bytes arrived"
                    )
            _check_digest(url, "MD5", md5_digest, md5)
            _check_digest(url, "SHA-256", sha_digest, sha256)
    except DownloadError:
        raise
    except OSError as error:  # disk full, permission: still a failed fetch, nothing kept
        raise DownloadError(f"could not store {url} at {target}: {error}") from error
    return target


def _check_digest(url: str, kind: str, digest: Any, expected: str | None) -> None:
    if digest is not None and expected is not None and digest.hexdigest() != expected.lower():
        raise ChecksumError(f"{url} has {kind} {digest.hexdigest()}, expected {expected.lower()}")
