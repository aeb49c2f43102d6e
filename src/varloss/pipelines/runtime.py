"""Where a run executes: the device, the seeds, the ranks under torchrun, and what is recorded
about the machine.

Under `torchrun` (WORLD_SIZE > 1) every rank calls the same functions; `Ranks` says which one
this process is, and rank 0 alone writes files.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Any

import numpy
import torch
import torch.distributed as dist

from varloss import __version__
from varloss.models.adapters import resolve_device
from varloss.variance.protocol import epoch_seed  # noqa: F401  (re-exported: the one rule)


def pick_device(requested: str | None = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU; under torchrun each rank takes its local GPU.
    A device torch cannot run a model on is one InputError (`resolve_device`, the one check)."""
    if requested == "cuda" and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        requested = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return resolve_device(requested)


@dataclass(frozen=True)
class Ranks:
    """This process's place among `world` processes (1 without torchrun)."""

    world: int = 1
    rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place."""
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def all_agree(self, flag: bool, device: torch.device) -> bool:
        """True only when `flag` is true on every rank."""
        if self.world == 1:
            return flag
        value = torch.tensor([int(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def gather_on_main(self, samples: torch.Tensor) -> torch.Tensor:
        """Every rank's samples concatenated in rank order on rank 0 (other ranks: their own)."""
        if self.world == 1:
            return samples
        parts: list[Any] | None = [None] * self.world if self.main else None
        dist.gather_object(samples, parts, dst=0)
        return torch.cat(parts) if parts is not None else samples


def init_ranks(device: torch.device) -> Ranks:
    """Join the process group torchrun set up (nccl on CUDA, gloo on CPU); Ranks() without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Ranks(world=dist.get_world_size(), rank=dist.get_rank())


def versions() -> dict[str, str]:
    """The versions that produced a run (recorded in its config and report)."""
    return {
        "varloss": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
