"""`varloss fid`: the Fréchet distance of generated images to real ones, with its terms."""

from __future__ import annotations

import warnings

import typer

from varloss._io import atomic_write_json, check_output_path
from varloss.cli.app import command


def print_fid(result: dict, prdc: bool) -> None:
    terms = result["terms"]
    typer.echo(f"FID ({result['extractor']['name']}): {result['fid']:.4f}")
    if result["extractor"].get("resize") is not None:  # an extractor with a choice of resize
        extractor = result["extractor"]
        typer.echo(f"  resize {extractor['resize']}: {extractor['resize_label']}")
    typer.echo(
        f"  |mu_r - mu_g|^2 {terms['mean_term']:.4f}  Tr S_real {terms['trace_real']:.4f}  "
        f"Tr S_gen {terms['trace_generated']:.4f}  2 Tr sqrt(S_r S_g) {terms['cross_term']:.4f}"
    )
    if result["trace_ratio"] is not None:
        ratio = result["trace_ratio"]
        typer.echo(f"  Tr S_gen / Tr S_real {ratio:.4f} (feature-space variance kept)")
    typer.echo(f"  n_real {result['n_real']}  n_generated {result['n_generated']}")
    if result.get("kid") is not None:
        size = result["settings"]["kid"]["subset_size"]
        subsets = result["settings"]["kid"]["subsets"]
        typer.echo(
            f"KID {result['kid']:.6f} ± {result['kid_std']:.6f} "
            f"({subsets} subsets of {size}, unbiased MMD², cubic kernel)"
        )
    if result.get("fid_infinity") is not None:
        fit = result["fid_infinity_fit"]
        typer.echo(
            f"FID∞ {result['fid_infinity']:.4f} (line in 1/N through FID at N = "
            f"{fit['sizes'][0]}..{fit['sizes'][-1]}, {len(fit['sizes'])} points; slope "
            f"{fit['slope']:.4g})"
        )
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
        None,
        "--weights",
        help="Inception weights file (the fetched default_1.pt, NVIDIA's inception-2015-12-05.pt "
        "or pt_inception-2015-12-05-6726825d.pth), or a domain classifier folder.",
    ),
    resize: str = typer.Option(
        None,
        "--resize",
        help="Inception resize to 299: tf1-bilinear (default; TF1 bilinear as TTUR and "
        "torch-fidelity, the papers' FID) or pil-bicubic (clean-fid's PIL bicubic: not the "
        "number TTUR/Dai & Wipf report).",
    ),
    dataset: str = typer.Option(
        None, "--dataset", help="Data set of the domain classifier (default: that of --real)."
    ),
    batch_size: int = typer.Option(256, "--batch-size", help="Images per feature batch."),
    prdc: bool = typer.Option(False, "--prdc", help="Also precision/recall/density/coverage."),
    kid: bool = typer.Option(
        True, "--kid/--no-kid", help="Also KID (unbiased MMD², torch-fidelity's subsets)."
    ),
    fid_infinity: bool = typer.Option(
        True,
        "--fid-infinity/--no-fid-infinity",
        help="Also FID∞ (Chong & Forsyth: FID at 15 sample sizes, the intercept of a line in 1/N).",
    ),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Cache real-data statistics."),
    json_out: str = typer.Option(None, "--json", help="Write the full result as JSON here."),
) -> None:
    """Fréchet distance of generated images to real ones, with its terms and feature variance.

    Features: `domain` (default) is a small classifier of the data set trained by varloss on
    first use and cached (offline; images at native resolution); `inception` is the FID
    Inception-v3 of the papers (pool3, 2048-d; `varloss weights fetch inception` once, or
    --weights PATH), fed uint8 images, gray repeated to RGB, resized to 299 x 299 with TF1's
    bilinear resize and scaled as (x - 128) / 128, as TTUR and torch-fidelity do; `--resize
    pil-bicubic` gives clean-fid's variant instead (PIL's bicubic resize, clipped), labelled in
    the table and JSON: clean-fid's number, not the one TTUR or Dai & Wipf report. KID and FID∞
    are printed beside FID (less biased at small N).
    """
    from varloss.quality import fid  # start-up cost: see cli/__init__.py
    from varloss.quality.inception import resize_choice
    from varloss.quality.score import SmallSampleWarning

    if json_out is not None:
        check_output_path(json_out, "--json")
    if resize is not None:
        resize_choice(resize)  # a bad --resize is refused before any image is read
    with warnings.catch_warnings():  # printed below with the result's other warnings
        warnings.simplefilter("ignore", SmallSampleWarning)
        result = fid(
            real,
            generated,
            features=features,
            dataset=dataset,
            weights=weights,
            resize=resize,
            batch_size=batch_size,
            cache=cache,
            prdc=prdc,
            kid=kid,
            fid_infinity=fid_infinity,
            progress=True,
        )
    print_fid(result, prdc)
    if json_out:
        atomic_write_json(json_out, result)
        typer.echo(f"wrote {json_out}")
