"""Process-group setup for every way the trainer is started: a bare single process (it makes a world of
one itself), torchrun / the deepspeed launcher, and Slurm (the caller sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT)."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from pretrain.lifeline import tie_to_launcher


_SELF_MADE = "MIXERSTACK_SELF_WORLD"


@dataclass
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pick_device(kind: str, local_rank: int) -> torch.device:
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device = 'cuda' but no CUDA device is visible; use --train.device cpu")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(device: str = "auto", timeout_s: int = 1800) -> World:
    """Joins (or creates) the process group; idempotent. A rank started by a launcher dies with it."""
    if "RANK" in os.environ and os.environ.get(_SELF_MADE) != "1":
        tie_to_launcher()  # first: a launcher SIGKILLed during the heavy setup below leaves no orphan
    if "RANK" not in os.environ:
        # a bare `python -m pretrain.train` (or a later in-process run): a world of one on a fresh port
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()), **{_SELF_MADE: "1"})
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if dev.type == "cpu":
        # DeepSpeed's CPU shared-memory collectives cost a ~25 s C++ compile at first use and only speed
        # up large all-reduces on one node; gloo is enough for CPU runs, so switch the op off.
        import deepspeed.ops
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=size,
                                timeout=timedelta(seconds=timeout_s),
                                device_id=dev if dev.type == "cuda" else None)
    return World(rank, size, local_rank, dev)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        # Through deepspeed.comm: it also drops DeepSpeed's cached groups, which would otherwise point at
        # the destroyed world and break the next run in this process (sweeps.local.run_local).
        # (only when DeepSpeed made its backend: a run that failed before deepspeed.initialize has none)
        import sys

        import deepspeed.comm.comm  # noqa: F401

        if getattr(sys.modules["deepspeed.comm.comm"], "cdb", None) is not None:
            sys.modules["deepspeed.comm.comm"].destroy_process_group()
        else:
            from torch.distributed import distributed_c10d
            distributed_c10d.destroy_process_group()
    if os.environ.get(_SELF_MADE) == "1":  # leave no world of one behind for child processes
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", _SELF_MADE):
            os.environ.pop(key, None)
