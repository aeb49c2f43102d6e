"""`varloss correct RUN`: fit variance remedies on a trained VAE, report the gap each closes."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from varloss._background import warm_up
from varloss._io import check_output_path
from varloss.cli.app import command, command_line
from varloss.cli.common import THREADS_OPTION, threads_option
from varloss.errors import InputError
from varloss.variance.protocol import fid_mode


def sampler_params(stage2_steps: int | None, tau: float | None, gmm_components: int | None):
    """The per-method settings given by --stage2-steps, --tau and --gmm-components."""
    from varloss.samplers import METHODS  # start-up cost: see cli/__init__.py

    params: dict[str, dict] = {}
    if stage2_steps is not None:
        for name, (registry, _) in METHODS.items():
            if registry == "two-stage":
                params.setdefault(name, {})["steps"] = stage2_steps
    if tau is not None:
        params.setdefault("temperature", {})["tau"] = tau
    if gmm_components is not None:
        params.setdefault("gmm", {})["n_components"] = gmm_components
    return params


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


_COLUMNS = (
    ("var_generated", "var_generated", ".5f"),
    ("gap closed", "gap_closed", ".1%"),
    ("spectral err", "spectral_error", ".3f"),
    ("pixel FD", "pixel_frechet", ".4g"),
    ("MSE after", "reconstruction_mse_after", ".5f"),
    ("FID", "fid_after", ".2f"),
)


def print_methods(report: dict) -> None:
    """The methods table of correct's report.json in its headline's order: variance, gap closed
    in total, spectral error, pixel Fréchet distance, the MSE price on reconstructions, FID, and
    each method's warnings (`variance_warnings`: samples that do not vary)."""
    from varloss.variance.report import variance_warnings  # start-up cost: see cli/__init__.py

    settings = report["settings"]
    headline = settings.get("headline")
    title = f"variance remedies: {settings['run_dir']}"
    table = Table(title=title + (f" (sorted by {headline})" if headline else ""))
    width = max((len(name) for name in report["methods"]), default=6)
    table.add_column("method", justify="left", no_wrap=True, min_width=width)
    for column, _, _ in _COLUMNS:
        table.add_column(column, justify="right")
    for name, entry in report["methods"].items():
        table.add_row(name, *(_cell(entry.get(key), fmt) for _, key, fmt in _COLUMNS))
    console = Console()
    console.print(table)
    for name, entry in report["methods"].items():
        for text in variance_warnings(entry):
            console.print(f"warning ({name}): {text}.", style="bold yellow")
    reason = report["baseline"].get("fid_reason")
    if reason:
        console.print(f"FID: {reason}")
    before = report["baseline"].get("reconstruction_mse_before")
    if before is not None:
        console.print(f"MSE after: the test reconstructions' MSE (before any map: {before:.5f})")
    latent = [name for name, entry in report["methods"].items() if entry.get("price_reason")]
    if latent:
        console.print(f"  none for {', '.join(latent)}: they act on latent codes.")
    if settings.get("pixel_frechet_k") is not None:
        console.print(f"pixel FD: in the test images' top-{settings['pixel_frechet_k']} basis.")


# the quality options, defined apart so the command's signature stays readable
FID_OPTION = typer.Option(
    "auto",
    "--fid",
    help="FID (domain features) of each method's samples: auto (if the classifier is "
    "cached), on (train it if needed; also --fid alone, after RUN_DIR), off; or inception "
    "(the papers' Inception-v3: `varloss weights fetch inception` once).",
)
CURVE_OPTION = typer.Option(
    False,
    "--curve",
    help="Also sweep each image-space remedy (match, ot, spectral) from identity to full map "
    "and draw reconstruction MSE against pixel FD and variance kept (curve.png).",
)
BACKGROUND_OPTION = typer.Option(
    True,
    "--background/--no-background",
    help="On two or more cores, train the second stage in a worker process while the other "
    "methods are fitted (the same numbers either way).",
)
PIXEL_FRECHET_K_OPTION = typer.Option(
    64, "--pixel-frechet-k", help="Principal directions of the real images for pixel FD."
)


