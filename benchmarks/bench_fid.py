"""Inception FID speed, side by side in one run: varloss's features against the bare network,
and the Fréchet step against scipy's sqrtm.

1. Features: `InceptionExtractor.features` (uint8 rounding, grey -> RGB, TF1 bilinear resize to
   299, (x - 128) / 128, float64 out) against the bare TorchScript forward on the same batches
   already pre-processed (what the network alone costs), in images/s and as a ratio (the issue's
   target: at least 0.9x), for float32 and channels-last, with the pre-processing alone as a
   share of the network's time (the ratio's bound on a loaded machine); plus the peak memory
   (CUDA: the allocator's peak; CPU: the growth of the process's peak RSS, VmHWM, over the run).
2. The Fréchet step at `--dim` (2048: Inception) for covariances of `--dim`-d Gaussian features:
   `varloss.quality.frechet_distance` (symmetric eigendecomposition) against the TTUR /
   pytorch-fid formula with `scipy.linalg.sqrtm`, seconds each and their FIDs.

Needs the weights (`varloss weights fetch inception`, or --weights PATH).

    python benchmarks/bench_fid.py [--device cpu|cuda] [--images 64] [--batch 32] [--repeats 3]
                                   [--dim 2048] [--no-sqrtm] [--threads N]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import scipy.linalg
import torch

from varloss.quality.frechet import frechet_distance
from varloss.quality.inception import InceptionExtractor


def peak_memory(device: torch.device) -> float:
    """MB: the CUDA allocator's peak, else the process's peak RSS so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(functions: dict, repeats: int, device: torch.device) -> dict[str, float]:
    """Best wall seconds of each function over `repeats` rounds, the functions interleaved in
    every round (a shared machine's load then falls on all of them alike), after one warm-up
    round (TorchScript specialises on its first calls)."""
    best = {name: float("inf") for name in functions}
    for round_ in range(repeats + 1):
        for name, function in functions.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            function()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def features(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 1, 28, 28), generator=generator) / 255.0
    print(f"features: {args.images} grey 28 x 28 images, batches of {args.batch}, {device}")
    print("| layout | bare network img/s | varloss img/s | ratio | peak memory MB |")
    print("|---|---|---|---|---|")
    for channels_last in (False, True):
        extractor = InceptionExtractor(
            args.weights, batch_size=args.batch, device=device, channels_last=channels_last
        )
        batches = [
            extractor.preprocess(images[i : i + args.batch].to(device))
            for i in range(0, args.images, args.batch)
        ]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def bare(extractor=extractor, batches=batches) -> None:
            with torch.no_grad():
                for batch in batches:
                    extractor.model(batch)

        def ours(extractor=extractor) -> None:
            extractor.features(images)

        def preprocessing(extractor=extractor) -> None:
            for i in range(0, args.images, args.batch):
                extractor.preprocess(images[i : i + args.batch].to(device))

        before = peak_memory(device)
        functions = {"bare": bare, "ours": ours, "pre": preprocessing}
        seconds = timed(functions, args.repeats, device)
        seconds_bare, seconds_ours = seconds["bare"], seconds["ours"]
        memory = peak_memory(device) - (0 if device.type == "cuda" else before)
        layout = "channels-last" if channels_last else "float32"
        rate_bare, rate_ours = args.images / seconds_bare, args.images / seconds_ours
        print(
            f"| {layout} | {rate_bare:.2f} | {rate_ours:.2f} | {rate_ours / rate_bare:.3f}x "
            f"| {memory:.0f} |"
        )
        share = seconds["pre"] / seconds["bare"]
        print(f"|   pre-processing alone | {seconds['pre']:.4f} s | {share:.2%} of the network's |")


def frechet(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    dim = args.dim
    samples = [rng.normal(size=(2 * dim, dim)) @ rng.normal(size=(dim, dim)) / dim for _ in "ab"]
    means = [s.mean(axis=0) for s in samples]
    covariances = [np.cov(s, rowvar=False) for s in samples]
    start = time.perf_counter()
    ours = frechet_distance(means[0], covariances[0], means[1], covariances[1]).fid
    seconds_ours = time.perf_counter() - start
    print(f"\nFréchet step at {dim} dimensions:")
    print(f"  symmetric eigendecomposition (varloss): {seconds_ours:.2f} s, FID {ours:.6f}")
    if args.no_sqrtm:
        return
    start = time.perf_counter()
    root = scipy.linalg.sqrtm(covariances[0] @ covariances[1])
    diff = means[0] - means[1]
    trace = np.trace(covariances[0]) + np.trace(covariances[1])
    theirs = float(diff @ diff + trace - 2 * np.trace(root.real))
    seconds_theirs = time.perf_counter() - start
    print(f"  scipy.linalg.sqrtm (TTUR / pytorch-fid): {seconds_theirs:.2f} s, FID {theirs:.6f}")
    print(f"  sqrtm / eigendecomposition: {seconds_theirs / seconds_ours:.2f}x the time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default=None, help="weights file (default: the fetched one)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dim", type=int, default=2048, help="Fréchet step dimension")
    parser.add_argument("--no-sqrtm", action="store_true", help="skip scipy's sqrtm (slow)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"bench_fid: torch {torch.__version__}, {torch.get_num_threads()} threads")
    features(args)
    frechet(args)


if __name__ == "__main__":
    main()
