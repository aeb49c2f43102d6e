"""`measure(..., spectrum=True)` against the plain `measure`, side by side in one run.

Two inputs: the 10,000 MNIST test images (offline cache; with a Gaussian blur of them as the
reconstructions and the blurred images in another order as generated samples) and 60,000 x 3 x
32 x 32 synthetic float32 images (reconstructions 0.6 x + noise, generated set = the same array).
Each (input, mode) runs in its own process, best of `--repeats`; printed: wall time and the ratio
spectrum / plain (the issue's budget is 2x), and the floor: the float64 `rfft2` of every image of
the three sets alone (the FFTs only, on float64 chunks made beforehand), as a ratio to plain.
Memory: `measure` streams, so its peak memory must not grow with N. Plain and spectrum then run
once more each in their own process on synthetic 3 x 32 x 32 batches made on the fly (no input
array held), for N and 2N images; printed: the growth of the process's peak RSS (VmHWM, reset
after a warm-up) to the end of the run, the same at N and 2N when memory is O(D).

    python benchmarks/bench_spectrum.py [--repeats 3] [--n-synthetic 60000] [--n-memory 30000]
                                        [--threads N]
"""

from __future__ import annotations

import argparse
import json
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
MODES = ("plain", "spectrum", "fft")


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


def _stream(n: int, seed: int, batch: int = 1024, scale: float = 1.0):
    """n synthetic 3 x 32 x 32 float32 images in batches, made on the fly (seeded)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        yield scale * rng.random((min(batch, n - start), 3, 32, 32), dtype=np.float32)


def _status_mib(key: str) -> float:
    """A memory line of /proc/self/status (VmHWM: peak RSS, VmRSS: RSS now), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> float:
    """Reset the peak RSS to the RSS now (Linux: clear_refs 5) and return it, in MiB; ru_maxrss
    cannot be reset and is inherited from the parent across fork and exec."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmHWM")


def _memory_worker(args: argparse.Namespace) -> None:
    """Peak RSS growth of one streamed `measure` over args.stream images, after a warm-up."""
    spectrum = args.worker == "spectrum"
    sets = lambda n: (_stream(n, 0), _stream(n, 0, scale=0.6), _stream(n, 1))  # noqa: E731
    varloss.measure(*sets(3000), spectrum=spectrum)  # warm-up: libraries, plans, buffers
    before = _reset_peak()
    varloss.measure(*sets(args.stream), spectrum=spectrum)
    print(json.dumps({"extra_mib": _status_mib("VmHWM") - before, "base_mib": before}))


def _worker(args: argparse.Namespace) -> None:
    """Time one (case, mode) in this process, on the arrays the parent wrote."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stream:
        _memory_worker(args)
        return
    folder = Path(args.inputs)
    real, reconstructed, generated = (np.load(folder / f"{name}.npy") for name in NAMES)
    if args.worker == "fft":
        _fft_worker((real, reconstructed, generated), args.repeats)
        return
    spectrum = args.worker == "spectrum"
    varloss.measure(real[:500], reconstructed[:500], generated[:500], spectrum=spectrum)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        report = varloss.measure(real, reconstructed, generated, spectrum=spectrum)
        times.append(time.perf_counter() - start)
    share = report.spectrum["high_frequency_share"]["reconstructed"] if spectrum else None
    print(json.dumps({"seconds": min(times), "share": share}))


def _fft_worker(sets: tuple[np.ndarray, ...], repeats: int, rows: int = 256) -> None:
    """The FFTs alone: unnormalised float64 rfft2 of every image, `rows` images per call into a
    reused output, the chunks upcast beforehand (what no exact spectrum can skip)."""
    chunks = [
        torch.from_numpy(array[start : start + rows].astype(np.float64))
        for array in sets
        for start in range(0, len(array), rows)
    ]
    out = torch.fft.rfft2(chunks[0])
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        for chunk in chunks:
            torch.fft.rfft2(chunk, out=out[: len(chunk)])
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": min(times[1:])}))


def _run(mode: str, folder: str, args: argparse.Namespace, stream: int = 0) -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--inputs", folder,
               "--repeats", str(args.repeats), "--stream", str(stream)]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-synthetic", type=int, default=60000)
    parser.add_argument("--n-memory", type=int, default=30000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--stream", type=int, default=0, help=argparse.SUPPRESS)
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
            plain, spectrum, fft = (_run(mode, folder, args) for mode in MODES)
        print(
            f"{label:40s} plain {plain['seconds']:7.3f} s  spectrum {spectrum['seconds']:7.3f} s  "
            f"ratio spectrum / plain {spectrum['seconds'] / plain['seconds']:.2f}x  (the FFTs "
            f"alone {fft['seconds']:.3f} s, {fft['seconds'] / plain['seconds']:.2f}x plain)"
        )
    print("peak memory growth, streamed synthetic 3 x 32 x 32 batches of 1024 (O(D): flat in N)")
    for n in (args.n_memory, 2 * args.n_memory):
        plain, spectrum = (_run(mode, "", args, stream=n) for mode in ("plain", "spectrum"))
        print(
            f"N = {n:6d}: plain {plain['extra_mib']:6.1f} MiB  spectrum "
            f"{spectrum['extra_mib']:6.1f} MiB  (on a process of {plain['base_mib']:.0f} and "
            f"{spectrum['base_mib']:.0f} MiB after warm-up)"
        )


if __name__ == "__main__":
    main()
