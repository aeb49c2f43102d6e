"""`measure(..., spectrum=True)` against the plain `measure`, side by side in one run.

Two inputs: the 10,000 MNIST test images (offline cache; with a Gaussian blur of them as the
reconstructions and the blurred images in another order as generated samples) and 60,000 x 3 x
32 x 32 synthetic float32 images (reconstructions 0.6 x + noise, generated set = the same array).
Each (input, mode) runs in its own process, best of `--repeats`; printed: wall time, the ratio
spectrum / plain (the issue's budget is 2x) and the peak memory each allocates on top of its
inputs (the spectrum streams float64 moments of the half-spectrum: O(D), like the plain measure).

    python benchmarks/bench_spectrum.py [--repeats 3] [--n-synthetic 60000] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import varloss
from varloss.data import load

CASES = ("mnist", "synthetic")
NAMES = ("real", "reconstructed", "generated")
MODES = ("plain", "spectrum")


def _blur(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """A periodic Gaussian blur (through the FFT), float32."""
    freq_y, freq_x = np.meshgrid(
        np.fft.fftfreq(images.shape[-2]), np.fft.fftfreq(images.shape[-1]), indexing="ij"
    )
    transfer = np.exp(-2 * (np.pi * sigma) ** 2 * (freq_y**2 + freq_x**2))
    return np.real(np.fft.ifft2(np.fft.fft2(images) * transfer)).astype(np.float32)


def _inputs(case: str, n_synthetic: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if case == "mnist":
        real = load("mnist", "test").images.numpy().astype(np.float32)
        reconstructed = _blur(real)
        order = np.random.default_rng(0).permutation(len(real))
        return real, reconstructed, reconstructed[order]
    rng = np.random.default_rng(0)
    real = rng.random((n_synthetic, 3, 32, 32), dtype=np.float32)
    reconstructed = 0.6 * real
    reconstructed += 0.2 * rng.random(real.shape, dtype=np.float32)
    return real, reconstructed, reconstructed


def _worker(args: argparse.Namespace) -> None:
    """Time one (case, mode) in this process; memory: growth of the max RSS beyond the inputs
    (read from the .npy files the parent wrote, so no temporary of their making counts)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.inputs)
    real, reconstructed, generated = (np.load(folder / f"{name}.npy") for name in NAMES)
    spectrum = args.worker == "spectrum"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the inputs are in already
    varloss.measure(real[:500], reconstructed[:500], generated[:500], spectrum=spectrum)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        report = varloss.measure(real, reconstructed, generated, spectrum=spectrum)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    share = report.spectrum["high_frequency_share"]["reconstructed"] if spectrum else None
    print(json.dumps({"seconds": min(times), "extra_mib": peak / 1024, "share": share}))


def _run(mode: str, folder: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--inputs", folder,
               "--repeats", str(args.repeats)]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-synthetic", type=int, default=60000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    print(
        f"measure(real, reconstructed, generated) with and without spectrum=True; torch threads "
        f"{args.threads or torch.get_num_threads()}, best of {args.repeats}, one process each"
    )
    for case in CASES:
        label = "MNIST test, 10000 x 1 x 28 x 28" if case == "mnist" else (
            f"synthetic, {args.n_synthetic} x 3 x 32 x 32 float32"
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as folder:
            for name, array in zip(NAMES, _inputs(case, args.n_synthetic), strict=True):
                np.save(Path(folder) / f"{name}.npy", array)
            plain, spectrum = (_run(mode, folder, args) for mode in MODES)
        print(
            f"{label:40s} plain {plain['seconds']:7.2f} s ({plain['extra_mib']:6.1f} MiB extra)  "
            f"spectrum {spectrum['seconds']:7.2f} s ({spectrum['extra_mib']:6.1f} MiB extra)  "
            f"ratio spectrum / plain {spectrum['seconds'] / plain['seconds']:.2f}x"
        )


if __name__ == "__main__":
    main()
