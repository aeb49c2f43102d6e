"""Streaming, mergeable feature mean and covariance in float64 (Chan et al.), and their cache.

Memory is O(d^2) whatever the number of samples, and the result does not depend on how the
samples are split into batches or workers: two partial states merge exactly with Chan's
pairwise formula

    n = na + nb,  delta = mean_b - mean_a,
    mean = mean_a + delta * nb / n,
    M2 = M2a + M2b + outer(delta, delta) * na * nb / n,

which, unlike raw sums of squares, does not lose precision when the mean is large.

The cache of real-data statistics is a folder per entry in the run-folder layer
(`varloss.runs.RunFolder`): `statistics.safetensors`, `features.npy` (the features themselves,
for KID and precision/recall), `statistics.json` (its key, recorded last) and `manifest.json`,
written under the entry's lock and checked on every read; a damaged entry is named in one
sentence and computed again, as are entries of the older flat layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from varloss._hashing import sha256_json
from varloss._progress import say
from varloss.data import data_dir
from varloss.errors import InputError
from varloss.quality.frechet import frechet_distance
from varloss.runs import RunFolder
from varloss.stats import chan_merge

STATS_FORMAT = 1
STATISTICS_FILE = "statistics.safetensors"  # a cache entry's tensors; its key in the .json beside
FEATURES_FILE = "features.npy"  # the real features themselves (KID needs them), float32 if exact
LOCK_WAIT_S = 600.0  # a second process storing the same entry waits for the first


def _features(batch: Any, what: str = "features") -> torch.Tensor:
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if not isinstance(batch, torch.Tensor):
        raise InputError(f"{what} must be a tensor or array of shape N x d, got {type(batch)}.")
    batch = batch.detach().to("cpu", torch.float64)
    if batch.ndim == 1:
        batch = batch.unsqueeze(0)
    if batch.ndim != 2:
        batch = batch.reshape(batch.shape[0], -1)
    return batch


class FeatureStatistics:
    """Running count, mean (d) and M2 (d x d, sum of centred outer products) in float64.

    `update(batch)` adds N x d features; `merge(other)` folds another state in;
    `covariance()` is the unbiased (N - 1) covariance used by FID.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.count = 0
        self.dim = dim
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        if dim is not None:
            self._allocate(dim)

    def _allocate(self, dim: int) -> None:
        self.dim = int(dim)
        self.mean = torch.zeros(self.dim, dtype=torch.float64)
        self.m2 = torch.zeros(self.dim, self.dim, dtype=torch.float64)

    def _combine(self, count: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        if count == 0:
            return
        if self.mean is None:
            self._allocate(mean.shape[0])
        if mean.shape[0] != self.dim:
            raise InputError(
                f"features have dimension {mean.shape[0]} but the statistics hold {self.dim}."
            )
        if self.count == 0:
            self.count, self.mean, self.m2 = count, mean.clone(), m2.clone()
            return
        self.count, self.mean, self.m2 = chan_merge(
            self.count, self.mean, self.m2, count, mean, m2, outer=True
        )

    def update(self, batch: Any) -> FeatureStatistics:
        """Add a batch of N x d features (any float dtype; accumulated in float64)."""
        x = _features(batch)
        if x.shape[0] == 0:
            return self
        batch_mean = x.mean(dim=0)
        centred = x - batch_mean
        self._combine(x.shape[0], batch_mean, centred.T @ centred)
        return self

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        """Fold `other` into this state (in place) and return self."""
        if other.count:
            assert other.mean is not None and other.m2 is not None
            self._combine(other.count, other.mean, other.m2)
        return self

    def covariance(self, ddof: int = 1) -> torch.Tensor:
        """The d x d covariance, M2 / (N - ddof)."""
        if self.m2 is None or self.count <= ddof:
            raise InputError(
                f"a covariance needs more than {ddof} feature vectors, got {self.count}."
            )
        return self.m2 / (self.count - ddof)

    # ---- packed form: one flat float64 tensor, for torchmetrics states and DDP reduction ----

    def to_packed(self) -> torch.Tensor:
        """[count, mean (d), M2 (d*d)] as one float64 tensor."""
        if self.mean is None or self.m2 is None:
            raise InputError("the statistics are empty and have no dimension yet.")
        count = torch.tensor([float(self.count)], dtype=torch.float64)
        return torch.cat([count, self.mean, self.m2.reshape(-1)])

    @classmethod
    def from_packed(cls, packed: torch.Tensor) -> FeatureStatistics:
        packed = packed.detach().to("cpu", torch.float64).reshape(-1)
        dim = int(round((-1 + (1 + 4 * (packed.numel() - 1)) ** 0.5) / 2))
        if 1 + dim + dim * dim != packed.numel():
            raise InputError(f"a packed state has length 1 + d + d^2, got {packed.numel()}.")
        state = cls(dim)
        state.count = int(round(float(packed[0])))
        state.mean = packed[1 : 1 + dim].clone()
        state.m2 = packed[1 + dim :].reshape(dim, dim).clone()
        return state

    # ---- files ----

    def save(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> None:
        """Write safetensors (mean, m2, count) plus a JSON sidecar of metadata, atomically, both
        recorded in the manifest of their folder (the sidecar last: it marks them complete)."""
        if self.mean is None or self.m2 is None:
            raise InputError("cannot save empty feature statistics.")
        path = Path(path)
        folder, sidecar = RunFolder(path.parent).create(), path.with_suffix(".json").name
        tensors = {
            "mean": self.mean,
            "m2": self.m2,
            "count": torch.tensor([self.count], dtype=torch.int64),
        }
        folder.forget(sidecar)  # incomplete until the sidecar is written again
        folder.write_tensors(path.name, tensors, {"format": str(STATS_FORMAT)})
        folder.write_json(sidecar, {"count": self.count, **(metadata or {})})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureStatistics:
        """The statistics `save` wrote, checked against their folder's manifest first."""
        path = Path(path)
        tensors = RunFolder(path.parent).read_tensors(path.name)
        state = cls(int(tensors["mean"].shape[0]))
        state.mean = tensors["mean"].to(torch.float64)
        state.m2 = tensors["m2"].to(torch.float64)
        state.count = int(tensors["count"][0])
        return state


def merge_packed(stacked: torch.Tensor) -> torch.Tensor:
    """Reduce packed states gathered from workers (W x L) into one packed state (Chan merge).

    This is the `dist_reduce_fx` of `FrechetDistance`'s states, so DDP sync is exact.
    """
    if stacked.ndim == 1:
        return stacked
    total = FeatureStatistics.from_packed(stacked[0])
    for row in stacked[1:]:
        total.merge(FeatureStatistics.from_packed(row))
    return total.to_packed().to(stacked.device)


class FrechetDistance(Metric):
    """torchmetrics Metric: Fréchet distance between real and generated *features* (N x d).

    Each set's state is one packed float64 tensor merged with Chan's formula across processes.
    `compute()` returns `FrechetTerms.to_dict()`.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, feature_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feature_dim = int(feature_dim)
        empty = FeatureStatistics(self.feature_dim).to_packed()
        self.add_state("real_state", default=empty.clone(), dist_reduce_fx=merge_packed)
        self.add_state("generated_state", default=empty.clone(), dist_reduce_fx=merge_packed)

    def update(
        self, real: torch.Tensor | None = None, generated: torch.Tensor | None = None
    ) -> None:
        for name, batch in (("real_state", real), ("generated_state", generated)):
            if batch is None:
                continue
            state = FeatureStatistics.from_packed(getattr(self, name))
            state.update(batch)
            setattr(self, name, state.to_packed().to(self.device))

    def compute(self) -> dict[str, Any]:
        real = FeatureStatistics.from_packed(self.real_state)
        generated = FeatureStatistics.from_packed(self.generated_state)
        return frechet_distance(
            real.mean, real.covariance(), generated.mean, generated.covariance()
        ).to_dict()


# ---- on-disk cache of real-data statistics ----


def stats_cache_dir() -> Path:
    """$VARLOSS_DATA_DIR/fid-stats, else the user cache directory varloss/fid-stats."""
    return data_dir() / "fid-stats"


def cache_key(key: dict[str, Any]) -> str:
    """A file stem naming the data set and split, plus a hash of everything in `key`."""
    digest = sha256_json(key, 16)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(key.get("dataset", "x")))
    return f"{safe}-{key.get('split', 'x')}-{key.get('extractor', 'x')}-{digest}"


def _entry(key: dict[str, Any]) -> RunFolder:
    return RunFolder(stats_cache_dir() / cache_key(key))


def load_cached(key: dict[str, Any]) -> FeatureStatistics | None:
    """The cached statistics for `key`, or None when absent, incomplete or damaged (a damaged
    entry, or one of the older flat layout, is named in one sentence and computed again)."""
    _drop_old_layout(key)
    folder = _entry(key)
    sidecar = Path(STATISTICS_FILE).with_suffix(".json").name
    try:
        if not folder.verify(sidecar):  # absent, or not complete: no sidecar in the manifest
            return None
        if folder.read_json(sidecar).get("key") != key:
            return None
        return FeatureStatistics.load(folder.file(STATISTICS_FILE))
    except InputError as error:
        say(f"{str(error).rstrip('.')}: the real statistics are computed again", "fid")
        return None


def _drop_old_layout(key: dict[str, Any]) -> None:
    """Delete the entry of `key` in the flat layout of older varloss versions (unchecked files)."""
    old = stats_cache_dir() / f"{cache_key(key)}.safetensors"
    if old.is_file():
        say(f"the cached statistics {old} are of an older varloss; they are computed again", "fid")
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)


def load_cached_features(key: dict[str, Any]) -> torch.Tensor | None:
    """The cached real features of `key` (float64 N x d), or None when the entry has none (an
    older entry) or is damaged (named in one sentence; computed again)."""
    folder = _entry(key)
    try:
        if load_cached(key) is None or not folder.verify(FEATURES_FILE):
            return None
        return torch.from_numpy(np.array(folder.read_array(FEATURES_FILE), dtype=np.float64))
    except InputError as error:
        say(f"{str(error).rstrip('.')}: the real features are computed again", "fid")
        return None


def store_cached(
    key: dict[str, Any], statistics: FeatureStatistics, features: torch.Tensor | None = None
) -> Path:
    """Write the statistics of `key` (and the features, float32 when that is exact) as a fresh
    cache entry (under its lock); return the statistics file."""
    folder = _entry(key)
    with folder.lock(wait=LOCK_WAIT_S):
        folder.clear()  # whatever was there (damaged, or another key's) is replaced whole
        if features is not None:
            compact = features.to(torch.float32)
            exact = torch.equal(compact.to(features.dtype), features)
            folder.write_array(FEATURES_FILE, (compact if exact else features).numpy())
        statistics.save(folder.file(STATISTICS_FILE), {"key": key})
    return folder.file(STATISTICS_FILE)
