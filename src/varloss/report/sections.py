"""Sections shared by the pages: the headline numbers explained in words, the FID rows, the
reconstruction quality (PSNR, SSIM, rFID) of `varloss measure`, the remedies table, and the
settings that produced the numbers (with an equivalent command line; a train run's is
`varloss.train_config.equivalent_command`, where the train settings live).

Each reads the keys its producer writes: `varloss.measure`'s VarianceReport keys, the FID dict
of `varloss.quality.fid`, the `quality` dict of `varloss.quality.reconstruction`, and the
methods table of `varloss correct`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import shlex
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from varloss._words import count, share
from varloss.records import fid_number
from varloss.report.html import Cell, Table, fmt, num_cell, number
from varloss.variance.report import variance_warnings

# ---------------------------------------------------------------------------------------------
# the measure keys, in words and in a table


def explain_variance(report: Mapping[str, Any]) -> list[str]:
    """Plain-words sentences that explain a measure report's headline numbers (each follows the
    signs of its numbers: a loss is called a loss, a gain a gain; a share is a share)."""
    var_real = number(report.get("var_real"))
    if var_real is None:
        return []
    # the warnings first: a set that does not vary makes the sentences below misleading
    sentences = [f"Warning: {text}." for text in variance_warnings(report)]
    sentences += _explain_reconstructed(report, var_real)
    var_gen = number(report.get("var_generated"))
    if var_gen is not None:
        var_rec = number(report.get("var_reconstructed"))
        sentences.append(generated_sentence(var_real, var_gen, var_rec))
    fid = fid_number(report.get("fid"))
    if fid is not None and math.isfinite(fid):
        sentences.append(
            f"The Fréchet distance between real and generated features is {fmt(fid)} "
            "(lower is better)."
        )
    if isinstance(report.get("quality"), Mapping):
        sentences.append(quality_sentence(report["quality"]))
    return sentences


def _kept_or_gained(var_set: float, var_real: float, what: str) -> str:
    """`keep 60% of {what} (0.06 of 0.1): a variance loss of 0.04`, or the gain in words."""
    kept = share(var_set, var_real)
    if var_set == var_real:
        return f"keep all of {what} ({fmt(var_set)}): no variance loss"
    if kept is not None:
        return (
            f"keep {kept} of {what} ({fmt(var_set)} of {fmt(var_real)}): a variance loss of "
            f"{fmt(var_real - var_set)}"
        )
    return (
        f"have more variance than the real images ({fmt(var_set)} against {fmt(var_real)}): "
        f"a variance gain of {fmt(var_set - var_real)}, not a loss"
    )


def generated_sentence(var_real: float, var_gen: float, var_rec: float | None = None) -> str:
    """The generated samples' variance against the real one (and the reconstructions' loss)."""
    gen_loss = var_real - var_gen
    text = "Generated samples " + _kept_or_gained(var_gen, var_real, "the real variance")
    rec_loss = None if var_rec is None else var_real - var_rec
    if rec_loss is not None and gen_loss > 0 and rec_loss > 0 and gen_loss != rec_loss:
        more = gen_loss > rec_loss
        text += f", {'more' if more else 'less'} than the reconstructions lose ({fmt(rec_loss)})"
    if gen_loss > 0:
        text += ". Samples with less variance than the data look blurry and alike"
    return text + "."


def _explain_reconstructed(report: Mapping[str, Any], var_real: float) -> list[str]:
    var_rec = number(report.get("var_reconstructed"))
    if var_rec is None:
        return []
    mse, bias2, cov = (number(report.get(key)) for key in ("mse", "bias2", "cov_term"))
    loss = var_real - var_rec
    text = "The reconstructions " + _kept_or_gained(
        var_rec, var_real, "the real images' per-pixel variance"
    )
    if mse is not None and mse > 0 and loss > 0:
        text += f", {loss / mse:.2f} times the reconstruction MSE ({fmt(mse)})."
    elif mse is not None and mse > 0:
        text += f" (reconstruction MSE {fmt(mse)})."
    elif mse == 0:
        text += "; the reconstructions are exact (MSE 0), so there is no ratio to the MSE."
    else:
        text += "."
    sentences = [text]
    if mse is None or bias2 is None or cov is None or mse <= 0:
        return sentences
    sentences.append(decomposition_sentence(mse, bias2, cov))
    return sentences


def decomposition_sentence(mse: float, bias2: float, cov: float) -> str:
    """Variance loss = MSE - bias² + covariance term, said for these terms' sizes and signs."""
    if max(abs(bias2), abs(cov)) <= 0.1 * mse:
        return (
            "Variance loss = MSE - bias² + covariance term; here bias² "
            f"({fmt(bias2)}) and the covariance term ({fmt(cov)}) are small, so the "
            "variance lost is essentially the reconstruction error: a decoder that "
            "cannot predict a detail outputs its average, and the spread of that "
            "detail is gone."
        )
    bias_words = (
        f"bias² removes {fmt(bias2)} from the MSE"
        if bias2 >= 0
        else f"bias² (negative: not a square, a damaged report) adds {fmt(-bias2)} to the MSE"
    )
    cov_words = f"the covariance term {'adds' if cov >= 0 else 'removes'} {fmt(abs(cov))}"
    cov_words += " to it" if cov >= 0 else " from it"
    difference = cov - bias2
    if difference == 0:
        where = "equals the reconstruction error"
    else:
        side = "above" if difference > 0 else "below"
        where = f"lies {fmt(abs(difference))} {side} the reconstruction error ({fmt(mse)})"
    return (
        f"Variance loss = MSE - bias² + covariance term; here {bias_words} and {cov_words}, "
        f"so the variance loss {where}."
    )


