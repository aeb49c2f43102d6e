"""`varloss measure`: the variance loss of reconstructions and samples, from files or a model."""

from __future__ import annotations

import typer

from varloss._io import check_output_path
from varloss.cli.app import command, command_line
from varloss.cli.common import THREADS_OPTION, print_variance_table, threads_option
from varloss.cli.splits import print_pca_table, print_spectrum_table
from varloss.errors import InputError
from varloss.variance.protocol import Reconstruction

MAP_SUFFIXES = (".png", ".svg", ".pdf", ".npz")
# The splits of issue 14 (opt-in: the spectrum costs up to 2x a plain measure, PCA O(D²) memory).
SPECTRUM_OPTION = typer.Option(
    False, "--spectrum", help="Split the numbers by radial spatial frequency band (exact, DFT)."
)
BANDS_OPTION = typer.Option(8, "--bands", help="With --spectrum: number of frequency bands.")
PCA_OPTION = typer.Option(
    None, "--pca", help="Split the numbers along the top K principal directions of --real."
)
PCA_LIMIT_OPTION = typer.Option(
    3072, "--pca-limit", help="With --pca: most features per image (the covariance is D x D)."
)

MODEL_OPTION = typer.Option(
    None,
    "--model",
    help="A varloss run folder, pythae:FOLDER or diffusers:FOLDER: measure its reconstructions "
    "of --real and its samples (an AutoencoderKL's: with --n-generated) directly.",
)
# With --model: the one rule of varloss.variance.protocol, shared with `varloss train`.
SEED_OPTION = typer.Option(
    0,
    "--seed",
    help="With --model: seed of the samples' codes and the reconstruction draws (the named "
    "streams `varloss train --seed` evaluates with: a run's seed gives its report.json).",
)
# Issue 22: what autoencoder papers report beside the variance loss (PSNR, SSIM always; rFID).
FID_OPTION = typer.Option(
    "off",
    "--fid",
    help="rFID of the reconstructions against --real on these features: off, domain or "
    "inception (`varloss weights fetch inception` once). PSNR and SSIM are always reported.",
)
RECONSTRUCTION_OPTION = typer.Option(
    Reconstruction.MEAN.value,
    "--reconstruction",
    help=f"With --model: {Reconstruction.choices()}.",
)


def parse_ranges(values: list[str] | None) -> dict[str, tuple[float, float]] | None:
    """`--range LOW,HIGH` (all sets) or `--range SET=LOW,HIGH`, repeatable."""
    from varloss.variance import SET_NAMES  # start-up cost: see varloss/cli/__init__.py

    if not values:
        return None
    ranges: dict[str, tuple[float, float]] = {}
    for value in values:
        name, _, pair = value.rpartition("=")
        if name and name not in SET_NAMES:
            raise InputError(f"--range {value!r} names set {name!r}; expected one of {SET_NAMES}.")
        try:
            low, high = (float(part) for part in pair.split(","))
        except ValueError:
            raise InputError(
                f"--range {value!r} must be LOW,HIGH or SET=LOW,HIGH, e.g. generated=-1,1."
            ) from None
        for one in [name] if name else SET_NAMES:
            ranges[one] = (low, high)
    return ranges


def _check_arguments(
    model, reconstructed, generated, n_generated, json_out, maps, reconstruction=Reconstruction.MEAN
) -> None:
    if model is not None and (reconstructed is not None or generated is not None):
        raise InputError("give either --model or --reconstructed/--generated, not both.")
    if model is None and reconstructed is None and generated is None:
        raise InputError(
            "give --reconstructed and/or --generated (or --model) to compare with --real."
        )
    if model is None and n_generated is not None:
        raise InputError("--n-generated is only used with --model.")
    protocol = Reconstruction.parse(reconstruction, "--reconstruction")
    if model is None and protocol is not Reconstruction.MEAN:
        raise InputError("--reconstruction sample is only used with --model.")
    if maps is not None and not maps.lower().endswith(MAP_SUFFIXES):
        raise InputError(f"--maps {maps!r} must end with one of {', '.join(MAP_SUFFIXES)}.")
    if json_out is not None:
        check_output_path(json_out, "--json")
    if maps is not None:
        check_output_path(maps, "--maps")


