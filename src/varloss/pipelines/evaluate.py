"""Evaluate a trained model on the test split: the `varloss measure` numbers of its
reconstructions and prior samples, the FID of the samples when wanted, and the sample grid and
per-pixel maps of a run folder.

Seeded by the one rule of `varloss.variance.protocol`: image i's reconstruction draw and sample
i's prior code are row i of the run seed's named streams, so the same weights and config give the
same numbers, bit for bit, and `varloss measure --model RUN --seed <the run's seed>` (same
protocol, test images and sample count) gives them too. Under torchrun the test split is sharded
over the ranks and merged through `VarianceLoss` (Chan's formula), so the numbers equal a
single-process evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from varloss.data import load
from varloss.figures import save_image_grid
from varloss.pipelines.runtime import Ranks
from varloss.quality import domain_extractor_available, domain_fid_reason, fid_or_reason
from varloss.runs import MAPS_FILE, SAMPLES_FILE, RunFolder
from varloss.train_config import TrainConfig
from varloss.variance import VarianceLoss, VarianceSpectrum
from varloss.variance.protocol import (
    NOISE_BLOCK,
    NoiseStream,
    Reconstruction,
    Stream,
    stream_settings,
)

GRID_SIZE = 12  # images per row of samples.png


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    config: TrainConfig,
    *,
    ranks: Ranks | None = None,
    out: str | Path | RunFolder | None = None,
    settings: dict[str, Any] | None = None,
    batch_size: int = NOISE_BLOCK,
) -> dict[str, Any]:
    """Seeded evaluation on the test split: real vs reconstructions (decode(mu), or one seeded
    posterior draw per image with `config.reconstruction="sample"`), and real vs as many prior
    samples as test images. Same weights, same config -> the same numbers, bit for bit. The
    batches are `measure_model`'s default (NOISE_BLOCK), so that it repeats them exactly.

    With `out` (a folder), also writes samples.png and maps.npz there; under torchrun `ranks`
    shards the test split.
    """
    ranks = ranks or Ranks()
    test_set = load(config.dataset, "test", data_path=config.data_path, limit=config.eval_limit)
    device = next(model.parameters()).device
    model.eval()
    n_test = test_set.images.shape[0]
    shard = torch.arange(n_test).tensor_split(ranks.world)[ranks.rank]
    real = test_set.images[shard].to(device)
    protocol = Reconstruction.parse(config.reconstruction)
    codes, noise = _draws(config.seed, protocol, n_test, model.latent_dim, shard, device)

    want_fid = ranks.all_agree(fid_wanted(config), device)  # every rank takes part in the gather
    kept: list[torch.Tensor] = []
    metric = VarianceLoss().to(device)
    spectrum = VarianceSpectrum().to(device)  # per frequency band: cheap next to training
    first: dict[str, torch.Tensor] = {}
    for start in range(0, real.shape[0], batch_size):
        x = real[start : start + batch_size]
        if noise is None:
            reconstructed = model.reconstruct(x).float()
        else:  # decode(mu + sigma * eps), the draws of these images
            reconstructed = model.reconstruct(x, noise[start : start + batch_size]).float()
        generated = model.decode(codes[start : start + batch_size]).float()
        metric.update(x, reconstructed=reconstructed, generated=generated)
        spectrum.update(x, reconstructed=reconstructed, generated=generated)
        if want_fid:
            kept.append(generated.cpu())
        if not first:
            first = {"real": x, "reconstructed": reconstructed, "generated": generated}
    result = metric.sync_report(dims=list(test_set.images.shape[1:]))
    report = result.to_dict()
    report["spectrum"] = spectrum.sync_compute()  # every rank takes part in the gather
    report["settings"] = {
        **(settings or {}),
        "evaluation": {
            "split": "test",
            "test_images": n_test,
            "test_source": test_set.source,
            **stream_settings(protocol, config.seed),
            "generated": f"decode(z), z ~ N(0, I), {n_test} codes seeded from seed {config.seed}",
        },
    }
    if want_fid:
        # Under DDP each rank generated a shard of the one seeded stream: rank 0 gets them all.
        generated_all = ranks.gather_on_main(torch.cat(kept))
        if ranks.main:
            report["fid"], report["fid_reason"] = sample_fid(test_set, generated_all, config)
    elif config.fid != "off":
        # auto without a cached classifier: the set has no labels, or none is cached yet
        report["fid_reason"] = domain_fid_reason(test_set, config.dataset)
    if out is not None:  # both writers are atomic; the run's seal records their digests
        folder = out if isinstance(out, RunFolder) else RunFolder(out)
        save_image_grid(
            {name: images[:GRID_SIZE].cpu() for name, images in first.items()},
            folder.file(SAMPLES_FILE),
            title=f"{config.family} on {config.dataset}: real / reconstructed / generated",
        )
        folder.write_arrays(MAPS_FILE, result.maps, record=False)
    return report


def _draws(
    seed: int,
    protocol: Reconstruction,
    n_test: int,
    latent_dim: int,
    shard: torch.Tensor,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This rank's prior codes and (with `sample`) reconstruction draws: the rows `shard` of the
    run seed's named streams. Every rank takes the whole streams and keeps its shard's rows, so
    image i gets row i and the numbers do not depend on the world size."""

    def rows(stream: Stream) -> torch.Tensor:
        return NoiseStream.named(seed, stream, latent_dim).take(n_test)[shard].to(device)

    sampled = protocol is Reconstruction.SAMPLE
    return rows(Stream.EVALUATION_CODES), rows(Stream.RECONSTRUCTION_DRAWS) if sampled else None


def fid_wanted(config: TrainConfig) -> bool:
    """--fid on or inception, or auto with the data set's domain classifier already cached;
    never with off."""
    if config.fid == "off":
        return False
    return config.fid in ("on", "inception") or domain_extractor_available(config.dataset)


def sample_fid(
    test_set: Any, generated: torch.Tensor, config: TrainConfig
) -> tuple[dict[str, Any] | None, str | None]:
    """FID (domain or Inception features, as --fid says) of the prior samples against the test
    split, or None and why: a missing classifier or missing weights must not fail a finished
    training run (the policy of `fid_or_reason`)."""
    return fid_or_reason(test_set, generated, dataset=config.dataset, mode=config.fid)
