"""The GPU check: what varloss does on one CUDA device, in at most 8 minutes, as one table.

    make gpu-check            # or: python benchmarks/gpu_check.py [--budget 480]

Three parts, each in its own process with its share of the time budget (a part that runs out
of time is a row saying so, never a hang):

1. `bench_train.py --device cuda`: varloss's trainer against pythae's `BaseTrainer` (2 epochs
   of Chollet's dense VAE on MNIST), the throughput ratio;
2. one run per family of the `paper` preset on MNIST (its first latent size, batch size,
   learning rate and reconstruction protocol) with `--compile --bf16`, epochs capped at
   `--epochs` (1) so that all five fit: seconds per epoch, variance loss and MSE on the test split;
3. `bench_spectrum.py` when it exists (skipped with a message when it does not);
4. `bench_fid.py --device cuda`: Inception-v3 FID features in images/s, varloss against the bare
   network, float32 and channels-last (needs `varloss weights fetch inception` beforehand; the
   row says so when the weights are not cached).

Without a CUDA device (or with a CPU build of torch) it says so and exits 0, having measured
nothing. `--smoke` runs the same parts on the CPU on 500 images, without --compile/--bf16, to
check the script itself. Copy the table into the README with the date and the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from importlib import resources
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
BUDGET_SECONDS = 480  # the 8 minutes, for everything
SHARES = {"bench_train": 0.2, "families": 0.55, "spectrum": 0.15, "inception": 0.1}


def paper_mnist_settings() -> tuple[list[str], dict]:
    """The paper preset's families and its MNIST settings (first latent size), from its YAML."""
    preset = yaml.safe_load(resources.files("varloss").joinpath("presets/paper.yaml").read_text())
    defaults = preset.get("defaults", {})
    for entry in preset["grid"]:
        datasets = entry["dataset"] if isinstance(entry["dataset"], list) else [entry["dataset"]]
        if "mnist" in datasets:
            latents = entry["latent"] if isinstance(entry["latent"], list) else [entry["latent"]]
            settings = {**defaults, "latent": latents[0], "epochs": entry.get("epochs")}
            return list(entry["family"]), settings
    raise SystemExit("the paper preset has no MNIST entry; nothing to check")


