"""Every sentence the pages build from numbers, fed numbers of the unexpected sign and size: a
remedy that overshoots, a second stage that gains variance, a fit with R² below 0 or a negative
slope, a zero MSE, a missing or NaN FID, a share that is not a share. Each test asserts that the
sentence says what the numbers say (the words and the numbers in it), not only that it renders.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from varloss._words import count, duration, plural, share
from varloss.figures.spectrum import high_frequency_phrase, high_frequency_split
from varloss.records import FitRecord, ResultsRow
from varloss.report import explain_variance
from varloss.report.html import fmt
from varloss.report.pages.correct import best_remedy_sentence, prior_sentence, remedies_section
from varloss.report.pages.study import (
    _explain_study,
    _protocol_sentence,
    _training_sentence,
    fit_sentences,
)
from varloss.report.pages.train import samples_caption
from varloss.report.sections import decomposition_sentence, generated_sentence
from varloss.report.spectrum import (
    latent_sentence,
    methods_spectrum_section,
    spectrum_section,
)
from varloss.report.study_table import ratio_cell, run_label
from varloss.variance.protocol import Reconstruction

_PERCENT = re.compile(r"(-?\d+(?:\.\d+)?)%")


def _percentages(text: str) -> list[float]:
    return [float(value) for value in _PERCENT.findall(text)]


def _assert_shares_are_shares(text: str) -> None:
    """No percentage in `text` lies outside 0..100 (a share is printed only where it is one)."""
    assert all(0 <= value <= 100 for value in _percentages(text)), text


# ---------------------------------------------------------------------------------------------
# counts, durations, shares


def test_counts_and_plurals() -> None:
    assert count(1, "epoch") == "1 epoch"
    assert count(0, "epoch") == "0 epochs"
    assert count(2, "epoch") == "2 epochs"
    assert count(-1, "run") == "-1 run"
    assert count(3, "loss") == "3 losses"
    assert count(2, "child", "children") == "2 children"
    assert plural("epoch", 1.0) == "epoch" and plural("epoch", 1.5) == "epochs"


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0.0, "under 0.1 s"),
        (0.049, "under 0.1 s"),
        (0.05, "0.1 s"),
        (12.34, "12.3 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min"),
        (60.0, "1 min"),
        (245.4, "4 min 5 s"),
        (245.6, "4 min 6 s"),
        (3599.6, "1 h"),
        (3599.0, "59 min 59 s"),
        (3600.0, "1 h"),
        (3725.0, "1 h 2 min"),
        (90061.0, "25 h 1 min"),
        (math.nan, "unknown"),
        (-1.0, "unknown"),
    ],
)
def test_durations_in_the_unit_a_reader_expects(seconds: float, said: str) -> None:
    assert duration(seconds) == said


def test_a_share_is_printed_only_where_it_is_one() -> None:
    assert share(0.3, 0.4) == "75%"
    assert share(-0.3, -0.4) == "75%"  # a part of a gain: still a share
    assert share(0.0, 0.4) == "0%"
    assert share(0.4, 0.4) == "100%"
    assert share(0.5, 0.4) is None  # more than the whole
    assert share(-0.1, 0.4) is None  # the opposite sign
    assert share(0.1, 0.0) is None  # no whole
    assert share(None, 0.4) is None and share(0.1, math.nan) is None
    assert share(1, 3, digits=1) == "33.3%"


# ---------------------------------------------------------------------------------------------
# the headline sentences (train, measure pages)


def test_reconstructions_that_gain_variance_are_said_to_gain_it() -> None:
    sentences = explain_variance(
        {"var_real": 0.1, "var_reconstructed": 0.12, "mse": 0.03, "bias2": 0.001, "cov_term": 0.0}
    )
    first = sentences[0]
    assert "more variance than the real images (0.12 against 0.1)" in first
    assert "a variance gain of 0.02, not a loss" in first
    assert "keep" not in first and "times the reconstruction MSE" not in first
    assert "(reconstruction MSE 0.03)" in first
    _assert_shares_are_shares(first)
    # MSE - bias² + cov = 0.029 while the loss is -0.02: here the identity's terms are said as
    # they are (a hand-made report may break the identity; the sentence still reports the terms)
    assert sentences[1].startswith("Variance loss = MSE - bias² + covariance term")


def test_zero_mse_gives_no_ratio() -> None:
    (sentence,) = explain_variance(
        {"var_real": 0.1, "var_reconstructed": 0.1, "mse": 0.0, "bias2": 0.0, "cov_term": 0.0}
    )
    assert "keep all of the real images' per-pixel variance (0.1): no variance loss" in sentence
    assert "exact (MSE 0), so there is no ratio to the MSE" in sentence
    assert "times" not in sentence and "inf" not in sentence and "nan" not in sentence


def test_a_loss_is_a_share_and_a_multiple_of_the_mse() -> None:
    first = explain_variance({"var_real": 0.2, "var_reconstructed": 0.15, "mse": 0.025})[0]
    assert "keep 75% of the real images' per-pixel variance (0.15 of 0.2)" in first
    assert f"a variance loss of {fmt(0.2 - 0.15)}" in first
    assert f"{(0.2 - 0.15) / 0.025:.2f} times the reconstruction MSE (0.025)" in first


def test_decomposition_follows_the_signs_of_its_terms() -> None:
    # loss = 0.02 - 0.001 - 0.009 = 0.01: the covariance term removes variance
    text = decomposition_sentence(0.02, 0.001, -0.009)
    assert "bias² removes 0.001 from the MSE" in text
    assert "the covariance term removes 0.009 from it" in text
    assert "lies 0.01 below the reconstruction error (0.02)" in text
    above = decomposition_sentence(0.02, 0.001, 0.031)
    assert "adds 0.031 to it" in above and "lies 0.03 above" in above
    balanced = decomposition_sentence(0.02, 0.005, 0.005)
    assert "equals the reconstruction error" in balanced
    small = decomposition_sentence(0.02, 0.0001, -0.0002)
    assert "are small" in small and "essentially the reconstruction error" in small


def test_generated_samples_that_gain_variance() -> None:
    text = generated_sentence(0.1, 0.13, 0.08)
    assert "more variance than the real images (0.13 against 0.1)" in text
    assert "a variance gain of 0.03, not a loss" in text
    # no "more/less than the reconstructions lose" comparison of a gain with a loss
    assert "reconstructions lose" not in text and "blurry" not in text
    _assert_shares_are_shares(text)
    losing = generated_sentence(0.1, 0.07, 0.08)
    assert "keep 70% of the real variance (0.07 of 0.1): a variance loss of 0.03" in losing
    assert "more than the reconstructions lose (0.02)" in losing and "blurry" in losing
    # reconstructions that gain variance: no comparison with what they "lose"
    assert "reconstructions lose" not in generated_sentence(0.1, 0.07, 0.12)


@pytest.mark.parametrize("fid", [None, {"fid": None}, {"fid": math.nan}, {"fid": "n/a"}])
def test_a_missing_or_nan_fid_gives_no_fid_sentence(fid: object) -> None:
    sentences = explain_variance({"var_real": 0.1, "var_generated": 0.07, "fid": fid})
    assert len(sentences) == 1 and "Fréchet" not in sentences[0]
    assert "nan" not in " ".join(sentences)
    with_fid = explain_variance({"var_real": 0.1, "var_generated": 0.07, "fid": {"fid": 12.5}})
    assert with_fid[-1] == (
        "The Fréchet distance between real and generated features is 12.5 (lower is better)."
    )


def test_the_samples_caption_names_the_run_s_protocol() -> None:
    sampled = samples_caption(Reconstruction.SAMPLE)
    assert "decode(mu + sigma * eps), one posterior draw per image" in sampled
    assert "`sample` protocol" in sampled and "decode(mu)," not in sampled
    mean = samples_caption(Reconstruction.MEAN)
    assert "decode(mu), the posterior mean" in mean and "`mean` protocol" in mean
    assert "sigma" not in mean


# ---------------------------------------------------------------------------------------------
# the correct page


def test_prior_with_an_excess_or_no_gap() -> None:
    assert prior_sentence(0.1, 0.06) == (
        "With the plain prior sampler, generated images keep 60% of the real variance "
        "(0.06 of 0.1): a gap of 0.04."
    )
    excess = prior_sentence(0.1, 0.125)
    assert "more variance than the real ones (0.125 against 0.1)" in excess
    assert "an excess of 0.025" in excess and "keep" not in excess
    assert "no gap to close" in prior_sentence(0.1, 0.1)


def test_a_remedy_that_overshoots_is_said_to_overshoot() -> None:
    # prior 0.06, real 0.1: a remedy at 0.116 overshoots; gap closed = 1 - 0.016 / 0.04 = 60%
    gap = 1 - abs(0.1 - 0.116) / abs(0.1 - 0.06)
    text = best_remedy_sentence("temperature", gap, 0.1, 0.06, 0.116)
    assert text.startswith(f"The remedy that closes most of it is temperature: {gap:.0%}")
    assert "overshoot" in text and "more variance than the real images (0.116 against 0.1)" in text
    # a remedy on the right side does not overshoot
    plain = best_remedy_sentence("temperature", 0.5, 0.1, 0.06, 0.08)
    assert plain == "The remedy that closes most of it is temperature: 50% of the gap"
    # a recorded gap closed above 100% (a hand-made report) is not printed as a share of the gap
    over = best_remedy_sentence("temperature", 1.4, 0.1, 0.06, 0.116)
    assert "140%" in over and "more than the whole gap" in over and "closes most" not in over


def test_a_remedy_that_moves_away_closes_none_of_the_gap() -> None:
    # -399%: the remedy's samples are five gaps away from the real variance
    text = best_remedy_sentence("temperature", -3.99, 0.1, 0.06, 0.3)
    assert text.startswith("No remedy closes any of the gap: the best, temperature, leaves")
    assert "further from the real one than the prior does (gap closed -399%)" in text


def _correct_report(methods: dict) -> dict:
    return {
        "baseline": {"var_real": 0.1, "var_generated": 0.06},
        "methods": {"prior": {"var_generated": 0.06, "gap_closed": 0.0}, **methods},
    }


def test_remedies_sentences_with_an_fid_that_gets_worse(tmp_path: Path) -> None:
    report = _correct_report(
        {
            "temperature": {
                "var_generated": 0.09,
                "gap_closed": 0.75,
                "fid_before": 30.0,
                "fid_after": 34.5,
            }
        }  # fmt: skip
    )
    sentences = remedies_section(report, tmp_path / "report.json")["sentences"]
    assert sentences[1] == (
        "The remedy that closes most of it is temperature: 75% of the gap; its FID goes from "
        "30 to 34.5 (up, lower is better)."
    )
    report["methods"]["temperature"]["fid_after"] = 21.0
    sentences = remedies_section(report, tmp_path / "report.json")["sentences"]
    assert "(down, lower is better)" in sentences[1]


def test_a_remedy_further_away_is_flagged_in_the_table(tmp_path: Path) -> None:
    report = _correct_report({"temperature": {"var_generated": 0.3, "gap_closed": -3.99}})
    table = remedies_section(report, tmp_path / "report.json")["table"]
    rows = {row[0].value: row for row in table.rows}
    assert rows["temperature"][3].text == "-399.0%"
    assert "further from the real variance than the prior" in rows["temperature"][3].title
    assert rows["prior"][3].title is None


def test_training_curves_count_their_epochs() -> None:
    from varloss.report.plots import loss_curves

    one = loss_curves([{"epoch": 0, "loss": 1.0, "mse": 0.1}])
    assert one is not None and one.caption == "From history.csv (1 epoch)."
    two = loss_curves([{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.9}])
    assert two is not None and two.caption == "From history.csv (2 epochs)."


# The reviewer's numbers: the second stage's samples have variance 0.982 against the codes'
# 0.959 (a gain of 0.0231, "-808.12 times the second stage's MSE").
_GAINING_STAGE = {
    "var_codes": 0.959,
    "var_reconstructed": 0.95,
    "var_generated": 0.982,
    "variance_loss_reconstructed": 0.009,
    "variance_loss_generated": -0.0231,
    "mse": 2.8585e-5,
    "ratio_reconstructed": 314.85,
    "ratio_generated": -808.12,
}


def test_a_second_stage_that_gains_variance() -> None:
    text = latent_sentence(_GAINING_STAGE, ["two-stage"], ["two-stage"])
    assert "the second stage's samples have more variance than the codes (0.982)" in text
    assert "they gain 0.0231 instead of losing variance" in text
    assert "-808" not in text and "keep 0.982" not in text and "a loss of -" not in text
    # the reconstructions do lose: 0.95 of 0.959 is a share, and a multiple of a positive MSE
    assert f"keep {0.95 / 0.959:.0%} of it (0.95): a loss of 0.009, 314.85 times" in text
    assert "gives that variance back" not in text
    assert "Renormalising the generated codes (two-stage) scales their variance back down" in text
    _assert_shares_are_shares(text)


def test_a_second_stage_that_loses_variance() -> None:
    losing = {**_GAINING_STAGE, "var_generated": 0.9, "variance_loss_generated": 0.059,
              "ratio_generated": 2064.0}  # fmt: skip
    text = latent_sentence(losing, ["two-stage", "two-stage-raw"], ["two-stage"])
    assert f"samples keep {0.9 / 0.959:.0%} of it (0.9): a loss of 0.059, 2064.00 times" in text
    assert "Renormalising the generated codes (two-stage) gives that variance back." in text
    # rows that sample the raw codes renormalise nothing
    assert "Renormalising" not in latent_sentence(losing, ["two-stage-raw"], [])
    # zero MSE: no multiple of it
    assert "times" not in latent_sentence({**losing, "mse": 0.0}, ["two-stage"])


def test_the_latent_block_is_shown_once_for_rows_that_share_it() -> None:
    methods = {
        "prior": {"var_generated": 0.06},
        "two-stage": {"latent": {**_GAINING_STAGE, "renormalized": True}},
        "two-stage-raw": {"latent": {**_GAINING_STAGE, "renormalized": False}},
        "two-stage-spherical": {"latent": {**_GAINING_STAGE, "renormalized": True}},
    }
    section = methods_spectrum_section(methods)
    assert section is not None
    (sentence,) = section["sentences"]
    assert "rows two-stage, two-stage-raw, two-stage-spherical" in sentence
    assert "codes (two-stage, two-stage-spherical) scales their variance back down" in sentence
    # a second stage with other numbers gets its own sentence
    methods["other"] = {"latent": {**_GAINING_STAGE, "var_codes": 1.0}}
    assert len(methods_spectrum_section(methods)["sentences"]) == 2


# ---------------------------------------------------------------------------------------------
# where in the spectrum


def _spectrum(shares: dict, totals: dict, radius: float = 0.25) -> dict:
    return {
        "bands": [
            {"lo": 0.0, "hi": 0.25, "kept_reconstructed": 0.9},
            {"lo": 0.25, "hi": 0.5, "kept_reconstructed": 0.4},
        ],
        "totals": {f"variance_loss_{kind}": value for kind, value in totals.items()},
        "high_frequency_share": shares,
        "high_frequency_radius": radius,
    }


def test_a_share_of_the_loss_above_half_nyquist() -> None:
    spectrum = _spectrum({"generated": 0.6}, {"generated": 0.02})
    assert high_frequency_split(spectrum, "generated") == pytest.approx((0.012, 0.02))
    assert high_frequency_phrase(spectrum, "generated", "the generated images") == (
        "60% of the generated images' variance loss lies above 0.25 cycles/pixel"
    )
    gain = _spectrum({"generated": 0.5}, {"generated": -0.02})
    assert high_frequency_phrase(gain, "generated", "the match samples") == (
        "50% of the match samples' variance gain lies above 0.25 cycles/pixel"
    )


def test_shares_of_a_quantity_that_changed_sign_are_said_in_words() -> None:
    # "temperature: -399%": the samples lose 0.01 overall but gain 0.0399 above the radius
    text = high_frequency_phrase(
        _spectrum({"generated": -3.99}, {"generated": 0.01}), "generated", "the temperature samples"
    )
    assert text == (
        "the temperature samples lose 0.01 of variance overall but gain 0.0399 above 0.25 "
        "cycles/pixel"
    )
    # "match: 1379%": they lose 0.1379 above the radius, more than overall (0.01): below it
    # they gain 0.1279
    text = high_frequency_phrase(
        _spectrum({"generated": 13.79}, {"generated": 0.01}), "generated", "the match samples"
    )
    assert text == (
        "the match samples lose 0.138 of variance above 0.25 cycles/pixel, more than overall "
        "(0.01): below it they gain 0.128"
    )
    # a gain overall with a loss above the radius
    text = high_frequency_phrase(
        _spectrum({"generated": -2.0}, {"generated": -0.01}), "generated", "the prior samples"
    )
    assert text == (
        "the prior samples gain 0.01 of variance overall but lose 0.02 above 0.25 cycles/pixel"
    )
    assert high_frequency_phrase(_spectrum({}, {}), "generated", "x") is None


def test_the_correct_page_per_method_sentences_never_print_a_share_over_100() -> None:
    methods = {
        "temperature": {"spectrum": _spectrum({"generated": -3.99}, {"generated": 0.01})},
        "match": {"spectrum": _spectrum({"generated": 13.79}, {"generated": 0.01})},
        "prior": {"spectrum": _spectrum({"generated": 0.7}, {"generated": 0.04})},
    }
    (sentences,) = methods_spectrum_section(methods)["sentences"]
    _assert_shares_are_shares(sentences)
    assert "The temperature samples lose 0.01 of variance overall but gain 0.0399" in sentences
    assert "The match samples lose 0.138 of variance above" in sentences
    assert "70% of the prior samples' variance loss lies above 0.25 cycles/pixel." in sentences


def test_kept_variance_above_the_real_is_a_multiple_not_a_share() -> None:
    spectrum = _spectrum({"reconstructed": 0.5}, {"reconstructed": 0.02})
    spectrum["bands"][-1]["kept_reconstructed"] = 1.2
    sentences = spectrum_section({"spectrum": spectrum})["sentences"]
    assert sentences[0] == (
        "50% of the reconstructed images' variance loss lies above 0.25 cycles/pixel."
    )
    assert sentences[1] == (
        "In the lowest frequency band the reconstructions keep 90% of the real variance; in the "
        "highest they have 1.20 times the real variance."
    )
    spectrum["bands"][0]["kept_reconstructed"] = -0.5  # not a variance ratio: said plainly
    lowest = spectrum_section({"spectrum": spectrum})["sentences"][1]
    assert "reconstructions have a variance ratio of -0.5 to the real images;" in lowest
    _assert_shares_are_shares(lowest)


# ---------------------------------------------------------------------------------------------
# the study page


def _fit_json(slope: float | None, intercept: float, r2: float | None) -> dict:
    """A fit.json object as the study writes it (the other fits and the table left empty)."""
    return {
        "reconstructed": {"slope": slope, "intercept": intercept, "r2": r2, "n": 6,
                          "slope_ci95": [slope - 0.1, slope + 0.1] if slope is not None else None},
        "bootstrap": {"resamples": 1},
        "family_ratios": [],
    }  # fmt: skip


def _fit(slope: float | None, intercept: float = 0.0, r2: float | None = None) -> FitRecord:
    return FitRecord.from_json(_fit_json(slope, intercept, r2))


def test_a_fit_worse_than_the_mean() -> None:
    line, verdict = fit_sentences(_fit(1.02, 0.001, -0.35))
    assert "variance loss ≈ 1.02 × MSE + 0.001 (R² = -0.350)" in line
    assert "(percentile bootstrap over the runs, 1 resample)" in line
    assert verdict.startswith("R² is below 0: the line fits the points worse than their mean")
    assert "close to 1" not in verdict  # a slope of 1.02 with R² < 0 is no evidence


def test_a_negative_slope() -> None:
    line, verdict = fit_sentences(_fit(-0.4, -0.002, 0.6))
    assert "variance loss ≈ -0.4 × MSE - 0.002 (R² = 0.600)" in line
    assert verdict.startswith("The slope is negative: across these runs a larger")


def test_slopes_near_and_away_from_one() -> None:
    assert fit_sentences(_fit(0.98, 0.0, 0.97))[1].startswith("The slope is close to 1:")
    loose = fit_sentences(_fit(0.98, 0.0, 0.5))[1]
    assert loose.startswith("The slope is close to 1 but the fit is loose (R² = 0.500)")
    assert fit_sentences(_fit(2.5, 0.0, 0.97))[1].startswith("The slope is away from 1")
    assert fit_sentences(_fit(None)) == []
    assert fit_sentences(None) == []
    no_bootstrap = _fit_json(1.0, 0.0, 0.99)
    del no_bootstrap["bootstrap"]
    assert "None" not in fit_sentences(FitRecord.from_json(no_bootstrap))[0]


def _row(**values: object) -> ResultsRow:
    """A results.csv row as the study page reads it (cells parsed by the records layer)."""
    cells = {"run_id": "r", "family": "dense", "dataset": "mnist", "latent": 2, "epochs": 1,
             "seed": 0, **values}  # fmt: skip
    return ResultsRow.from_csv_row({key: str(value) for key, value in cells.items()})


def test_one_run_is_one_vae_and_one_epoch() -> None:
    first = _explain_study([_row()], None)[0]
    assert first.startswith("1 VAE was trained (dense on mnist)")
    assert _explain_study([_row(), _row()], None)[0].startswith("2 VAEs were trained")
    capped = _training_sentence([_row(early_stopped="False")])
    assert capped == (
        "The one run trained with early stopping reached its epoch cap while still improving, "
        "so it is less than converged: dense on mnist (1 epoch)."
    )
    text = _training_sentence(
        [_row(early_stopped="False", epochs=30), _row(early_stopped="False", epochs=30)]
    )
    assert text.startswith("None of the 2 runs trained with early stopping stopped")
    assert "2 reached their epoch cap" in text and "(30 epochs) ×2" in text


def test_the_protocol_sentence_uses_the_protocol_s_own_wording() -> None:
    mixed = _protocol_sentence(
        [_row(reconstruction="mean"), _row(reconstruction="sample"), _row()]
    )  # a row without the column was measured with `mean` (protocol_of's fallback)
    assert f"2 with the `mean` protocol, x̂ = {Reconstruction.MEAN.description}" in mixed
    assert f"1 with the `sample` protocol, x̂ = {Reconstruction.SAMPLE.description}" in mixed


def test_the_results_ratio_is_undefined_at_zero_mse() -> None:
    cell = ratio_cell(0.0, 0.0)
    assert cell.text == "–" and cell.value is None and "undefined" in (cell.title or "")
    assert ratio_cell(-0.01, 0.02).value == pytest.approx(-0.5)  # a gain: a negative ratio
    assert ratio_cell(None, 0.02).text == "–"
    assert ratio_cell(0.03, 0.02).text == fmt(1.5)


def test_run_labels_name_what_differs() -> None:
    row = _row(latent=8, reconstruction="sample", seed=0)
    assert run_label(row, []) == "dense mnist"
    assert run_label(row, ["latent", "reconstruction"]) == "dense mnist z8 sample"