# (VarianceReport key, label, meaning); "identity" is computed here from mse, bias2 and cov_term.
_HEADLINE = (
    ("var_real", "variance, real", "mean over pixels of the per-pixel variance across images"),
    ("var_reconstructed", "variance, reconstructed", "the same for the reconstructions"),
    ("var_generated", "variance, generated", "the same for samples from the model"),
    (
        "variance_loss_reconstructed",
        "variance loss, reconstructed",
        "variance real - variance reconstructed",
    ),
    ("variance_loss_generated", "variance loss, generated", "variance real - variance generated"),
    ("mse", "MSE", "mean squared error of the reconstructions, per pixel"),
    (
        "ratio_reconstructed",
        "ratio variance loss / MSE",
        "1 when the lost variance is the reconstruction error",
    ),
    ("bias2", "bias²", "mean over pixels of (mean real - mean reconstructed)²"),
    ("cov_term", "covariance term", "2 × mean over pixels of cov(reconstruction, error)"),
    ("identity", "MSE - bias² + covariance term", "equals the variance loss (an exact identity)"),
)
_COUNTS = (
    ("n_real", "images, real"),
    ("n_reconstructed", "images, reconstructed"),
    ("n_generated", "images, generated"),
)


def headline_table(report: Mapping[str, Any], generated_label: str | None = None) -> Table:
    """The measure keys of `report` with their meanings, then its FID rows."""
    values = dict(report)
    mse, bias2, cov = (number(values.get(key)) for key in ("mse", "bias2", "cov_term"))
    if mse is not None and bias2 is not None and cov is not None:
        values["identity"] = mse - bias2 + cov
    rows: list[list[Cell]] = []
    for key, label, meaning in _HEADLINE:
        value = number(values.get(key))
        if value is None:
            continue
        if key == "var_generated" and generated_label:
            label = f"variance, {generated_label}"
        rows.append([Cell(label), num_cell(value), Cell(meaning)])
    for key, label in _COUNTS:
        if isinstance(values.get(key), int):
            rows.append([Cell(label), num_cell(values[key]), Cell("samples the numbers use")])
    rows += quality_rows(values.get("quality"))
    rows += fid_rows(values.get("fid"))
    return Table(
        columns=["quantity", "value", "meaning"],
        rows=rows,
        id="headline",
        numeric_columns=[False, True, False],
    )


# ---------------------------------------------------------------------------------------------
# reconstruction quality (`varloss measure`'s report["quality"]: what autoencoder papers report)