@command("measure")
def measure_command(
    real: str = typer.Option(
        ...,
        "--real",
        help="Real images: .npy, .npz/.pt/.safetensors[:KEY], image folder or data set "
        "(mnist:test; registered: {datasets}).",
    ),
    reconstructed: str = typer.Option(
        None, "--reconstructed", help="Reconstructions of --real, same count and order."
    ),
    generated: str = typer.Option(None, "--generated", help="Generated samples (any count)."),
    model: str = MODEL_OPTION,
    n_generated: int = typer.Option(
        None, "--n-generated", help="With --model: samples to draw (default: as many as --real)."
    ),
    seed: int = SEED_OPTION,
    device: str = typer.Option("cpu", "--device", help="With --model: cpu, cuda[:N] or auto."),
    reconstruction: str = RECONSTRUCTION_OPTION,
    json_out: str = typer.Option(None, "--json", help="Write the numbers and settings as JSON."),
    maps: str = typer.Option(
        None, "--maps", help="Write per-pixel variance maps: a figure (.png/.svg/.pdf) or .npz."
    ),
    value_range: list[str] = typer.Option(
        None, "--range", help="Map a set from LOW,HIGH to [0,1]: 'SET=LOW,HIGH' or 'LOW,HIGH'."
    ),
    batch_size: int = typer.Option(1024, "--batch-size", help="Samples read per batch."),
    spectrum: bool = SPECTRUM_OPTION,
    bands: int = BANDS_OPTION,
    pca: int = PCA_OPTION,
    pca_limit: int = PCA_LIMIT_OPTION,
    threads: str = THREADS_OPTION,
    fid: str = FID_OPTION,
) -> None:
    """How much variance reconstructions and samples lose, and the MSE decomposition behind it.

    var(x) is the mean over pixels of each pixel's variance across the set; the variance loss of
    reconstructions equals mse - bias² + covariance term exactly (law of total variance).
    uint8 inputs are scaled to [0, 1]; float inputs are taken as they are.
    """
    # start-up cost: see varloss/cli/__init__.py
    from varloss.models.adapters import load_adapter
    from varloss.variance import measure, measure_model

    threads = threads_option(threads)
    _check_arguments(model, reconstructed, generated, n_generated, json_out, maps, reconstruction)
    quality = _reconstruction_quality(fid, real, device)
    ranges = parse_ranges(value_range)
    splits = {"spectrum": bands if spectrum else False, "pca": pca, "pca_limit": pca_limit}
    adapter = None if model is None else load_adapter(model, device=device)
    settings = _settings(real, model, adapter, threads, batch_size, ranges)
    if adapter is not None:
        report = measure_model(
            adapter,
            real,
            generate=None if adapter.generates_images or n_generated is None else adapter.sample,
            n_generated=n_generated,
            seed=seed,
            reconstruction=reconstruction,
            batch_size=batch_size,
            value_range=ranges,
            settings=settings,
            on_pair=quality.update,
            **splits,
        )
        if report.n_reconstructed:
            report.quality = quality.compute()
    else:
        report = measure(
            real,
            reconstructed,
            generated,
            batch_size=batch_size,
            value_range=ranges,
            settings=settings,
            on_pair=quality.update,
            **splits,
        )
        if reconstructed is not None:
            report.quality = quality.compute()
    _write_outputs(report, json_out, maps)


def _settings(real, model, adapter, threads, batch_size: int, ranges) -> dict:
    """What the JSON records about how it was measured: the command line, torch's threads
    (with auto: chosen by timing the first batch of the work, `varloss._threads`), the model."""
    # start-up cost: see varloss/cli/__init__.py
    from varloss._threads import choose_threads
    from varloss.variance.model import first_batch_probe

    probe = first_batch_probe(real, adapter, batch_size=batch_size, value_range=ranges)
    settings = {"command": command_line(), "threads": choose_threads(threads, probe).to_dict()}
    if adapter is not None:
        settings.update(model_dir=model, adapter=adapter.describe())
    return settings


def _reconstruction_quality(fid: str, real: str, device: str):
    """The PSNR/SSIM/rFID accumulator `--fid` asks for (its extractor made before any work)."""
    # start-up cost: see varloss/cli/__init__.py
    from varloss.data import resolve_dataset_spec
    from varloss.quality import get_extractor
    from varloss.quality.reconstruction import ReconstructionQuality
    from varloss.quality.score import reference_statistics

    if fid not in ("off", "domain", "inception"):
        raise InputError(f"--fid must be off, domain or inception, got {fid!r}.")
    if fid == "off":
        return ReconstructionQuality()
    named = resolve_dataset_spec(real)
    dataset = named.name if named is not None else None
    device = "cpu" if device == "auto" else device
    extractor = get_extractor(fid, dataset=dataset, device=device)
    if named is None:
        return ReconstructionQuality(extractor)
    # a named set's reference statistics: computed once (progress in images/s), then cached
    statistics, _ = reference_statistics(named, extractor)
    return ReconstructionQuality(extractor, real_statistics=statistics)


def _write_outputs(report, json_out: str | None, maps: str | None) -> None:
    """The tables printed, then the JSON and the maps (with the split figures beside them)."""
    # start-up cost: see varloss/cli/__init__.py
    from varloss.figures import plot_variance_maps
    from varloss.figures.spectrum import plot_spectrum

    print_variance_table(report.to_dict())
    if report.spectrum is not None:
        print_spectrum_table(report.spectrum)
    if report.pca is not None:
        print_pca_table(report.pca)
    if json_out:
        report.to_json(json_out)
        typer.echo(f"wrote {json_out}")
    if maps:
        if maps.lower().endswith(".npz"):
            report.save_maps(maps)
        else:
            plot_variance_maps(report, maps)
            for path in plot_spectrum(report, maps):
                typer.echo(f"wrote {path}")
        typer.echo(f"wrote {maps}")
