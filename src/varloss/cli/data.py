"""`varloss data list|fetch|info`: the registered data sets, fetched and described."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from varloss.cli.app import VarlossCommand, app
from varloss.cli.common import parse_crop
from varloss.data import fetch, info
from varloss.data.loading import dataset_status

data_app = typer.Typer(help="List, fetch and describe data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("list", cls=VarlossCommand)
def data_list_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Show the registered data sets, their sizes and whether they are available offline."""
    rows = dataset_status()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="varloss data sets (also folder:PATH and npz:PATH[:KEY])")
    for column in ("name", "shape", "splits", "offline here", "description"):
        table.add_column(column)
    for row in rows:
        splits = ", ".join(f"{k} {v}" for k, v in row["splits"].items())
        shape = " x ".join(str(s) for s in row["shape"])
        table.add_row(row["name"], shape, splits, row["offline"], row["description"])
    Console().print(table)


@data_app.command("fetch", cls=VarlossCommand)
def data_fetch_command(
    name: str = typer.Argument(..., help="Data set name: {datasets}."),
    data_path: str = typer.Option(None, "--data-path", help="A local copy to read instead."),
    crop: str = typer.Option(None, "--crop", help="CelebA crop box TOP,BOTTOM,LEFT,RIGHT."),
    size: int = typer.Option(None, "--size", help="CelebA output side in pixels."),
) -> None:
    """Download (or read from --data-path), verify and cache every split of a data set."""
    result = fetch(name, data_path=data_path, crop=parse_crop(crop), size=size)
    counts = ", ".join(f"{k} {v['count']}" for k, v in result["splits"].items())
    shape = " x ".join(str(s) for s in result["shape"])
    where = result.get("cache_dir", result.get("source", ""))
    typer.echo(f"{result['name']}: {counts} images of {shape} ({where})")


@data_app.command("info", cls=VarlossCommand)
def data_info_command(
    name: str = typer.Argument(..., help="Data set: {datasets}, folder:PATH or npz:PATH[:KEY]."),
    as_json: bool = typer.Option(False, "--json", help="Print the description as JSON."),
    data_path: str = typer.Option(None, "--data-path", help="A local copy to read instead."),
    fetch_missing: bool = typer.Option(
        True, "--fetch/--no-fetch", help="Fetch the set if not cached."
    ),
    crop: str = typer.Option(None, "--crop", help="CelebA crop box TOP,BOTTOM,LEFT,RIGHT."),
    size: int = typer.Option(None, "--size", help="CelebA output side in pixels."),
) -> None:
    """Describe a data set: per-image shape, split counts, cache state and source."""
    crop_box = parse_crop(crop)
    result = info(name, data_path=data_path, fetch=fetch_missing, crop=crop_box, size=size)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key == "splits":
            value = ", ".join(f"{k} {v['count']}" for k, v in value.items())
        if key == "photographs":  # a set cut from photographs: which ones, per split
            value = "; ".join(
                f"{split} from " + ", ".join(f"{p['name']} ({p['file']})" for p in listed)
                for split, listed in value.items()
            )
        typer.echo(f"{key}: {value}")
