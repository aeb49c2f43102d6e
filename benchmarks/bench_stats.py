"""Streaming float64 statistics (varloss.stats) against numpy's two-pass np.var, side by side.

Same in-memory float32 array for both (default 60000 x 3072, the size of CIFAR-10's training set).
Prints wall time, the ratio numpy / varloss (> 1: varloss is faster) and the peak memory each one
allocates on top of the input (numpy's np.var materialises x - mean, an N x D temporary; varloss
works in small float64 chunks, O(D)). Each method runs in its own process (max RSS growth).
np.var runs on one core; varloss reduces row blocks on `--threads` threads (default: torch's
count), so `--threads 1` compares one core with one core.

    python benchmarks/bench_stats.py [--n 60000] [--d 3072] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from varloss.stats import MomentAccumulator, feature_mean


def _numpy(x: np.ndarray) -> float:
    return float(np.var(x, axis=0).mean())


def _varloss(x: np.ndarray) -> float:
    return feature_mean(MomentAccumulator().update(x).variance())


def _worker(args: argparse.Namespace) -> None:
    """Time one method in this process; peak memory: growth of the max RSS beyond the input."""
    if args.threads:
        torch.set_num_threads(args.threads)
    x = np.random.default_rng(0).random((args.n, args.d), dtype=np.float32)
    x += 0.25
    function = {"numpy": _numpy, "varloss": _varloss}[args.worker]
    function(x[:1000])  # warm-up (thread pools, first allocations)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        value = function(x)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    exact = float(np.var(x.astype(np.float64), axis=0).mean())
    print(
        json.dumps(
            {
                "seconds": min(times),
                "extra_mib": peak / 1024,
                "rel_error": abs(value - exact) / exact,
            }
        )
    )


def _measure(method: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--n",
        str(args.n),
        "--d",
        str(args.d),
        "--repeats",
        str(args.repeats),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--d", type=int, default=3072)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--worker", choices=("numpy", "varloss"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    print(
        f"input: {args.n} x {args.d} float32 ({args.n * args.d * 4 / 2**20:.0f} MiB), "
        f"torch threads {args.threads or torch.get_num_threads()}, best of {args.repeats}, "
        "each method in its own process"
    )
    results = {method: _measure(method, args) for method in ("numpy", "varloss")}
    labels = {"numpy": "numpy np.var(x, axis=0)", "varloss": "varloss.stats (float64)"}
    for method, result in results.items():
        print(
            f"{labels[method]:24s} {result['seconds']:7.3f} s  peak extra memory "
            f"{result['extra_mib']:7.1f} MiB  rel. error vs float64 {result['rel_error']:.1e}"
        )
    ours, theirs = results["varloss"], results["numpy"]
    print(
        f"speed ratio numpy / varloss: {theirs['seconds'] / ours['seconds']:.2f}x   "
        f"memory ratio numpy / varloss: {theirs['extra_mib'] / max(ours['extra_mib'], 0.1):.1f}x"
    )


if __name__ == "__main__":
    main()
