"""The VarianceLoss torchmetrics Metric: equals measure(); merges across 2 gloo processes."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

import varloss
from varloss.variance import VarianceLoss

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
