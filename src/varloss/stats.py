"""Streaming, mergeable per-feature moments in float64 (Welford in a batch, Chan between batches).

A set of N samples with D features is summarised by its count, per-feature means and per-feature
sums of squared deviations (`m2`); a real set paired with its reconstructions also keeps the
per-feature co-moment `Σ (x - mean_x)(y - mean_y)`. Two summaries merge exactly with Chan et al.'s
parallel formula, so the result does not depend on how the data was split into batches, and memory
is O(D) whatever N is.

From the paired moments (all means over features of population moments across samples):

    var(x) - var(y) = mse - bias2 + cov_term,   bias2 = mean (mean_x - mean_y)^2,
    cov_term = 2 * mean cov(y, x - y)

which holds to rounding because every term is computed from the same three moments.

On CPU a large batch is cut into as many contiguous row blocks as torch has threads
(`torch.get_num_threads()`, e.g. `--threads`); numpy releases the GIL, so the blocks are reduced
in parallel threads and merged in order with the same formula (1.7x on 2 cores at 60000 x 3072).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

# Rows per float64 chunk: about this many bytes, so that a chunk stays in cache across its passes
# (upcast, mean, centre, products); measured ~10x faster than 32 MiB chunks at D = 3072.
_CHUNK_BYTES = 2 * 2**20
_MIN_ROWS = 16
# Batches with fewer values are reduced on one thread (starting threads would cost more).
_PARALLEL_MIN_VALUES = 4 * 2**20
# dtypes that numpy can view without a copy; others (bfloat16, ...) are upcast by torch first.
NUMPY_DTYPES = {
    torch.float16,
    torch.float32,
    torch.float64,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
}


# Per-thread work buffers, kept between batches and calls. A fresh float64 chunk of a few MiB is
# mmap'd by malloc, or taken from a heap top that malloc trims again once it is freed, and then
# costs a page fault per 4 KiB page at first touch: measured up to 3x the whole plain `measure`
# in a fresh process (and nothing in a process whose malloc had grown a large heap before).
_workspace = threading.local()


def workspace(name: tuple, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A reusable uninitialised array of this thread for `name`, at least as large as asked for:
    use it before asking again for the same name."""
    arrays = _workspace.__dict__.setdefault("arrays", {})
    size = int(np.prod(shape))
    array = arrays.get((name, dtype))
    if array is None or array.size < size:
        array = arrays[(name, dtype)] = np.empty(size, dtype=dtype)
    return array[:size].reshape(shape)


def as_rows(batch: Any) -> torch.Tensor:
    """A batch as a 2-D tensor N x D (samples x features), without copying when possible."""
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(batch))
    elif not isinstance(batch, torch.Tensor):
        batch = torch.as_tensor(np.asarray(batch))
    if batch.ndim == 0:
        raise ValueError("a batch must have a sample dimension, got a scalar")
    return batch.detach().reshape(batch.shape[0], -1)


def _use_numpy(device: torch.device) -> bool:
    """Whether chunks on `device` are reduced by numpy (CPU) rather than torch (accelerators)."""
    return device.type == "cpu"