def _quality_facts(quality: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers and their circumstances, read defensively (a JSON may be old or hand-made):
    psnr is infinite where every image was reconstructed exactly (the producer writes None and
    counts them); the reasons for a missing SSIM or rFID."""
    settings = quality.get("settings")
    settings = settings if isinstance(settings, Mapping) else {}
    n, exact = settings.get("n"), settings.get("psnr_exact_images_left_out")
    n = n if isinstance(n, int) and not isinstance(n, bool) else None
    exact = exact if isinstance(exact, int) and not isinstance(exact, bool) else 0
    psnr = number(quality.get("psnr"))
    if psnr is None and n and exact == n:
        psnr = math.inf
    extractor = settings.get("rfid_extractor")
    name = extractor.get("name") if isinstance(extractor, Mapping) else None
    if not isinstance(extractor, Mapping):
        rfid_why = "measured without image features: --fid off"
    elif n is not None and n < 2:
        rfid_why = "fewer than 2 images: no covariance"
    else:
        rfid_why = "not in this report"
    ssim_why = settings.get("ssim") if isinstance(settings.get("ssim"), str) else None
    return {
        "n": n,
        "exact": exact,
        "psnr": psnr,
        "ssim": number(quality.get("ssim")),
        "ssim_why": ssim_why or "not in this report",
        "rfid": number(quality.get("rfid")),
        "rfid_why": rfid_why,
        "features": f"{name} features" if name else "image features",
    }


def _psnr_words(facts: Mapping[str, Any]) -> str:
    """The PSNR's circumstances: images reconstructed exactly have no finite PSNR."""
    n, exact, psnr = facts["n"], facts["exact"], facts["psnr"]
    if psnr == math.inf:
        every = f"all {count(n, 'image')}" if n else "every image"
        return f"infinite, {every} reconstructed exactly, MSE 0"
    if exact:
        part = share(exact, n) if n else None
        of = f" ({part} of {count(n, 'image')})" if part else ""
        were = "was" if exact == 1 else "were"
        return f"{count(exact, 'image')}{of} reconstructed exactly {were} left out (infinite PSNR)"
    return f"mean over {count(n, 'image')}" if n else "mean over images"


def psnr_row(quality: Mapping[str, Any]) -> tuple[float | None, str]:
    """The PSNR of `varloss measure`'s report["quality"] (infinite where every image was
    reconstructed exactly) and its meaning: the one wording of the HTML page and the terminal
    table (`varloss.cli.common.print_variance_table`)."""
    facts = _quality_facts(quality)
    return facts["psnr"], "10 log10(1 / MSE) per image, data range 1: " + _psnr_words(facts)


def _ssim_words(ssim: float | None, why: str) -> str:
    if ssim is None:
        return f"none: {why}"
    if ssim < 0:
        return "below 0: the reconstructions' local structure runs against the real images'"
    return "1 for identical images, 0 for unrelated structure"


def quality_rows(quality: Any) -> list[list[Cell]]:
    """PSNR, SSIM and rFID of the reconstructions (`varloss measure`), a dash and why where a
    number is missing; nothing for a report without them."""
    if not isinstance(quality, Mapping):
        return []
    facts = _quality_facts(quality)
    _, psnr_meaning = psnr_row(quality)
    rfid = facts["rfid"]
    rfid_meaning = (
        f"FID of the reconstructions against the real images ({facts['features']})"
        if rfid is not None
        else f"none: {facts['rfid_why']}"
    )
    return [
        [Cell("PSNR, reconstructed (dB)"), num_cell(facts["psnr"]), Cell(psnr_meaning)],
        [
            Cell("SSIM, reconstructed"),
            num_cell(facts["ssim"]),
            Cell(_ssim_words(facts["ssim"], facts["ssim_why"])),
        ],
        [Cell("rFID, reconstructed"), num_cell(rfid), Cell(rfid_meaning)],
    ]


def quality_sentence(quality: Mapping[str, Any]) -> str:
    """One sentence: the reconstructions' PSNR, SSIM and rFID as autoencoder papers report them,
    each with what it means here (infinite, negative, missing and why)."""
    facts = _quality_facts(quality)
    psnr, ssim, rfid = facts["psnr"], facts["ssim"], facts["rfid"]
    if psnr is None:
        psnr_text = "no PSNR (not in this report)"
    elif psnr == math.inf:
        psnr_text = f"an infinite PSNR ({_psnr_words(facts).removeprefix('infinite, ')})"
    else:
        psnr_text = f"a PSNR of {fmt(psnr)} dB ({_psnr_words(facts)})"
    if ssim is None:
        ssim_text = f"no SSIM ({facts['ssim_why']})"
    else:
        ssim_text = f"an SSIM of {fmt(ssim)} ({_ssim_words(ssim, facts['ssim_why'])})"
    if rfid is None:
        rfid_text = f"no rFID ({facts['rfid_why']})"
    else:
        rfid_text = f"an rFID of {fmt(rfid)} on {facts['features']} (lower is better)"
    return (
        f"As autoencoder papers report them, the reconstructions have {psnr_text}, {ssim_text} "
        f"and {rfid_text}."
    )


# ---------------------------------------------------------------------------------------------
# FID (the dict `varloss.quality.fid` returns)


_PRDC = (
    ("precision", "share of generated samples inside the real manifold (Kynkäänniemi 2019)"),
    ("recall", "share of real samples inside the generated manifold"),
    ("density", "how densely generated samples crowd real neighbourhoods (Naeem 2020)"),
    ("coverage", "share of real neighbourhoods that hold a generated sample"),
)


def fid_rows(fid: Any) -> list[list[Cell]]:
    """FID, its four terms, the feature trace ratio and precision/recall/density/coverage."""
    value = fid_number(fid)
    if value is None:
        return []
    meaning = "Fréchet distance of real and generated features"
    extractor = fid.get("extractor")
    if isinstance(extractor, Mapping) and extractor.get("name"):
        meaning += f" ({extractor['name']} features)"
    rows = [[Cell("FID"), num_cell(value), Cell(meaning)]]
    for name, term in (fid.get("terms") or {}).items():
        if number(term) is not None:
            rows.append(
                [
                    Cell(f"FID term: {name.replace('_', ' ')}"),
                    num_cell(term),
                    Cell("FID = mean term + trace real + trace generated - cross term"),
                ]
            )
    if number(fid.get("trace_ratio")) is not None:
        rows.append(
            [
                Cell("feature trace ratio"),
                num_cell(fid["trace_ratio"]),
                Cell("Tr Σ generated / Tr Σ real: variance kept in feature space"),
            ]
        )
    for key, key_meaning in _PRDC:
        if number(fid.get(key)) is not None:
            rows.append([Cell(key), num_cell(fid[key]), Cell(key_meaning)])
    return rows


# ---------------------------------------------------------------------------------------------
# settings


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested settings as dotted keys -> text (short lists as JSON)."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}{key}." if prefix or key else ""))
        if not value and prefix:
            out[prefix.rstrip(".")] = "{}"
        return out
    text = json.dumps(value) if isinstance(value, list | tuple) and len(str(value)) < 400 else value
    out[prefix.rstrip(".")] = "–" if text is None else str(text)
    return out


