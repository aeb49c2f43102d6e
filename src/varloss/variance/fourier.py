"""Float64 moments of a batch's orthonormal half-spectrum, computed the cheap exact way.

A feature of the spectrum is the real or imaginary part of one coefficient of `rfft2` (norm=
"ortho", float64) of a C x H x W image, ordered C x H x (W//2 + 1) x (real, imaginary).

The FFT is linear, so a set's mean spectrum is the FFT of its mean image and its deviations are
the FFT of its centred images. Per batch, per row chunk sized to stay in cache: the images are
upcast and centred on the chunk's own pixel mean in a reused float64 buffer, transformed (one
unnormalised FFT into a reused output; the orthonormal scale is applied once to the sums) and
their per-feature sums of products added up. The chunks' means then join exactly in one step,
sum over chunks of n_c (F mean_c - F mean)^2 (one batched FFT of the pixel means), so the
caller does one Chan merge per batch, whatever the chunk count, and nothing is squared before
centring. Compared with streaming the FFT of every image through `varloss.stats` (an FFT of the
uncentred images, a second float64 copy, a mean and a centring of the spectra, and a Chan merge
per 2 MiB chunk), that halves the passes over memory.

On CPU with one torch thread the FFT is MKL's (`torch.fft`, ~1.5x scipy's pocketfft). With more,
the batch is cut into as many row blocks, reduced in parallel threads with pocketfft on one thread
each and merged with Chan's formula: threads inside each FFT call (MKL's OpenMP or pocketfft's
workers) meet at every call, and when another process holds a core a chunk then takes 10-20x
longer (measured on 2 busy cores); row blocks meet once per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.fft
import torch

from varloss.stats import (
    NUMPY_DTYPES,
    MomentAccumulator,
    PairedMomentAccumulator,
    centre_rows,
    in_parallel,
    workspace,
)

# Rows per chunk: about this many bytes of float64 images (the buffer and its spectrum stay in
# cache between the centring, the FFT and the products).
_CHUNK_BYTES = 2**19
_MIN_ROWS = 16

__all__ = ["frequency_rows", "moments", "paired_moments"]


def _spectrum_rows(images: torch.Tensor) -> torch.Tensor:
    """N x F float64 features of float64 images N x C x H x W (real and imaginary parts)."""
    if images.device.type == "cpu":  # pocketfft on this thread (no OpenMP team to wait for)
        coefficients = scipy.fft.rfft2(images.numpy(), norm="ortho", workers=1)
        return torch.from_numpy(coefficients.view(np.float64).reshape(images.shape[0], -1))
    coefficients = torch.fft.rfft2(images, norm="ortho")
    return torch.view_as_real(coefficients).reshape(images.shape[0], -1)


def frequency_rows(batch: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """A batch (N x D or N x C x H x W) as N x F float64 rows: real and imaginary parts of its
    orthonormal half-spectrum `rfft2`, on the batch's device (the reference for `moments`)."""
    images = batch.detach().reshape(batch.shape[0], *shape)
    return _spectrum_rows(images.to(torch.float64))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-feature sum over rows of a * b (numpy's einsum on CPU: several times torch's sum)."""
    if a.device.type == "cpu":
        return torch.from_numpy(np.einsum("nd,nd->d", a.numpy(), b.numpy()))
    return (a * b).sum(dim=0)


def _rfft2_into(values: np.ndarray, out: np.ndarray) -> None:
    """Unnormalised `rfft2` of float64 images into `out` (complex128), on CPU, on one thread."""
    if torch.get_num_threads() == 1:
        torch.fft.rfft2(torch.from_numpy(values), out=torch.from_numpy(out))
    else:  # in a row block's thread (`_blocks`): pocketfft without workers
        out[...] = scipy.fft.rfft2(values, workers=1)


def _chunk_spectra(images: torch.Tensor, slot: int) -> Iterator[tuple[int, torch.Tensor, Any]]:
    """(rows, pixel mean, N x F unnormalised spectra of the centred rows) per row chunk of
    N x C x H x W images. On CPU the chunks share buffers (`slot` tells apart the buffers of sets
    streamed side by side): use each chunk before asking for the next."""
    n = images.shape[0]
    if images.device.type != "cpu":  # one chunk: accelerators have no cache to fit
        values = images.to(torch.float64)
        mean = values.mean(dim=0)
        spectra = torch.fft.rfft2(values - mean)
        yield n, mean, torch.view_as_real(spectra).reshape(n, -1)
        return
    if images.dtype not in NUMPY_DTYPES:
        images = images.to(torch.float64)
    source = images.numpy()
    channels, height, width = source.shape[1:]
    step = min(n, max(_MIN_ROWS, _CHUNK_BYTES // (8 * max(1, source[0].size))))
    spectra = workspace(("spectra", slot), (step, channels, height, width // 2 + 1), np.complex128)
    for start in range(0, n, step):
        rows = min(step, n - start)
        out = spectra[:rows]
        mean, chunk = centre_rows(source[start : start + rows], ("fourier", slot))
        _rfft2_into(chunk, out)
        yield rows, torch.from_numpy(mean), torch.from_numpy(out.view(np.float64).reshape(rows, -1))


def _fourier_sums(sets: list[torch.Tensor], cross: bool):
    """(n, per-set mean spectra, per-set sums of squared deviations, the co-moment of the first
    two sets or None) of aligned image batches N x C x H x W, all as spectrum features."""
    height, width = sets[0].shape[-2:]
    squares: list = [0.0] * len(sets)
    product: torch.Tensor | float = 0.0
    counts, chunk_means = [], [[] for _ in sets]
    chunks = (_chunk_spectra(images, slot) for slot, images in enumerate(sets))
    for parts in zip(*chunks, strict=True):
        for index, (_, mean, spectra) in enumerate(parts):
            chunk_means[index].append(mean)
            squares[index] = squares[index] + _dot(spectra, spectra)
        counts.append(parts[0][0])
        if cross:
            product = product + _dot(parts[0][2], parts[1][2])
    n, scale = sum(counts), 1.0 / (height * width)  # |F_ortho|^2 = |F|^2 / (H W)
    weights = torch.tensor(counts, dtype=torch.float64, device=sets[0].device)
    means, deviations = [], []
    for index, stack in enumerate(chunk_means):
        stack = torch.stack(stack)  # k x C x H x W pixel means of the chunks
        mean = (weights[:, None, None, None] * stack).sum(dim=0) / n
        deviations.append(_spectrum_rows(stack - mean) * weights[:, None].sqrt())
        means.append(_spectrum_rows(mean[None])[0])
        squares[index] = squares[index] * scale + (deviations[-1] ** 2).sum(dim=0)
    if cross:
        product = product * scale + (deviations[0] * deviations[1]).sum(dim=0)
    return n, means, squares, product if cross else None


def _images(batch: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    return batch.detach().reshape(batch.shape[0], *shape)


def _accumulate(sets: list[torch.Tensor], cross: bool):
    """The moments of one block of rows: a MomentAccumulator, or with `cross` a paired one."""
    n, means, squares, comoment = _fourier_sums(sets, cross)
    parts = [MomentAccumulator(n, mean, m2) for mean, m2 in zip(means, squares, strict=True)]
    return PairedMomentAccumulator(*parts, comoment) if cross else parts[0]


def _blocks(sets: list[torch.Tensor], cross: bool):
    """`_accumulate` over row blocks, one per torch thread, in parallel threads (numpy, scipy and
    torch release the GIL), merged in order; one block on accelerators or small batches."""
    n, threads = sets[0].shape[0], torch.get_num_threads()
    if sets[0].device.type != "cpu" or threads < 2 or n < 4 * _MIN_ROWS * threads:
        return _accumulate(sets, cross)
    bounds = np.linspace(0, n, threads + 1).astype(int).tolist()
    parts = in_parallel(lambda a, b: _accumulate([s[a:b] for s in sets], cross), bounds)
    for part in parts[1:]:
        parts[0].merge(part)
    return parts[0]


def moments(batch: torch.Tensor, shape: tuple[int, int, int]) -> MomentAccumulator:
    """Count, mean and sums of squared deviations of a batch's spectrum features."""
    if batch.shape[0] == 0:
        return MomentAccumulator()
    return _blocks([_images(batch, shape)], cross=False)


def paired_moments(
    real: torch.Tensor, reconstructed: torch.Tensor, shape: tuple[int, int, int]
) -> PairedMomentAccumulator:
    """`moments` of real images and their reconstructions, and the co-moment of the two."""
    if real.shape[0] == 0:
        return PairedMomentAccumulator()
    if real.shape[0] != reconstructed.shape[0]:
        raise ValueError(
            f"real batch of {real.shape[0]} and reconstructed batch of {reconstructed.shape[0]}"
            " samples differ"
        )
    sets = [_images(real, shape), _images(reconstructed, shape).to(real.device)]
    return _blocks(sets, cross=True)
