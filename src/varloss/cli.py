"""The `varloss` command. Thin: parse arguments, call the library, print.

Errors users can fix (bad input) are raised as `varloss.errors.InputError` by the library;
the CLI prints their one-sentence message and exits with a non-zero code, no traceback.
"""

from __future__ import annotations

import shlex
import sys

import typer

from varloss import __version__

app = typer.Typer(
    name="varloss",
    help="Measure, explain and correct the variance loss of VAEs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"varloss {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
    plugin: list[str] = typer.Option(
        None,
        "--plugin",
        help="Import a module (or .py file) that registers your own model families, before the "
        "command: `varloss --plugin my_models train --model mine ...`. Repeatable; also "
        "VARLOSS_PLUGINS. Study runs in other processes get it through VARLOSS_PLUGINS too.",
    ),
) -> None:
    """Measure, explain and correct the variance loss of VAEs."""
    if plugin:
        import os

        from varloss.models import PLUGINS_ENV, load_plugins

        load_plugins(plugin)
        # worker processes (study --jobs, torchrun ranks) import them again from the environment
        known = [p for p in os.environ.get(PLUGINS_ENV, "").split(",") if p]
        os.environ[PLUGINS_ENV] = ",".join(dict.fromkeys([*known, *plugin]))


def command_line() -> str:
    """This invocation as a shell command (`varloss ...`), recorded in results and reports."""
    return shlex.join(["varloss", *sys.argv[1:]])


# ---- commands are added below this line, one section per command (measure, data, train, ...) ----


# ---- measure ----

MAP_SUFFIXES = (".png", ".svg", ".pdf", ".npz")


def _parse_ranges(values: list[str] | None) -> dict[str, tuple[float, float]] | None:
    """`--range LOW,HIGH` (all sets) or `--range SET=LOW,HIGH`, repeatable."""
    from varloss.errors import InputError
    from varloss.measure import SET_NAMES

    if not values:
        return None
    ranges: dict[str, tuple[float, float]] = {}
    for value in values:
        name, _, pair = value.rpartition("=")
        names = [name] if name else list(SET_NAMES)
        if name and name not in SET_NAMES:
            raise InputError(f"--range {value!r} names set {name!r}; expected one of {SET_NAMES}.")
        try:
            low, high = (float(part) for part in pair.split(","))
        except ValueError:
            raise InputError(
                f"--range {value!r} must be LOW,HIGH or SET=LOW,HIGH, e.g. generated=-1,1."
            ) from None
        for one in names:
            ranges[one] = (low, high)
    return ranges


def _number(value: float | None, digits: int = 6) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def print_variance_table(report: dict, title: str = "variance loss") -> None:
    """The measure keys of a report dict as a rich table, with the ratio variance loss / MSE."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    rows = [
        (
            "n real / reconstructed / generated",
            " / ".join(
                "—" if report.get(k) is None else str(report[k])
                for k in ("n_real", "n_reconstructed", "n_generated")
            ),
            "",
        ),
        ("var(real)", _number(report.get("var_real")), "mean per-pixel variance across images"),
        ("var(reconstructed)", _number(report.get("var_reconstructed")), ""),
        ("var(generated)", _number(report.get("var_generated")), ""),
        (
            "variance loss, reconstructed",
            _number(report.get("variance_loss_reconstructed")),
            "var(real) - var(reconstructed)",
        ),
        (
            "variance loss, generated",
            _number(report.get("variance_loss_generated")),
            "var(real) - var(generated)",
        ),
        ("mse", _number(report.get("mse")), "reconstruction mean squared error"),
        ("bias²", _number(report.get("bias2")), "mean over pixels of (mean real - mean recon)²"),
        ("covariance term", _number(report.get("cov_term")), "2 · mean cov(recon, real - recon)"),
        (
            "ratio loss / mse, reconstructed",
            _number(report.get("ratio_reconstructed"), 4),
            "= 1 - (bias² - cov term) / mse",
        ),
        ("ratio loss / mse, generated", _number(report.get("ratio_generated"), 4), ""),
    ]
    for name, value, meaning in rows:
        if value not in ("—", "— / — / —"):
            table.add_row(name, value, meaning)
    Console().print(table)


@app.command("measure")
def measure_command(
    real: str = typer.Option(
        ...,
        "--real",
        help="Real images: .npy, .npz/.pt/.safetensors[:KEY], image folder or data set "
        "(mnist:test).",
    ),
    reconstructed: str = typer.Option(
        None, "--reconstructed", help="Reconstructions of --real, same count and order."
    ),
    generated: str = typer.Option(None, "--generated", help="Generated samples (any count)."),
    model: str = typer.Option(
        None,
        "--model",
        help="A varloss model or train-run folder: measure its reconstructions of --real and its "
        "samples directly (instead of --reconstructed/--generated).",
    ),
    n_generated: int = typer.Option(
        None, "--n-generated", help="With --model: samples to draw (default: as many as --real)."
    ),
    seed: int = typer.Option(0, "--seed", help="With --model: seed of the samples."),
    json_out: str = typer.Option(None, "--json", help="Write the numbers and settings as JSON."),
    maps: str = typer.Option(
        None, "--maps", help="Write per-pixel variance maps: a figure (.png/.svg/.pdf) or .npz."
    ),
    value_range: list[str] = typer.Option(
        None, "--range", help="Map a set from LOW,HIGH to [0,1]: 'SET=LOW,HIGH' or 'LOW,HIGH'."
    ),
    batch_size: int = typer.Option(1024, "--batch-size", help="Samples read per batch."),
) -> None:
    """How much variance reconstructions and samples lose, and the MSE decomposition behind it.

    var(x) is the mean over pixels of each pixel's variance across the set; the variance loss of
    reconstructions equals mse - bias² + covariance term exactly (law of total variance).
    uint8 inputs are scaled to [0, 1]; float inputs are taken as they are.
    """
    from varloss.errors import InputError
    from varloss.figures import plot_variance_maps
    from varloss.measure import measure, measure_model

    if model is not None and (reconstructed is not None or generated is not None):
        raise InputError("give either --model or --reconstructed/--generated, not both.")
    if model is None and reconstructed is None and generated is None:
        raise InputError(
            "give --reconstructed and/or --generated (or --model) to compare with --real."
        )
    if model is None and n_generated is not None:
        raise InputError("--n-generated is only used with --model.")
    if maps is not None and not maps.lower().endswith(MAP_SUFFIXES):
        raise InputError(f"--maps {maps!r} must end with one of {', '.join(MAP_SUFFIXES)}.")
    if model is not None:
        from varloss.models import load_model

        report = measure_model(
            load_model(model),
            real,
            n_generated=n_generated,
            seed=seed,
            batch_size=batch_size,
            value_range=_parse_ranges(value_range),
            settings={"command": command_line(), "model_dir": model},
        )
    else:
        report = measure(
            real,
            reconstructed,
            generated,
            batch_size=batch_size,
            value_range=_parse_ranges(value_range),
            settings={"command": command_line()},
        )
    result = report.to_dict()
    print_variance_table(result)
    if json_out:
        report.to_json(json_out)
        typer.echo(f"wrote {json_out}")
    if maps:
        if maps.lower().endswith(".npz"):
            report.save_maps(maps)
        else:
            plot_variance_maps(report, maps)
        typer.echo(f"wrote {maps}")


# ---- train ----


def _parse_hyper(values: list[str] | None) -> dict:
    """`--set key=value` pairs; values are parsed as JSON when they can be (numbers, lists...)."""
    import json

    from varloss.errors import InputError

    hyper: dict = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise InputError(f"--set {value!r} must be KEY=VALUE, e.g. hidden_sizes=[512,256].")
        try:
            hyper[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            hyper[key.strip()] = text
    return hyper


@app.command("train")
def train_command(
    model: str = typer.Option(
        "dense", "--model", "-m", help="dense, conv, resnet, draw, convdraw."
    ),
    dataset: str = typer.Option("mnist", "--dataset", "-d", help="Data set name or folder:/npz:."),
    epochs: int = typer.Option(10, "--epochs", "-e", help="Epochs in total (also with --resume)."),
    latent: int = typer.Option(2, "--latent", "-z", help="Latent dimensions."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, shuffling and evaluation."),
    out: str = typer.Option(..., "--out", "-o", help="Run folder to write."),
    loss: str = typer.Option(
        None, "--loss", help="bernoulli, gaussian, learned-gamma, balanced (default: family's)."
    ),
    limit: int = typer.Option(None, "--limit", help="Train on the first N training images."),
    eval_limit: int = typer.Option(
        None, "--eval-limit", help="Evaluate on the first N test images."
    ),
    batch_size: int = typer.Option(100, "--batch-size", help="Images per batch."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    schedule: str = typer.Option("constant", "--schedule", help="constant, cosine or step."),
    hyper: list[str] = typer.Option(
        None, "--set", help="Model hyper-parameter KEY=VALUE (JSON values), repeatable."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda:N."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model (GPU)."),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast (GPU)."),
    threads: int = typer.Option(
        None, "--threads", help="CPU threads for torch (default: torch's; 1 on a busy machine)."
    ),
    data_path: str = typer.Option(None, "--data-path", help="Where the data set lives."),
    fid: str = typer.Option(
        "auto", "--fid", help="FID (domain) of samples: auto (if cached), on (train it), off."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's checkpoint."),
    force: bool = typer.Option(False, "--force", help="Overwrite a run already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html at the end."),
) -> None:
    """Train a VAE, then measure its variance loss on the test split (report.json in --out).

    Runs under `torchrun --nproc_per_node N -m varloss train ...` with DistributedDataParallel.
    """
    import os

    from varloss.errors import InputError
    from varloss.train import TrainConfig, train

    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be a positive integer, got {threads}.")
        import torch

        torch.set_num_threads(threads)
    config = TrainConfig(
        family=model,
        dataset=dataset,
        epochs=epochs,
        latent=latent,
        seed=seed,
        out=out,
        loss=loss,
        limit=limit,
        eval_limit=eval_limit,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        device=device,
        compile=compile_model,
        bf16=bf16,
        hyper=_parse_hyper(hyper),
        data_path=data_path,
        fid=fid,
    )
    command = command_line()
    result = train(config, resume=resume, force=force, progress=not quiet, command=command)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print_variance_table(result, title=f"{model} on {dataset}: test split")
    typer.echo(
        f"trained {len(result['history'])} epochs in {result['train_seconds']:.1f} s; wrote {out}"
    )
    if report:
        from varloss.report import write_report

        typer.echo(f"report: {write_report(out, command=command)}")


# ---- data ----

data_app = typer.Typer(help="List, fetch and describe data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _parse_crop(crop: str | None) -> tuple[int, ...] | None:
    from varloss.errors import InputError

    if crop is None:
        return None
    try:
        return tuple(int(part) for part in crop.split(","))
    except ValueError:
        raise InputError(f"--crop must be TOP,BOTTOM,LEFT,RIGHT integers, got {crop!r}.") from None


@data_app.command("list")
def data_list_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Show the registered data sets, their sizes and whether they are available offline."""
    import json

    from varloss.data.registry import dataset_status

    rows = dataset_status()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="varloss data sets (also folder:PATH and npz:PATH[:KEY])")
    for column in ("name", "shape", "splits", "offline here", "description"):
        table.add_column(column)
    for row in rows:
        splits = ", ".join(f"{k} {v}" for k, v in row["splits"].items())
        shape = " x ".join(str(s) for s in row["shape"])
        table.add_row(row["name"], shape, splits, row["offline"], row["description"])
    Console().print(table)


