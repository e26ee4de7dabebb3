"""Data-parallel stage 2 under ``torchrun``: process-group set-up and the per-rank batch shard.

``torchrun --nproc-per-node N recraft stage fit`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment.
:func:`init_from_env` joins them into one process group: NCCL on GPU (one device per local
rank), gloo on CPU. Every rank draws the same global batch from the same seeded generator and
trains on its slice of it (:func:`shard`); DistributedDataParallel averages the gradients, and
:func:`shard_scale` weights each rank's loss so that the average equals the single-process
gradient of the whole global batch. Rank 0 alone logs and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from components.errors import UserError

__all__ = [
    "World",
    "world_size_from_env",
    "current_world",
    "init_from_env",
    "shutdown",
    "shard",
    "shard_scale",
    "all_sum",
]


@dataclass(frozen=True)
class World:
    """Where this process stands in the process group (rank 0 of 1 without ``torchrun``)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs, checkpoints and writes outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise UserError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from exc


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 without torchrun); a clear error for a bad value."""
    return _env_int("WORLD_SIZE", 1)


def current_world() -> World:
    """The initialised process group, or rank 0 of 1 when there is none."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return World()


def init_from_env(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group described by torchrun's environment; returns the world and this
    rank's device (``cuda:LOCAL_RANK`` on GPU). Without ``WORLD_SIZE`` > 1 nothing happens."""
    size = world_size_from_env()
    if size <= 1:
        return World(), device
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA devices",
                hint="use --nproc-per-node at most the number of GPUs",
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=size)
    return World(rank, size, local_rank), device


def shutdown(wait: bool = True) -> None:
    """Leave the process group; with ``wait``, after a barrier so that no rank exits while
    another still needs it (rank 0 is the last to finish: it writes the outputs)."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def shard(idx: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's positions in a global batch of ``len(idx)``: every ``size``-th from ``rank``.

    A batch smaller than the world leaves some ranks nothing to train on; they take position 0
    with a zero loss weight (:func:`shard_scale`) so that every rank still joins the all-reduce.
    """
    positions = torch.arange(world.rank, len(idx), world.size)
    return positions if len(positions) else torch.zeros(1, dtype=torch.long)


def shard_scale(
    positions: torch.Tensor, global_size: int, world: World, sample_weight: torch.Tensor | None = None
) -> float:
    """Factor for this rank's mean loss so that DDP's gradient average is the global mean.

    With per-sample weights (class-weighted cross-entropy is a weighted mean), the shares are
    weight sums instead of counts.
    """
    if not world.distributed:
        return 1.0
    if world.rank >= global_size:  # the zero-weight filler of :func:`shard`
        return 0.0
    if sample_weight is None:
        return world.size * len(positions) / global_size
    return world.size * float(sample_weight[positions].sum()) / float(sample_weight.sum())


def all_sum(value: float, world: World, device: torch.device) -> float:
    """``value`` summed over the ranks (itself when not distributed)."""
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())