def centre_rows(source: np.ndarray, name: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(float64 mean over axis 0, the rows minus it in float64) of a numpy chunk of any dtype:
    the rows are upcast into this thread's `workspace(name)` (valid until asked for again), then
    averaged and centred in place (measured ~25% faster than averaging the source with a float64
    accumulator and centring it into the buffer in one cast: numpy's casting loops are buffered)."""
    centred = workspace(name, source.shape, np.float64)
    np.copyto(centred, source, casting="unsafe")
    mean = centred.mean(axis=0)
    centred -= mean
    return mean, centred


def _chunk_moments(*sets: torch.Tensor):
    """Per row chunk: (n, means, centred chunks) of aligned N x D tensors, in float64.

    On CPU the work is done by numpy on cache-sized chunks (`centre_rows`: a float64 mean and
    the centred float64 rows in this thread's reused buffer; the caller reduces products with
    `np.einsum` before asking for the next chunk), which beats torch's reductions over dim 0 by
    several times on few cores. Other devices stay in torch.
    """
    n, d = sets[0].shape
    step = max(_MIN_ROWS, _CHUNK_BYTES // (8 * max(d, 1)))
    cpu = _use_numpy(sets[0].device)
    for start in range(0, n, step):
        chunks = [rows[start : start + step] for rows in sets]
        if cpu:
            sources = [
                (c if c.dtype in NUMPY_DTYPES else c.to(torch.float64)).numpy() for c in chunks
            ]
            centred = [centre_rows(source, ("chunk", slot)) for slot, source in enumerate(sources)]
            means, chunks = [m for m, _ in centred], [c for _, c in centred]
        else:
            chunks = [c.to(torch.float64) for c in chunks]
            means = [c.mean(dim=0) for c in chunks]
            chunks = [c - m for c, m in zip(chunks, means, strict=True)]
        yield chunks[0].shape[0], means, chunks


_Accumulator = TypeVar("_Accumulator")


def _in_row_blocks(
    rows: torch.Tensor, reduce_block: Callable[[int, int], _Accumulator]
) -> list[_Accumulator] | None:
    """`reduce_block(start, stop)` over contiguous row blocks in parallel threads, in order; None
    when the batch should be reduced on one thread (small, not on CPU, or one torch thread)."""
    n, d = rows.shape
    threads = min(torch.get_num_threads(), n // _MIN_ROWS)
    if rows.device.type != "cpu" or threads < 2 or n * d < _PARALLEL_MIN_VALUES:
        return None
    return in_parallel(reduce_block, np.linspace(0, n, threads + 1).astype(int).tolist())


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def in_parallel(reduce_block: Callable[[int, int], _Accumulator], bounds: list[int]) -> list:
    """`reduce_block(start, stop)` for each consecutive pair of `bounds`, in parallel threads of a
    pool kept for the process (its threads keep their `workspace` buffers between batches), in
    order. A reduction must not call this again from inside a block."""
    threads = len(bounds) - 1
    key = (os.getpid(), threads)  # a forked child makes its own pool (the threads stay behind)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="varloss-rows")
    return list(pool.map(reduce_block, bounds[:-1], bounds[1:]))


def _dot(a: Any, b: Any, device: torch.device) -> torch.Tensor:
    """Per-feature sum of products of two centred chunks, as a float64 tensor on `device`."""
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.einsum("nd,nd->d", a, b)).to(device)
    return (a * b).sum(dim=0)


def _vec(values: Any, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(values).to(device) if isinstance(values, np.ndarray) else values


def _chan(
    n_a: int, n_b: int, mean_a: torch.Tensor, mean_b: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Chan's update pieces: the difference of means and the weight n_a * n_b / n."""
    return mean_b - mean_a, n_a * n_b / (n_a + n_b)


def chan_merge(
    n_a: int,
    mean_a: torch.Tensor,
    m2_a: torch.Tensor,
    n_b: int,
    mean_b: torch.Tensor,
    m2_b: torch.Tensor,
    *,
    outer: bool = False,
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Merge two sets' (count, mean, M2) with Chan, Golub and LeVeque's parallel formula (1979):
    mean = mean_a + delta * n_b / n and M2 = M2_a + M2_b + delta delta^T * n_a n_b / n, with
    delta = mean_b - mean_a. M2 holds per-feature sums of squared deviations, or with `outer`
    the full matrix of centred outer products (a covariance times n). Both sets non-empty."""
    delta, weight = _chan(n_a, n_b, mean_a, mean_b)
    spread = torch.outer(delta, delta) if outer else delta * delta
    return n_a + n_b, mean_a + delta * (n_b / (n_a + n_b)), m2_a + m2_b + spread * weight


@dataclass
class MomentAccumulator:
    """Count, per-feature mean and sum of squared deviations of one set, in float64."""

    count: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None

    def update(self, batch: Any) -> MomentAccumulator:
        """Add a batch (N x ... array or tensor); returns self."""
        rows = as_rows(batch)
        parts = _in_row_blocks(rows, lambda a, b: MomentAccumulator()._update_rows(rows[a:b]))
        if parts is None:
            return self._update_rows(rows)
        for part in parts:
            self.merge(part)
        return self

    def _update_rows(self, rows: torch.Tensor) -> MomentAccumulator:
        for n, (mean,), (centred,) in _chunk_moments(rows):
            self._merge(n, _vec(mean, rows.device), _dot(centred, centred, rows.device))
        return self

    def merge(self, other: MomentAccumulator) -> MomentAccumulator:
        """Fold another accumulator's moments into this one (Chan's formula); returns self."""
        if other.count:
            self._merge(other.count, other.mean, other.m2)
        return self

    def _merge(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        if self.count == 0:
            self.count, self.mean, self.m2 = n_b, mean_b.clone(), m2_b.clone()
            return
        if mean_b.shape != self.mean.shape:
            raise ValueError(
                f"cannot merge moments of {mean_b.numel()} features into {self.mean.numel()}"
            )
        mean_b, m2_b = mean_b.to(self.mean.device), m2_b.to(self.mean.device)
        merged = chan_merge(self.count, self.mean, self.m2, n_b, mean_b, m2_b)
        self.count, self.mean, self.m2 = merged

    def variance(self) -> torch.Tensor:
        """Per-feature population variance (divides by N, like `np.var`)."""
        if self.count == 0:
            raise ValueError("no samples accumulated")
        return self.m2 / self.count


@dataclass
class PairedMomentAccumulator:
    """Moments of real x and reconstructions y, paired sample by sample, and their co-moment."""

    real: MomentAccumulator | None = None
    reconstructed: MomentAccumulator | None = None
    comoment: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.real = self.real or MomentAccumulator()
        self.reconstructed = self.reconstructed or MomentAccumulator()

    @property
    def count(self) -> int:
        return self.real.count

    def update(self, real: Any, reconstructed: Any) -> PairedMomentAccumulator:
        """Add a batch of real samples and their reconstructions (same count, same order)."""
        x, y = as_rows(real), as_rows(reconstructed)
        if x.shape != y.shape:
            raise ValueError(
                f"real batch {tuple(x.shape)} and reconstructed batch {tuple(y.shape)} differ"
            )
        if y.device != x.device:
            y = y.to(x.device)
        parts = _in_row_blocks(
            x, lambda a, b: PairedMomentAccumulator()._update_rows(x[a:b], y[a:b])
        )
        if parts is None:
            return self._update_rows(x, y)
        for part in parts:
            self.merge(part)
        return self

    def _update_rows(self, x: torch.Tensor, y: torch.Tensor) -> PairedMomentAccumulator:
        device = x.device
        for n, (mx, my), (dx, dy) in _chunk_moments(x, y):
            self._merge(
                n,
                _vec(mx, device),
                _vec(my, device),
                _dot(dx, dx, device),
                _dot(dy, dy, device),
                _dot(dx, dy, device),
            )
        return self

    def merge(self, other: PairedMomentAccumulator) -> PairedMomentAccumulator:
        """Fold another paired accumulator into this one; returns self."""
        if other.count:
            self._merge(
                other.count,
                other.real.mean,
                other.reconstructed.mean,
                other.real.m2,
                other.reconstructed.m2,
                other.comoment,
            )
        return self

    def _merge(self, n_b, mx_b, my_b, m2x_b, m2y_b, cxy_b) -> None:
        if self.count == 0:
            self.comoment = cxy_b.clone()
        else:
            dx, weight = _chan(self.count, n_b, self.real.mean, mx_b.to(self.real.mean.device))
            dy, _ = _chan(self.count, n_b, self.reconstructed.mean, my_b.to(self.real.mean.device))
            self.comoment = self.comoment + cxy_b.to(self.comoment.device) + dx * dy * weight
        self.real._merge(n_b, mx_b, m2x_b)
        self.reconstructed._merge(n_b, my_b, m2y_b)

    def covariance(self) -> torch.Tensor:
        """Per-feature population covariance of x and y."""
        return self.comoment / self.count

    def terms(self) -> dict[str, torch.Tensor]:
        """Per-feature maps: var_real, var_reconstructed, mse, bias2, cov_term, variance loss."""
        var_x, var_y, cov_xy = (
            self.real.variance(),
            self.reconstructed.variance(),
            self.covariance(),
        )
        bias = self.real.mean - self.reconstructed.mean
        bias2 = bias * bias
        # E[(x - y)^2] = Var(x - y) + (E[x - y])^2 = var_x + var_y - 2 cov_xy + bias^2
        mse = var_x + var_y - 2.0 * cov_xy + bias2
        cov_term = 2.0 * (cov_xy - var_y)  # 2 cov(y, x - y)
        return {
            "var_real": var_x,
            "var_reconstructed": var_y,
            "mse": mse,
            "bias2": bias2,
            "cov_term": cov_term,
            "variance_loss_reconstructed": var_x - var_y,
        }


def feature_mean(values: torch.Tensor) -> float:
    """Mean over features, as a Python float (float64)."""
    return float(values.to(torch.float64).mean().item())


def channel_means(values: torch.Tensor, dims: tuple[int, ...]) -> list[float] | None:
    """Per-channel means of a per-feature map for C x H x W samples; None for other layouts."""
    if len(dims) != 3:
        return None
    return [float(v) for v in values.reshape(dims[0], -1).mean(dim=1).tolist()]