def run_part(command: list[str], seconds: float) -> tuple[str, float, str]:
    """(output, wall seconds, status) of a command given `seconds` at most; on time out its
    whole process group (workers included) is stopped."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parent,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, errors = process.communicate(timeout=max(seconds, 1))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return output or "", time.perf_counter() - started, f"stopped after {seconds:.0f} s"
    status = "ok" if process.returncode == 0 else f"failed (exit {process.returncode})"
    if process.returncode != 0:
        tail = (errors or output).strip().splitlines()[-1:] or [""]
        status += f": {tail[0][:80]}"
    return output, time.perf_counter() - started, status


def bench_train(device: str, seconds: float, smoke: bool) -> list[tuple[str, str, str, float]]:
    command = [sys.executable, str(HERE / "bench_train.py"), "--device", device, "--epochs", "2"]
    command += ["--limit", "500"] if smoke else ["--threads", "0"]
    output, wall, status = run_part(command, seconds)
    ratio = re.search(r"ratio varloss / pythae \(wall clock\): ([\d.]+)x", output)
    speeds = dict(re.findall(r"^(varloss|pythae)\s+([\d.]+) s/epoch", output, re.MULTILINE))
    result = (
        f"{ratio.group(1)}x pythae's throughput (varloss {speeds.get('varloss')} s/epoch, "
        f"pythae {speeds.get('pythae')} s/epoch)"
        if ratio
        else status
    )
    return [("bench_train.py", "Chollet dense VAE, MNIST, 2 epochs", result, wall)]


def family_runs(
    device: str, seconds: float, epochs: int, smoke: bool
) -> list[tuple[str, str, str, float]]:
    families, settings = paper_mnist_settings()
    rows = []
    deadline = time.perf_counter() + seconds
    with tempfile.TemporaryDirectory() as folder:
        for index, family in enumerate(families):
            share = (deadline - time.perf_counter()) / (len(families) - index)
            out = Path(folder) / family
            command = [
                sys.executable, "-m", "varloss", "train", "--family", family,
                "--dataset", "mnist", "--latent", str(settings["latent"]),
                "--batch-size", str(settings.get("batch_size", 128)),
                "--lr", str(settings.get("lr", 1e-3)), "--epochs", str(epochs),
                "--seed", str(settings.get("seed", 0)), "--device", device, "--out", str(out),
                "--fid", "off", "--quiet", "--no-report",
            ]  # fmt: skip
            if settings.get("reconstruction"):
                command += ["--reconstruction", str(settings["reconstruction"])]
            fast = ["--compile", "--bf16"]
            command += ["--limit", "500", "--eval-limit", "200"] if smoke else fast
            output, wall, status = run_part(command, share)
            what = f"paper preset, MNIST, latent {settings['latent']}, {epochs} epoch(s)"
            rows.append((f"train {family}", what, _train_result(out, status), wall))
    return rows


def _train_result(out: Path, status: str) -> str:
    report_file = out / "report.json"
    if status != "ok" or not report_file.is_file():
        return status
    report = json.loads(report_file.read_text())
    seconds = [row["seconds"] for row in report.get("history", [])]
    loss, mse = report.get("variance_loss_reconstructed"), report.get("mse")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    return f"{min(seconds):.1f} s/epoch, variance loss {fmt(loss)}, MSE {fmt(mse)}"


def spectrum(seconds: float, smoke: bool) -> list[tuple[str, str, str, float]]:
    script = HERE / "bench_spectrum.py"
    if not script.is_file():
        print(f"{script.name} is not in benchmarks/ yet: the spectrum benchmark is skipped")
        return [("bench_spectrum.py", "measure with and without spectrum", "skipped: absent", 0.0)]
    command = [sys.executable, str(script), "--repeats", "1"]
    command += ["--n-synthetic", "2000" if smoke else "20000"]
    output, wall, status = run_part(command, seconds)
    ratios = re.findall(r"([\d.]+)x", output)
    result = f"spectrum / plain: {', '.join(r + 'x' for r in ratios)}" if ratios else status
    return [("bench_spectrum.py", "measure with and without spectrum", result, wall)]


def inception(device: str, seconds: float, smoke: bool) -> list[tuple[str, str, str, float]]:
    command = [sys.executable, str(HERE / "bench_fid.py"), "--device", device, "--no-sqrtm"]
    command += ["--images", "8", "--batch", "4", "--repeats", "1", "--dim", "64"] if smoke else [
        "--images", "1024", "--batch", "128", "--repeats", "2",
    ]  # fmt: skip
    output, wall, status = run_part(command, seconds)
    rows = re.findall(
        r"^\| (float32|channels-last) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x", output, re.M
    )
    if not rows:
        result = (
            "skipped: no weights (varloss weights fetch inception)"
            if "weights" in status
            else status
        )
    else:
        result = "; ".join(f"{r[0]} {r[2]} img/s ({r[3]}x the bare network's {r[1]})" for r in rows)
    return [("bench_fid.py", "Inception-v3 FID features, 28 x 28 grey", result, wall)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds in all")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each family's run")
    parser.add_argument("--smoke", action="store_true", help="CPU, 500 images: checks the script")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(
            f"gpu-check: no CUDA device here (torch {torch.__version__}, {build}); nothing was "
            "measured. Run it on a GPU machine with a CUDA build of torch, e.g. make clean-venv "
            'gpu-check TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>".'
        )
        return
    device = "cpu" if args.smoke else "cuda"
    name = "CPU (smoke run)" if args.smoke else torch.cuda.get_device_name(0)
    print(f"gpu-check {date.today().isoformat()} on {name}, torch {torch.__version__}")
    budget = {part: share * args.budget for part, share in SHARES.items()}
    rows = bench_train(device, budget["bench_train"], args.smoke)
    rows += family_runs(device, budget["families"], args.epochs, args.smoke)
    rows += spectrum(budget["spectrum"], args.smoke)
    rows += inception(device, budget["inception"], args.smoke)
    print("\n| part | what | result | wall s |\n|---|---|---|---|")
    for part, what, result, wall in rows:
        print(f"| {part} | {what} | {result} | {wall:.0f} |")


if __name__ == "__main__":
    main()