def _warm_up_second_stage(method: str, background: bool) -> None:
    """Start the worker a method's fit may use (`Sampler.background_modules`: the second stage's)
    before this command imports the pipeline (1.4 s that the worker's own start then overlaps;
    the samplers themselves import in 0.02 s); `correct` takes it if it needs one, and an unused
    one is stopped at exit. Unknown methods are left for `correct` to refuse."""
    from varloss.samplers import METHODS, SAMPLERS, parse_methods

    if not background:
        return
    try:
        names = parse_methods(method)
    except InputError:
        return
    modules = [m for name in names for m in SAMPLERS[METHODS[name][0]].background_modules]
    if modules:
        warm_up(preload=tuple(dict.fromkeys(modules)))


@command("correct", fid="on")
def correct_command(
    run_dir: str = typer.Argument(
        ..., help="A `varloss train` run folder, or pythae:FOLDER (your own prefixes: --plugin)."
    ),
    method: str = typer.Option(
        "all",
        "--method",
        "-m",
        help="{methods}, a comma-separated list, or all.",
    ),
    out: str = typer.Option(None, "--out", "-o", help="Output folder (default: RUN_DIR/correct)."),
    n_samples: int = typer.Option(
        None, "--n-samples", help="Generated samples per method (default: the test split's size)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for fitting and sampling."),
    limit: int = typer.Option(
        None, "--limit", help="Training images used to fit (default: the run's limit)."
    ),
    data_path: str = typer.Option(None, "--data-path", help="Dataset location, if not cached."),
    dataset: str = typer.Option(
        None, "--dataset", help="Data set to fit on (default: the one the run folder names)."
    ),
    train: str = typer.Option(
        None, "--train", help="Or training images (any --real input of measure) to fit on."
    ),
    test: str = typer.Option(
        None, "--test", help="With --train: images to measure against (default: --train)."
    ),
    device: str = typer.Option("cpu", "--device", help="Where the model runs: cpu, cuda[:N]."),
    fid: str = FID_OPTION,
    stage2_steps: int = typer.Option(None, "--stage2-steps", help="Second-stage training steps."),
    tau: float = typer.Option(None, "--tau", help="Fixed temperature instead of the search."),
    gmm_components: int = typer.Option(None, "--gmm-components", help="Mixture components."),
    curve: bool = CURVE_OPTION,
    pixel_frechet_k: int = PIXEL_FRECHET_K_OPTION,
    report_html: bool = typer.Option(
        True, "--report/--no-report", help="Also write report.html in the output folder."
    ),
    threads: str = THREADS_OPTION,
    background: bool = BACKGROUND_OPTION,
) -> None:
    """Fit variance remedies on a trained VAE and report the variance gap each one closes."""
    _warm_up_second_stage(method, background)
    # start-up cost: see cli/__init__.py
    from varloss.models.adapters import split_spec
    from varloss.pipelines.correct import correct
    from varloss.report import write_report

    fid = fid_mode(fid, "--fid")
    threads = threads_option(threads)
    out_dir = out or str(Path(split_spec(run_dir)[1]) / "correct")
    check_output_path(out_dir, "--out", folder=True)
    report = correct(
        run_dir,
        method,
        out,
        n_samples=n_samples,
        seed=seed,
        train_limit=limit,
        data_path=data_path,
        sampler_params=sampler_params(stage2_steps, tau, gmm_components),
        fid=fid,
        command=command_line(),
        dataset=dataset,
        train=train,
        test=test,
        device=device,
        threads=threads,
        curve=curve,
        pixel_frechet_k=pixel_frechet_k,
        background=background,
    )
    print_methods(report)
    written = f"{out_dir}/report.json, {out_dir}/samples.png"
    if any(entry.get("curve") for entry in report["methods"].values()):
        written += f", {out_dir}/curve.png"
    typer.echo(f"wrote {written}, {out_dir}/samplers/")
    if report_html:
        typer.echo(f"report: {write_report(out_dir, command=command_line())}")
