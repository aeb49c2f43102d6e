"""`varloss study`: train a zoo of VAEs and fit variance loss against MSE (resumable)."""

from __future__ import annotations

import typer

from varloss._io import check_output_path
from varloss.cli.app import command, command_line
from varloss.cli.common import threads_option


@command("study")
def study_command(
    preset: str = typer.Option(
        ..., "--preset", help="A built-in preset ({presets}) or a study YAML file."
    ),
    out: str = typer.Option(..., "--out", help="Output folder (runs/, results.csv, fit.json)."),
    executor: str = typer.Option(
        "local", "--executor", help="Where runs train: {executors} (dask: a Dask cluster)."
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        help="Dask scheduler tcp://HOST:PORT (workers must see --out); default: a LocalCluster.",
    ),
    jobs: int | None = typer.Option(
        None,
        "--jobs",
        help="Runs in parallel (local processes or Dask workers); default: one per core.",
    ),
    threads: str = typer.Option(
        "auto",
        "--threads",
        help="Torch threads per run: auto (each run times 1 against cores // jobs on its first "
        "steps and keeps the faster; recorded in its report) or a count.",
    ),
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
    # start-up cost: see cli/__init__.py
    from varloss.pipelines.study import run_study, summary_lines
    from varloss.report import write_report

    check_output_path(out, "--out", folder=True)
    if device and not device.startswith(("auto", "cuda")):  # CUDA may be on the executor's nodes
        from varloss.models.adapters import resolve_device

        resolve_device(device)  # `--device meta`: one sentence up front, not one failure per run
    try:
        result = run_study(
            preset,
            out,
            executor=executor,
            jobs=jobs,
            threads=threads_option(threads),
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
        typer.echo(f"report: {write_report(out, command=command_line())}")
    if result.failed:
        raise typer.Exit(1)