@data_app.command("fetch")
def data_fetch_command(
    name: str = typer.Argument(..., help="Data set name, e.g. mnist or fashion-mnist."),
    data_path: str = typer.Option(None, "--data-path", help="A local copy to read instead."),
    crop: str = typer.Option(None, "--crop", help="CelebA crop box TOP,BOTTOM,LEFT,RIGHT."),
    size: int = typer.Option(None, "--size", help="CelebA output side in pixels."),
) -> None:
    """Download (or read from --data-path), verify and cache every split of a data set."""
    from varloss.data import fetch

    result = fetch(name, data_path=data_path, crop=_parse_crop(crop), size=size)
    counts = ", ".join(f"{k} {v['count']}" for k, v in result["splits"].items())
    shape = " x ".join(str(s) for s in result["shape"])
    where = result.get("cache_dir", result.get("source", ""))
    typer.echo(f"{result['name']}: {counts} images of {shape} ({where})")


@data_app.command("info")
def data_info_command(
    name: str = typer.Argument(..., help="Data set name, e.g. mnist, digits, folder:PATH."),
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON."),
    data_path: str = typer.Option(None, "--data-path", help="A local copy to read instead."),
    fetch: bool = typer.Option(True, "--fetch/--no-fetch", help="Fetch the set if not cached."),
    crop: str = typer.Option(None, "--crop", help="CelebA crop box TOP,BOTTOM,LEFT,RIGHT."),
    size: int = typer.Option(None, "--size", help="CelebA output side in pixels."),
) -> None:
    """Describe a data set: per-image shape, split counts, cache state and source."""
    import json

    from varloss.data import info

    result = info(name, data_path=data_path, fetch=fetch, crop=_parse_crop(crop), size=size)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key == "splits":
            value = ", ".join(f"{k} {v['count']}" for k, v in value.items())
        typer.echo(f"{key}: {value}")