def settings_section(
    key_facts: list[tuple[str, Any]],
    recorded: Mapping[str, Any] | None = None,
    *,
    versions: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    spec_text: str | None = None,
) -> dict[str, Any]:
    """What produced the numbers: the key facts (missing ones left out), the package versions
    the run recorded, the model configuration, every recorded setting, the study spec."""
    facts = [(label, _fact_text(value)) for label, value in key_facts if value not in (None, "")]
    recorded = dict(recorded or {})
    recorded.pop("versions", None)
    return {
        "key_facts": facts,
        "versions": [(str(k), str(v)) for k, v in (versions or {}).items()],
        "all": list(flatten(recorded).items()),
        "model": list(flatten(model).items()) if model else [],
        "spec": spec_text,
    }


def _fact_text(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def correct_command(settings: Mapping[str, Any], directory: Path) -> str | None:
    """The `varloss correct` command line for a correct folder's recorded settings, or None.

    Covers the run, methods, seed, fitting limit, sample count, FID mode and output folder;
    per-sampler parameters (e.g. second-stage steps) are in the recorded sampler settings.
    """
    run_dir, methods = settings.get("run_dir"), settings.get("methods")
    if not run_dir or not methods:
        return None
    argv = ["varloss", "correct", str(run_dir), "--method", ",".join(map(str, methods))]
    if settings.get("seed") is not None:
        argv += ["--seed", str(settings["seed"])]
    if settings.get("train_limit") is not None:
        argv += ["--limit", str(settings["train_limit"])]
    n_generated, n_test = settings.get("n_generated"), settings.get("n_test")
    if n_generated is not None and n_generated != n_test:
        argv += ["--n-samples", str(n_generated)]
    if settings.get("fid") is not None:
        argv += ["--fid", str(settings["fid"])]
    if directory.resolve() != (Path(run_dir) / "correct").resolve():
        argv += ["--out", str(directory)]
    return shlex.join(argv)


_PACKAGES = (
    "varloss",
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "torchmetrics",
    "matplotlib",
    "jinja2",
    "safetensors",
)


def rendered_by(command: str | None) -> list[tuple[str, str]]:
    """When, by which command and with which packages this page was rendered."""
    rows = [
        ("rendered at", _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("command", command or "varloss.report.write_report (Python API)"),
        ("python", platform.python_version()),
        ("platform", platform.platform()),
    ]
    for package in _PACKAGES:
        try:
            rows.append((package, version(package)))
        except PackageNotFoundError:
            continue
    return rows
