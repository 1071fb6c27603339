"""torchrun / DistributedDataParallel helpers: nccl on CUDA, gloo on CPU.

Outside torchrun (no WORLD_SIZE in the environment) every function degrades to the
single-process answer, so the same training code runs both ways.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in torchrun's group (0, 1, 0 outside torchrun)."""

    rank: int
    world_size: int
    local_rank: int


def under_torchrun() -> bool:
    """Whether torchrun started more than one process (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (idempotent). Backend: nccl when the
    processes will use CUDA, gloo otherwise."""
    if not under_torchrun():
        return DistInfo(0, 1, 0)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        wants_cuda = device not in ("cpu", "mps") and torch.cuda.is_available()
        backend = "nccl" if wants_cuda else "gloo"
        if wants_cuda:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def is_initialized() -> bool:
    """Whether a torch.distributed process group has been joined."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank: the process group's once joined, torchrun's `RANK` before
    (so rank-0-only logging is right from the first line), 0 outside torchrun. The one
    source of "am I rank 0?" for every tool (`is_main`, the console, `Runtime.rank`)."""
    if is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    """Number of processes in the joined group, 1 before joining or outside torchrun."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Whether this process is rank 0 (`get_rank() == 0`)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    if is_initialized():
        dist.barrier()


def all_gather(tensor: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
    """Concatenate every rank's `tensor` along dim 0 (same shape on every rank).

    With `differentiable`, this rank's slice keeps its autograd graph (the open_clip
    ClipLoss trick): gradients flow to the local features, the others are constants.
    """
    if not is_initialized():
        return tensor
    gathered = [torch.zeros_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(gathered, tensor.detach().contiguous())
    if differentiable:
        gathered[get_rank()] = tensor
    return torch.cat(gathered, dim=0)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over ranks (a copy; the input is untouched)."""
    if not is_initialized():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / get_world_size()


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` when under torchrun; the model itself otherwise."""
    if not is_initialized():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper, or `model` itself."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def cleanup() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if is_initialized():
        dist.barrier()
        dist.destroy_process_group()