# ---- fid (quality) ----


@app.command("fid")
def fid_command(
    real: str = typer.Option(..., "--real", help="Real images: data-set spec or path."),
    generated: str = typer.Option(
        ...,
        "--generated",
        help="Generated images: .npy, .npz/.pt/.safetensors[:KEY], image folder or data spec.",
    ),
    features: str = typer.Option("domain", "--features", help="domain or inception."),
    weights: str = typer.Option(
        None, "--weights", help="Inception weights file, or a domain classifier folder."
    ),
    dataset: str = typer.Option(
        None, "--dataset", help="Data set of the domain classifier (default: that of --real)."
    ),
    batch_size: int = typer.Option(256, "--batch-size", help="Images per feature batch."),
    prdc: bool = typer.Option(False, "--prdc", help="Also precision/recall/density/coverage."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Cache real-data statistics."),
    json_out: str = typer.Option(None, "--json", help="Write the full result as JSON here."),
) -> None:
    """Fréchet distance of generated images to real ones, with its terms and feature variance.

    Features: `domain` (default) is a small classifier of the data set trained by varloss on
    first use and cached (offline; images at native resolution); `inception` is the FID
    Inception-v3 (pool3, 2048-d) from --weights or the torch hub cache, fed uint8 images resized
    to 299 x 299 with torch-fidelity's TF1-compatible bilinear interpolation, gray repeated to RGB.
    """
    from varloss._io import atomic_write_json
    from varloss.quality import fid

    result = fid(
        real,
        generated,
        features=features,
        dataset=dataset,
        weights=weights,
        batch_size=batch_size,
        cache=cache,
        prdc=prdc,
        progress=True,
    )
    terms = result["terms"]
    typer.echo(f"FID ({result['extractor']['name']}): {result['fid']:.4f}")
    typer.echo(
        f"  |mu_r - mu_g|^2 {terms['mean_term']:.4f}  Tr S_real {terms['trace_real']:.4f}  "
        f"Tr S_gen {terms['trace_generated']:.4f}  2 Tr sqrt(S_r S_g) {terms['cross_term']:.4f}"
    )
    if result["trace_ratio"] is not None:
        ratio = result["trace_ratio"]
        typer.echo(f"  Tr S_gen / Tr S_real {ratio:.4f} (feature-space variance kept)")
    typer.echo(f"  n_real {result['n_real']}  n_generated {result['n_generated']}")
    if prdc:
        typer.echo(
            f"  precision {result['precision']:.4f}  recall {result['recall']:.4f}  "
            f"density {result['density']:.4f}  coverage {result['coverage']:.4f}"
        )
    for note in result["warnings"]:
        typer.echo(f"  warning: {note}", err=True)
    if json_out:
        atomic_write_json(json_out, result)
        typer.echo(f"wrote {json_out}")


# ---- correct (remedies) ----


@app.command("correct")
def correct_command(
    run_dir: str = typer.Argument(..., help="A `varloss train` run folder."),
    method: str = typer.Option(
        "all",
        "--method",
        "-m",
        help="prior, two-stage, two-stage-raw, two-stage-spherical, temperature, match, gmm, "
        "a comma-separated list, or all.",
    ),
    out: str = typer.Option(None, "--out", "-o", help="Output folder [default: RUN_DIR/correct]."),
    n_samples: int = typer.Option(
        None, "--n-samples", help="Generated samples per method [default: test split size]."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for fitting and sampling."),
    limit: int = typer.Option(
        None, "--limit", help="Training images used to fit [default: the run's limit]."
    ),
    data_path: str = typer.Option(None, "--data-path", help="Dataset location, if not cached."),
    fid: bool = typer.Option(True, "--fid/--no-fid", help="Compute FID (domain features)."),
    stage2_steps: int = typer.Option(None, "--stage2-steps", help="Second-stage training steps."),
    tau: float = typer.Option(None, "--tau", help="Fixed temperature instead of the search."),
    gmm_components: int = typer.Option(None, "--gmm-components", help="Mixture components."),
    report_html: bool = typer.Option(
        True, "--report/--no-report", help="Also write report.html in the output folder."
    ),
) -> None:
    """Fit variance remedies on a trained VAE and report the variance gap each one closes."""
    from rich.console import Console
    from rich.table import Table

    from varloss.remedies import METHODS, correct

    params: dict[str, dict] = {}
    if stage2_steps is not None:
        for name, (registry, _) in METHODS.items():
            if registry == "two-stage":
                params.setdefault(name, {})["steps"] = stage2_steps
    if tau is not None:
        params.setdefault("temperature", {})["tau"] = tau
    if gmm_components is not None:
        params.setdefault("gmm", {})["n_components"] = gmm_components
    report = correct(
        run_dir,
        method,
        out,
        n_samples=n_samples,
        seed=seed,
        train_limit=limit,
        data_path=data_path,
        sampler_params=params,
        compute_fid=fid,
        command=command_line(),
    )
    entries = report.get("methods") or {"prior": report["baseline"], report["method"]: report}
    table = Table(title=f"variance remedies: {report['settings']['run_dir']}")
    for column in ("method", "var_real", "var_generated", "gap closed", "FID"):
        table.add_column(column, justify="left" if column == "method" else "right")

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for name, entry in entries.items():
        table.add_row(
            name,
            number(entry["var_real"], ".5f"),
            number(entry["var_generated"], ".5f"),
            number(entry.get("gap_closed"), ".1%"),
            number(entry.get("fid_after"), ".2f"),
        )
    console = Console()
    console.print(table)
    reason = report["baseline"].get("fid_reason")
    if reason:
        console.print(f"FID: {reason}")
    out_dir = out or f"{run_dir.rstrip('/')}/correct"
    console.print(f"wrote {out_dir}/report.json, {out_dir}/samples.png, {out_dir}/samplers/")
    if report_html:
        from varloss.report import write_report

        command = command_line()
        typer.echo(f"report: {write_report(out_dir, command=command)}")


# ---- report ----


@app.command("report")
def report_command(
    directory: str = typer.Argument(
        ..., help="A varloss output folder: train run, correct folder, study, or measure JSON."
    ),
    recompute_maps: bool = typer.Option(
        True,
        "--recompute-maps/--no-recompute-maps",
        help="Recompute variance maps from a train run's model when it saved no maps.npz.",
    ),
) -> None:
    """Write DIR/report.html: one self-contained page of numbers, maps, images and settings."""
    from varloss.report import write_report

    command = command_line()
    path = write_report(directory, command=command, recompute_maps=recompute_maps)
    typer.echo(str(path))


# ---- study ----


@app.command("study")
def study_command(
    preset: str = typer.Option(
        ..., "--preset", help="A built-in preset (quick, paper) or a study YAML file."
    ),
    out: str = typer.Option(..., "--out", help="Output folder (runs/, results.csv, fit.json)."),
    executor: str = typer.Option(
        "local", "--executor", help="local (this machine) or dask (a Dask distributed cluster)."
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        help="Dask scheduler tcp://HOST:PORT (workers must see --out); default: a LocalCluster.",
    ),
    jobs: int = typer.Option(1, "--jobs", help="Runs in parallel (local processes or workers)."),
    device: str | None = typer.Option(None, "--device", help="Torch device for training."),
    report: bool = typer.Option(
        True, "--report/--no-report", help="Also write OUT/report.html when the study is done."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    skip_unavailable: bool = typer.Option(
        False,
        "--skip-unavailable",
        help="Leave out runs whose data set cannot be obtained (e.g. CIFAR-10 offline) instead "
        "of failing them.",
    ),
) -> None:
    """Train a zoo of VAEs and plot variance loss against MSE (re-runs skip finished runs)."""
    from varloss.study import run_study, summary_lines

    try:
        result = run_study(
            preset,
            out,
            executor=executor,
            jobs=jobs,
            scheduler=scheduler,
            device=device,
            progress=progress,
            command=command_line(),
            skip_unavailable=skip_unavailable,
        )
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted; run the same command again to continue the study in {out}")
        raise typer.Exit(130) from None
    for line in summary_lines(result):
        typer.echo(line)
    if report and result.rows:
        from varloss.report import write_report

        command = command_line()
        typer.echo(f"report: {write_report(out, command=command)}")
    if result.failed:
        raise typer.Exit(1)


def run() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    from varloss.errors import InputError, TrainingError

    try:
        app(prog_name="varloss")
    except InputError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except TrainingError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(3)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
