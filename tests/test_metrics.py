"""The VarianceLoss torchmetrics Metric: equals measure(); merges across 2 gloo processes; a
sibling of VarianceSpectrum over one moment base, both merging across simulated ranks."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

import varloss
from varloss.variance import VarianceLoss, VarianceSpectrum
from varloss.variance.moment_metric import MomentMetric

KEYS = (
    "var_real",
    "var_reconstructed",
    "var_generated",
    "mse",
    "bias2",
    "cov_term",
    "variance_loss_reconstructed",
    "variance_loss_generated",
)


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(301, 1, 5, 5, generator=generator, dtype=torch.float64)
    reconstructed = 0.6 * real + 0.2 * torch.rand(
        real.shape, generator=generator, dtype=torch.float64
    )
    generated = 0.4 * torch.rand(177, 1, 5, 5, generator=generator, dtype=torch.float64)
    return real, reconstructed, generated


def test_metric_equals_measure_over_batches() -> None:
    real, reconstructed, generated = _data()
    metric = VarianceLoss()
    for index, generated_part in zip(
        torch.arange(301).tensor_split(6), generated.tensor_split(6), strict=True
    ):
        metric.update(real[index], reconstructed=reconstructed[index], generated=generated_part)
    result = metric.compute()
    report = varloss.measure(real.numpy(), reconstructed.numpy(), generated.numpy())
    for key in KEYS:
        assert result[key] == pytest.approx(getattr(report, key), rel=1e-12), key


def test_forward_and_merge_state_merge_with_chan() -> None:
    real, reconstructed, _ = _data()
    a, b = VarianceLoss(), VarianceLoss()
    a.update(real[:100], reconstructed[:100])
    b.update(real[100:], reconstructed[100:])
    a.merge_state(b)
    whole = VarianceLoss()
    whole(real[:150], reconstructed[:150])  # forward: batch value + accumulation
    whole(real[150:], reconstructed[150:])
    reference = varloss.measure(real.numpy(), reconstructed.numpy())
    for metric in (a, whole):
        assert metric.compute()["mse"] == pytest.approx(reference.mse, rel=1e-12)


def test_mixing_paired_and_unpaired_updates_is_refused() -> None:
    real, reconstructed, _ = _data()
    metric = VarianceLoss()
    metric.update(real[:10], reconstructed[:10])
    with pytest.raises(ValueError, match="every update or in none"):
        metric.update(real[10:20])


def _simulated_gather(ranks: list) -> object:
    """A stand-in for torch.distributed's all-gather among `ranks` (metrics in one process): each
    state of the calling metric comes back as that state of every rank, in rank order."""

    def gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        caller = next(rank for rank in ranks if any(v is tensor for v in rank._states().values()))
        name = next(key for key, value in caller._states().items() if value is tensor)
        return [getattr(rank, name) for rank in ranks]

    return gather


def test_loss_and_spectrum_are_siblings_that_merge_across_simulated_ranks() -> None:
    real, reconstructed, generated = _data()
    loss, spectrum = VarianceLoss(), VarianceSpectrum(bands=3)
    assert isinstance(loss, MomentMetric) and isinstance(spectrum, MomentMetric)
    assert not isinstance(loss, VarianceSpectrum) and not isinstance(spectrum, VarianceLoss)
    whole = varloss.measure(real.numpy(), reconstructed.numpy(), generated.numpy(), spectrum=3)
    for kind in (VarianceLoss, lambda: VarianceSpectrum(bands=3)):
        ranks = [kind(), kind()]
        for rank, metric in enumerate(ranks):  # uneven shards: 151 and 150 real images
            part = slice(rank, None, 2)
            metric.update(real[part], reconstructed[part], generated[part])
        alone = type(ranks[0]).compute(ranks[0])  # rank 0's shard only, before the gather
        merged = ranks[0].sync_compute(
            dist_sync_fn=_simulated_gather(ranks), distributed_available=lambda: True
        )
        after = type(ranks[0]).compute(ranks[0])  # the local states are back after the gather
        if isinstance(ranks[0], VarianceLoss):
            assert merged["n_real"] == 301 and alone["n_real"] == after["n_real"] == 151
            for key in KEYS:
                assert merged[key] == pytest.approx(getattr(whole, key), rel=1e-12), key
            assert abs(alone["mse"] - whole.mse) > 1e-6  # the gather changed the answer
        else:
            for key in ("var_real", "var_generated", "mse", "bias2", "cov_term"):
                got = [band[key] for band in merged["bands"]]
                want = [band[key] for band in whole.spectrum["bands"]]
                assert got == pytest.approx(want, rel=1e-11), key
            assert after == alone


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        real, reconstructed, generated = _data()
        metric = VarianceLoss()
        # uneven shards, several batches per rank
        index = torch.arange(301)[rank::world]
        for part in index.tensor_split(3):
            metric.update(real[part], reconstructed=reconstructed[part])
        gen = VarianceLoss()
        gen.update(real[index], generated=generated[rank::world])
        result = metric.compute()
        result_generated = gen.compute()
        if rank == 0:
            queue.put(
                (
                    {k: result[k] for k in KEYS if result.get(k) is not None},
                    result_generated["var_generated"],
                    result["n_real"],
                )
            )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process() -> None:
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    mp.start_processes(_worker, args=(2, port, queue), nprocs=2, join=True, start_method="spawn")
    merged, var_generated, n_real = queue.get(timeout=60)
    real, reconstructed, generated = _data()
    reference = varloss.measure(real.numpy(), reconstructed.numpy(), generated.numpy())
    assert n_real == 301
    for key, value in merged.items():
        assert value == pytest.approx(getattr(reference, key), rel=1e-12), key
    assert var_generated == pytest.approx(reference.var_generated, rel=1e-12)
