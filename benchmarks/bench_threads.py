"""`--threads auto` (the default) against `--threads 1` and torch's default thread count.

Runs the README's worked example, shortened: `varloss train --family dense --dataset mnist
--latent 2 --epochs 1 --limit L` (L / 100 batches), each setting as its own command (a fresh
process, so torch starts from its default), on this machine as it is ("quiet") and again beside
CPU-bound processes (`--busy K` Python busy loops, started for that part and stopped after it).
The settings alternate within each repeat, in a rotated order, so that a change of load hits
all of them alike. Timed: the training loop (the sum of the per-epoch `seconds` in the run's
history, which excludes start-up, auto's timing steps and the evaluation) and the whole command
(wall clock, everything included). Prints the median of the repeats, batches per second, the
thread count each setting used (auto's choice as recorded in report.json) and the ratios to
`--threads 1` and to torch's default, measured side by side in one run.

    python benchmarks/bench_threads.py [--limit 10000] [--repeats 1] [--busy 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

BUSY_LOOP = "while True:\n    pass\n"


def torch_default_threads() -> int:
    """What torch picks in a fresh process (one per core, usually)."""
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout)  # fmt: skip


def train_once(threads: str, limit: int, folder: Path) -> dict:
    """One `varloss train` command; its training-loop seconds, wall seconds, threads used."""
    out = folder / f"run-{threads}"
    command = [
        sys.executable, "-m", "varloss", "train", "--family", "dense", "--dataset", "mnist",
        "--latent", "2", "--epochs", "1", "--limit", str(limit), "--eval-limit", "1000",
        "--fid", "off", "--no-report", "-q", "--force", "--out", str(out), "--threads", threads,
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    report = json.loads((out / "report.json").read_text())
    loop = sum(row["seconds"] for row in report["history"])
    return {"loop": loop, "wall": wall, "used": report["settings"]["threads"]["used"]}


@contextmanager
def busy(processes: int):
    """`processes` CPU-bound Python loops for the duration of the block."""
    started = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(processes)]
    try:
        time.sleep(1.0)  # let them take their cores
        yield
    finally:
        for process in started:
            process.terminate()
            process.wait()


def measure(settings: list[str], limit: int, repeats: int, folder: Path) -> dict[str, dict]:
    """Each setting `repeats` times, alternating in a rotated order; medians."""
    results: dict[str, list[dict]] = {setting: [] for setting in settings}
    for repeat in range(repeats):
        shift = repeat % len(settings)
        for setting in settings[shift:] + settings[:shift]:
            results[setting].append(train_once(setting, limit, folder))
    return {
        setting: {
            "loop": statistics.median(r["loop"] for r in runs),
            "wall": statistics.median(r["wall"] for r in runs),
            "used": sorted({r["used"] for r in runs}),
        }
        for setting, runs in results.items()
    }


def print_table(title: str, results: dict[str, dict], batches: int, default: str) -> None:
    print(f"\n{title}")
    print(
        f"{'--threads':>10} {'used':>6} {'loop s':>8} {'batch/s':>8} {'wall s':>8} "
        f"{'loop vs 1':>10} {'loop vs default':>16} {'wall vs 1':>10}"
    )
    one, torch_default = results["1"], results[default]
    for setting, r in results.items():
        used = ",".join(str(u) for u in r["used"])
        print(
            f"{setting:>10} {used:>6} {r['loop']:8.2f} {batches / r['loop']:8.1f} "
            f"{r['wall']:8.2f} {r['loop'] / one['loop']:10.2f} "
            f"{r['loop'] / torch_default['loop']:16.2f} {r['wall'] / one['wall']:10.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10000, help="training images (batches x 100)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--busy", type=int, default=1, help="busy-loop processes beside it")
    args = parser.parse_args()
    default = str(torch_default_threads())
    settings = ["auto", "1"] + ([default] if default != "1" else [])
    batches = -(-args.limit // 100)
    print(
        f"varloss train --family dense --dataset mnist --latent 2 --epochs 1 --limit {args.limit}"
        f" ({batches} batches); torch's default: {default} threads; {os.cpu_count()} CPUs; "
        f"median of {args.repeats}; ratios < 1: faster than the reference"
    )
    with tempfile.TemporaryDirectory() as folder:
        quiet = measure(settings, args.limit, args.repeats, Path(folder))
        print_table("quiet (the machine as it is)", quiet, batches, default)
        with busy(args.busy):
            loaded = measure(settings, args.limit, args.repeats, Path(folder))
        print_table(f"beside {args.busy} CPU-bound process(es)", loaded, batches, default)


if __name__ == "__main__":
    main()
