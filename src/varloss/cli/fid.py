"""`varloss fid`: the Fréchet distance of generated images to real ones, with its terms."""

from __future__ import annotations

import typer

from varloss._io import atomic_write_json, check_output_path
from varloss.cli.app import command


def print_fid(result: dict, prdc: bool) -> None:
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


@command("fid")
def fid_command(
    real: str = typer.Option(..., "--real", help="Real images: data set ({datasets}) or path."),
    generated: str = typer.Option(
        ...,
        "--generated",
        help="Generated images: .npy, .npz/.pt/.safetensors[:KEY], image folder or data spec.",
    ),
    features: str = typer.Option("domain", "--features", help="Feature extractor: {extractors}."),
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
    from varloss.quality import fid  # start-up cost: see cli/__init__.py

    if json_out is not None:
        check_output_path(json_out, "--json")
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
    print_fid(result, prdc)
    if json_out:
        atomic_write_json(json_out, result)
        typer.echo(f"wrote {json_out}")
