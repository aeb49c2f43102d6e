"""SHA-256 digests: the one place varloss hashes files, arrays, weights and settings.

Every identity varloss records (data-set pins, run-folder manifests, weight fingerprints of
feature extractors and fitted samplers, run ids, cache keys) is computed here, so two digests
of the same thing always agree.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

_CHUNK = 1 << 24  # bytes hashed per update: bounded memory for arrays and files of any size


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex digest of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(obj: Any, length: int | None = None) -> str:
    """Hex digest of `obj` as canonical JSON (sorted keys, no spaces), optionally shortened."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _update_with_array(digest: Any, array: np.ndarray | torch.Tensor) -> None:
    if isinstance(array, torch.Tensor):  # viewed as bytes in torch: bfloat16 has no numpy dtype
        flat = array.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    else:
        flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, _CHUNK):
        digest.update(flat[start : start + _CHUNK].data)


def sha256_arrays(*arrays: np.ndarray | torch.Tensor) -> str:
    """Hex digest of the C-order bytes of one or more arrays or tensors, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        _update_with_array(digest, array)
    return digest.hexdigest()


def sha256_state(state: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> str:
    """Hex digest of named tensors (a state dict): names, dtypes, shapes and bytes, sorted by name.

    This is the weights identity of a model or feature extractor: equal weights give equal
    digests whatever the device or the order the dict was built in.
    """
    items = state.items() if isinstance(state, Mapping) else state
    digest = hashlib.sha256()
    for name, tensor in sorted(items, key=lambda item: item[0]):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(value.dtype).encode())
        digest.update(str(tuple(value.shape)).encode())
        if value.numel():
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sha256_module(module: torch.nn.Module) -> str:
    """`sha256_state` of a module's state dict."""
    return sha256_state(module.state_dict())
