"""`correct`'s spectrum per method and the two-stage sampler's variance loss in latent space,
recomputed independently with numpy from the saved sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _digits_vae import digits_images, trained_vae

from varloss.data import load
from varloss.models import save_model
from varloss.pipelines.correct import correct
from varloss.runs import RunFolder
from varloss.samplers import load_sampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_two_stage_rows_carry_the_latent_variance_loss(tmp_path) -> None:
    model = trained_vae(digits_images(), steps=150)
    run = tmp_path / "run"
    save_model(model, run, extra={"train": {"dataset": "digits", "limit": 300}})
    RunFolder(run).seal()
    params = {"two-stage": {"steps": 60, "n_renorm": 300, "hidden": [32, 32]}}
    report = correct(
        run, "two-stage", tmp_path / "out", n_samples=200, sampler_params=params, fid="off",
        progress=False,
    )  # fmt: skip
    row = report["methods"]["two-stage"]
    assert "latent" not in report["methods"]["prior"]
    assert len(row["spectrum"]["bands"]) == 8 and row["spectrum"]["bands"][0]["mse"] is None
    latent = row["latent"]

    # independently: encode the test images, standardise, run the saved second stage, numpy var
    sampler = load_sampler(tmp_path / "out" / "samplers" / "two-stage", model)
    test = load("digits", "test").images
    with torch.no_grad():
        mu, _ = model.encode(test)
        codes = ((mu.double() - sampler.code_mean) / sampler.code_std).numpy()
        mean, _ = sampler.network.encode(torch.from_numpy(codes).float())
        recon = sampler.network.decode(mean).double().numpy()
    var_codes = codes.var(axis=0).mean()
    mse = ((codes - recon) ** 2).mean()
    assert latent["var_codes"] == pytest.approx(var_codes, rel=1e-6)
    assert latent["mse"] == pytest.approx(mse, rel=1e-5)
    assert latent["variance_loss_reconstructed"] == pytest.approx(
        var_codes - recon.var(axis=0).mean(), rel=1e-5, abs=1e-9
    )
    assert latent["ratio_generated"] == pytest.approx(
        latent["variance_loss_generated"] / latent["mse"], rel=1e-12
    )
    assert np.isfinite(latent["var_generated"]) and latent["n_codes"] == len(test)
