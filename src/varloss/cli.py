"""The `varloss` command. Thin: parse arguments, call the library, print.

Errors users can fix (bad input) are raised as `varloss.errors.InputError` by the library;
the CLI prints their one-sentence message and exits with a non-zero code, no traceback.
"""

from __future__ import annotations

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
) -> None:
    """Measure, explain and correct the variance loss of VAEs."""


# ---- commands are added below this line, one section per command (measure, data, train, ...) ----


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


def run() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    import sys

    from varloss.errors import InputError

    try:
        app(prog_name="varloss")
    except InputError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
