"""torchrun / DistributedDataParallel setup and teardown.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT for every worker;
without them the process is a world of one and no process group is created. The backend
is nccl on GPUs and gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int  # global rank of this process
    local_rank: int  # rank on this machine: the GPU index under torchrun
    world_size: int  # processes in the job

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    """Rank and world size from torchrun's environment (a world of one without it)."""
    try:
        rank = int(os.environ.get("RANK", 0))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        world_size = int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as err:
        raise ValueError(f"RANK/LOCAL_RANK/WORLD_SIZE must be integers: {err}") from err
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    return DistInfo(rank, local_rank, world_size)


def backend_for(kind: str) -> str:
    return "nccl" if kind == "cuda" else "gloo"


def setup(info: DistInfo, kind: str) -> None:
    """Join the process group (a no-op in a world of one)."""
    if not info.enabled or dist.is_initialized():
        return
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ValueError(f"WORLD_SIZE={info.world_size} but {var} is unset; launch with torchrun")
    device_id = torch.device("cuda", torch.cuda.current_device()) if kind == "cuda" else None
    dist.init_process_group(backend=backend_for(kind), rank=info.rank, world_size=info.world_size, device_id=device_id)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place (identity in a world of one)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order ([obj] in a world of one)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
