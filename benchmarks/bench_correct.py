"""`varloss correct --method all` against the time of training the model it corrects.

Trains the `standard` preset's dense VAE on MNIST (latent 8 by default; the preset's settings:
batch 64, lr 1e-3, sampled reconstructions, early stopping with patience 3 and min_delta 0.002
on a seeded 10% validation split, at most 40 epochs), then runs `correct --method all` on it
(FID off: the FID's classifier is trained once per data set and cached, not part of correcting a
model) twice, without and with the second stage in a worker process (`--no-background`, the
default `--background`), all in this process with the same thread count, and prints the wall
times, each correct's ratio to training (issue 23's target: correct at most a quarter of
training), whether both gave the same numbers, and where the default correct's time went (each
method's fit and sample seconds, from its report.json; a fit in the worker overlaps the others).

    python benchmarks/bench_correct.py [--latent 8] [--limit N] [--epochs 40] [--threads 1|auto]

`--limit` trains and fits on the first N training images (a quick check; the ratio is then not
the preset's). `--threads 1`, the default, trains as the preset does: `varloss study` runs one
single-threaded job per core, so each of its models trains on one thread. `--threads auto` lets
training time one thread against all cores (alone on a quiet machine it may take both: a faster
training than the study's, so a higher ratio); correct then times its own choice too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from varloss.pipelines.correct import correct
from varloss.pipelines.train import train
from varloss.train_config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--threads", default="1", help="a count, or auto (train and correct each time theirs)"
    )
    args = parser.parse_args()
    args.threads = args.threads if args.threads == "auto" else int(args.threads)
    if args.threads != "auto":
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        config = TrainConfig(
            family="dense",
            dataset="mnist",
            epochs=args.epochs,
            latent=args.latent,
            out=str(run),
            limit=args.limit,
            batch_size=64,
            lr=1e-3,
            reconstruction="sample",
            patience=3,
            min_delta=0.002,
            fid="off",
        )
        started = time.perf_counter()
        trained = train(config, progress=False, threads=args.threads)
        train_seconds = time.perf_counter() - started
        seconds, reports = {}, {}
        for background in (False, True):  # side by side; each fits from scratch
            started = time.perf_counter()
            reports[background] = correct(
                run,
                "all",
                Path(folder) / f"correct-{background}",
                fid="off",
                progress=False,
                threads=args.threads,
                background=background,
            )
            seconds[background] = time.perf_counter() - started
    report = reports[True]
    differ = [
        name
        for name, row in report["methods"].items()
        if reports[False]["methods"][name]["pixel_frechet"] != row["pixel_frechet"]
    ]
    epochs = trained.get("stopped_epoch")  # the epochs trained (early stopping ends them)
    train_threads = (trained.get("settings") or {}).get("threads", {}).get("used")
    print(f"train   dense latent {args.latent}, limit {args.limit}: {train_seconds:7.1f} s "
          f"({epochs} epochs, {train_threads} torch threads)")  # fmt: skip
    for background, label in ((False, "--no-background"), (True, "--background (default)")):
        print(f"correct --method all {label:23s} {seconds[background]:7.1f} s  ratio to train "
              f"{seconds[background] / train_seconds:5.2f} (target <= 0.25)")  # fmt: skip
    threads = {b: r["settings"]["threads"]["used"] for b, r in reports.items()}
    same = "all methods" if not differ else "not for " + ", ".join(differ)
    print(f"pixel FD the same both ways: {same} (torch threads used: {threads[False]} and "
          f"{threads[True]})")  # fmt: skip
    correct_seconds = seconds[True]
    spent = 0.0
    for name, row in report["methods"].items():
        fit = row.get("fit_seconds") or 0.0
        # a variant reuses another method's fit: its fit seconds are that one's, counted once
        spent += row["sample_seconds"] + (fit if row["sampler_source"] == "fitted" else 0.0)
        worker = row.get("fit_background_seconds")
        meanwhile = f"  (+{worker:.1f} s in the worker)" if worker is not None else ""
        print(f"  {name:20s} fit {fit:6.1f} s  sample {row['sample_seconds']:5.1f} s  "
              f"({row['sampler_source']}){meanwhile}")  # fmt: skip
    print(f"  the rest (data, measurements, price, files): {correct_seconds - spent:5.1f} s")


if __name__ == "__main__":
    main()
