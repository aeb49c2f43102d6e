"""One rule for every command: `measure_model` (and `varloss measure --model`) with a run's own
seed, protocol, test images and sample count reproduces the run's report.json, for both protocols
and for the iterative families (DRAW, ConvDRAW) too; `correct` with the run's seed decodes the
run's prior codes; the named streams are the documented epoch-seed rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from varloss import measure_model
from varloss.data import load
from varloss.models import load_model
from varloss.pipelines.train import train
from varloss.runs import REPORT_FILE, RunFolder
from varloss.train_config import TrainConfig
from varloss.variance.protocol import (
    NOISE_BLOCK,
    NoiseStream,
    Reconstruction,
    Stream,
    protocol_of,
    stream_seed,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The numbers report.json and `measure` share; the variance losses and covariance term included.
KEYS = (
    "var_real",
    "var_reconstructed",
    "var_generated",
    "variance_loss_reconstructed",
    "variance_loss_generated",
    "mse",
    "bias2",
    "cov_term",
)
SEED = 5
EVAL_LIMIT = 280  # of digits' 297 test images; over one NOISE_BLOCK: the streams' blocks and the
# model's batches are exercised
FAMILIES = {
    "dense": {"hidden_sizes": [16]},
    "draw": {"steps": 2, "hidden": 16},
    "convdraw": {"steps": 2, "hidden_channels": 4, "canvas_channels": 4},
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def run(request, tmp_path_factory) -> tuple[Path, dict]:
    """A one-epoch run of the family, its report evaluated with each protocol (the second is
    measured again from the finished run, nothing trained): {protocol: report}."""
    family = request.param
    out = tmp_path_factory.mktemp(family) / "run"
    values = dict(family=family, dataset="digits", epochs=1, latent=4, seed=SEED, out=str(out))
    values.update(limit=100, eval_limit=EVAL_LIMIT, batch_size=50, fid="off")
    values["hyper"] = FAMILIES[family]
    reports = {}
    for protocol in Reconstruction:
        config = TrainConfig(**values, reconstruction=protocol.value)
        again = protocol is not Reconstruction.MEAN  # the finished run, measured again
        reports[protocol] = train(config, resume=again, progress=False)
        on_disk = RunFolder(out).read_json(REPORT_FILE)
        assert protocol_of(on_disk) is protocol
    return out, reports


@pytest.mark.parametrize("protocol", list(Reconstruction))
def test_measure_model_reproduces_the_runs_report(run, protocol: Reconstruction) -> None:
    out, reports = run
    report = reports[protocol]
    images = load("digits", "test", limit=EVAL_LIMIT).images
    measured = measure_model(
        load_model(out),
        images,
        reconstruction=protocol,
        seed=SEED,
        n_generated=report["settings"]["evaluation"]["test_images"],
    )
    for key in KEYS:
        assert getattr(measured, key) == pytest.approx(report[key], rel=1e-9, abs=0), key
    # Both record the same stream seeds, computed by the one rule.
    evaluation = report["settings"]["evaluation"]
    for key in ("reconstruction", "reconstruction_seed", "codes_seed"):
        assert measured.settings[key] == evaluation[key], key
    assert evaluation["codes_seed"] == (SEED * 1_000_003 - 1 * 7919 + 17)
    sampled = protocol is Reconstruction.SAMPLE
    assert evaluation["reconstruction_seed"] == (
        (SEED * 1_000_003 - 2 * 7919 + 17) if sampled else None
    )
    assert evaluation["reconstructions"] == protocol.description


def test_the_protocols_differ_and_the_samples_do_not(run) -> None:
    _, reports = run
    mean, sample = reports[Reconstruction.MEAN], reports[Reconstruction.SAMPLE]
    assert sample["mse"] != mean["mse"]  # a posterior draw is not decode(mu)
    assert sample["var_generated"] == mean["var_generated"]  # the same codes, decoded


def test_cli_measure_reproduces_the_runs_report(run, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from varloss.cli import app

    out, reports = run
    report = reports[Reconstruction.SAMPLE]
    # --real: the run's own test images (its eval_limit first ones of digits:test), as a file
    real = tmp_path / "real.npy"
    np.save(real, load("digits", "test", limit=EVAL_LIMIT).images.numpy())
    args = ["measure", "--model", str(out), "--real", str(real), "--seed", str(SEED)]
    args += ["--reconstruction", "sample", "--json", str(tmp_path / "m.json")]
    monkeypatch.setattr("sys.argv", ["varloss", *args])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = RunFolder(tmp_path).read_json("m.json")
    for key in KEYS:
        assert written[key] == pytest.approx(report[key], rel=1e-9, abs=0), key
    assert written["settings"]["reconstruction_seed"] == stream_seed(
        SEED, Stream.RECONSTRUCTION_DRAWS
    )


def test_the_streams_follow_the_epoch_seed_rule_in_blocks() -> None:
    # Independently: the documented rule, and torch.randn in blocks of NOISE_BLOCK rows.
    for stream, index in ((Stream.EVALUATION_CODES, -1), (Stream.RECONSTRUCTION_DRAWS, -2)):
        seed = (7 * 1_000_003 + index * 7919 + 17) % (2**63 - 1)
        assert stream_seed(7, stream) == seed
        generator = torch.Generator().manual_seed(seed)
        blocks = torch.cat([torch.randn(NOISE_BLOCK, 3, generator=generator) for _ in range(2)])
        assert torch.equal(NoiseStream.named(7, stream, 3).take(NOISE_BLOCK + 9), blocks[:265])
    # The validation streams keep the values early stopping always used (epoch_seed(seed, -3/-4)).
    assert stream_seed(3, Stream.VALIDATION_SPLIT) == 3 * 1_000_003 - 3 * 7919 + 17
    assert stream_seed(3, Stream.VALIDATION_DRAWS) == 3 * 1_000_003 - 4 * 7919 + 17


def test_correct_with_the_runs_seed_decodes_the_runs_prior_codes(run, tmp_path) -> None:
    from varloss.pipelines.correct import correct

    out, reports = run
    report = reports[Reconstruction.MEAN]
    n_test = report["settings"]["evaluation"]["test_images"]
    assert n_test == EVAL_LIMIT
    options = {"n_samples": n_test, "fid": "off", "progress": False, "seed": SEED}
    corrected = correct(out, "prior", tmp_path / "correct", **options)
    prior = corrected["baseline"]
    # The same codes through the same decoder (in other batches: float32 rounding only).
    assert prior["var_generated"] == pytest.approx(report["var_generated"], rel=1e-6)
    assert corrected["settings"]["codes_seed"] == report["settings"]["evaluation"]["codes_seed"]
    other = correct(out, "prior", tmp_path / "other", **{**options, "seed": SEED + 1})
    assert other["baseline"]["var_generated"] != pytest.approx(report["var_generated"], rel=1e-3)


def test_a_prior_other_than_n01_draws_its_own_codes(tmp_path) -> None:
    """A pythae VAMP's prior is a mixture, not N(0, I): it takes no stream codes (one sentence),
    and `measure_model` samples it under torch.manual_seed(the evaluation-code stream's seed)."""
    pythae_models = pytest.importorskip("pythae.models")
    from varloss.errors import InputError
    from varloss.models.adapters import load_adapter

    torch.manual_seed(0)
    config = pythae_models.VAMPConfig(input_dim=(1, 8, 8), latent_dim=2, number_components=4)
    pythae_models.VAMP(config).save(str(tmp_path / "vamp"))
    adapter = load_adapter(f"pythae:{tmp_path / 'vamp'}")
    with pytest.raises(InputError, match="does not decode given N\\(0, I\\) codes"):
        adapter.sample(2, noise=torch.zeros(2, 2))
    images = load("digits", "test", limit=40).images
    report = measure_model(adapter, images, n_generated=30, seed=SEED)
    assert report.settings["generated_by"] == "PythaeAdapter.sample"
    with torch.random.fork_rng():
        torch.manual_seed(stream_seed(SEED, Stream.EVALUATION_CODES))
        by_hand = adapter.sample(30)
    assert report.var_generated == pytest.approx(
        by_hand.double().reshape(30, -1).var(0, correction=0).mean().item(), rel=1e-9
    )


def test_fid_mode_has_one_home_and_one_sentence() -> None:
    """The FID modes and their check live beside the other evaluation settings; the pipelines'
    policy, the train settings and `correct` all use that one check."""
    from varloss.errors import InputError
    from varloss.quality import policy
    from varloss.train_config import SettingError, TrainConfig
    from varloss.variance import protocol

    assert policy.FID_MODES is protocol.FID_MODES and policy.fid_mode is protocol.fid_mode
    assert [protocol.fid_mode(m) for m in ("auto", "on", "off", True, False)] == [
        "auto", "on", "off", "on", "off",
    ]  # fmt: skip
    sentence = r"^--fid must be one of auto, on, off, inception, got 'yes'\.$"
    with pytest.raises(InputError, match=sentence):
        protocol.fid_mode("yes", "--fid")
    with pytest.raises((InputError, SettingError), match="one of auto, on, off"):
        TrainConfig(fid="sometimes")
