"""Multi-process training (torchrun): process group, ranks, and the few collectives the engine needs.

`torchrun --nproc_per_node=N -m imgcls train ...` starts N processes with RANK, LOCAL_RANK and
WORLD_SIZE set; `init()` joins them (NCCL on GPUs, gloo on CPUs). Every helper here is a no-op in a
single process, so the engine calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

from imgcls.errors import ImgclsError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    joined: bool = False  # a process group was joined (torchrun), even one of a single process
    backend: str = ""  # of the CUDA tensors' collectives: "nccl" or "gloo"

    @property
    def enabled(self) -> bool:
        return self.world > 1 or self.joined

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def init(device_name: str = "auto") -> Dist:
    """Join the process group torchrun set up (env RANK / WORLD_SIZE), or return the single-process Dist.

    Under torchrun a single process joins too (world 1: DDP over NCCL or gloo), so that
    `torchrun --nproc_per_node=1` on one GPU runs the distributed path it would run on several.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return SINGLE
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_name not in ("cpu", "mps")
    if not tdist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        try:
            # NCCL for CUDA tensors, gloo for the CPU ones (the small collectives of the engine use CPU tensors)
            tdist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
        except Exception as e:  # a rendezvous that fails says so in many ways
            raise ImgclsError(f"could not join the {world} training processes: {str(e).splitlines()[0]}") from None
    return Dist(rank=rank, world=world, local_rank=local, joined=True, backend="nccl" if cuda else "gloo")


def device_for(d: Dist, device: torch.device) -> torch.device:
    """Each process of a multi-GPU run uses its own GPU (LOCAL_RANK)."""
    if d.enabled and device.type == "cuda":
        return torch.device("cuda", d.local_rank)
    return device


def broadcast(d: Dist, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (e.g. the run folder)."""
    if not d.enabled:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def all_max(d: Dist, value: float) -> float:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return float(t.item())


def all_sum(d: Dist, values: list[float]) -> list[float]:
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    tdist.all_reduce(t)
    return t.tolist()


def gather_cat(d: Dist, t: torch.Tensor) -> torch.Tensor:
    """Concatenate each rank's (N_r, ...) CPU tensor in rank order (N_r may differ)."""
    if not d.enabled:
        return t
    sizes = [None] * d.world
    tdist.all_gather_object(sizes, t.shape[0])
    peak = max(sizes)
    padded = torch.zeros((peak, *t.shape[1:]), dtype=t.dtype)
    padded[:t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in range(d.world)]
    tdist.all_gather(out, padded)
    return torch.cat([o[:n] for o, n in zip(out, sizes)])


def sync_batchnorm(net: nn.Module, device: torch.device) -> nn.Module:
    """`net` with every batch-norm layer replaced by nn.SyncBatchNorm (same parameters and buffers), so
    that statistics are computed over the global batch. PyTorch synchronizes them on GPUs only."""
    if device.type != "cuda":
        raise ImgclsError(f"trainer.sync_batchnorm=true needs GPUs (PyTorch synchronizes batch norm on CUDA "
                          f"only); this run is on {device}: leave it false")
    return nn.SyncBatchNorm.convert_sync_batchnorm(net)


def barrier(d: Dist) -> None:
    if d.enabled:
        tdist.barrier()


def shutdown(d: Dist) -> None:
    if d.enabled and tdist.is_initialized():
        tdist.destroy_process_group()
