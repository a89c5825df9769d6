"""torch.distributed set-up for ``torchrun`` (any --nnodes / --nproc_per_node) and plain python.

NCCL on GPU, gloo on CPU. Without the torchrun environment (no WORLD_SIZE) the run is a
single process and no process group is created.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """rank / world_size over all nodes; local_rank on this node; device used by this rank."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Initialise the process group from the torchrun environment and pick this rank's device.

    device: 'auto' (cuda:LOCAL_RANK when CUDA is available), 'cpu' or 'cuda'.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("train.device='cuda' but CUDA is not available; use train.device=cpu or auto")
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    created = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        kwargs = {"device_id": dev} if use_cuda else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
        created = True
    if dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    return DistInfo(rank, world, local_rank, local_world, dev, created)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


#: How long the other ranks wait for rank 0's one-off work (:func:`run_on_main`).
MAIN_WORK_TIMEOUT_S = 48 * 3600.0


def run_on_main(info: DistInfo, fn, what: str, timeout_s: float = MAIN_WORK_TIMEOUT_S):
    """``fn()`` on rank 0 while the other ranks wait; returns its (picklable) result on every rank.

    For one-off work before training (generating the synthetic corpus, caching text features
    of a large store) that can take far longer than the process group's timeout, which is
    sized for training steps (600 s): the ranks wait on a gloo group of their own with a
    ``timeout_s`` timeout instead of a barrier of the default group. If ``fn`` raises on
    rank 0, the other ranks raise too, naming ``what`` and rank 0's error (a ValueError stays a
    ValueError, so the CLIs report it as bad input), instead of waiting for the timeout.
    """
    if not info.enabled:
        return fn()
    # every rank is here (within the default group's timeout) before the long-timeout group is
    # made: new_group is collective and waits for its peers with that group's timeout, so a rank
    # that died before this point would otherwise keep the others waiting for timeout_s
    dist.barrier()
    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
    try:
        box = [None]
        if info.is_main:
            try:
                box = [("ok", fn())]
            except BaseException as e:
                kind = "ValueError" if isinstance(e, ValueError) else type(e).__name__
                dist.broadcast_object_list([("error", (kind, str(e)))], src=0, group=group)
                raise
        dist.broadcast_object_list(box, src=0, group=group)
        status, value = box[0]
        if status == "error":
            kind, msg = value
            error = ValueError if kind == "ValueError" else RuntimeError
            raise error(f"{what} failed on rank 0 ({kind}): {msg}")
        return value
    finally:
        dist.destroy_process_group(group)


def all_reduce(t: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum, max or mean) that is a no-op on one process."""
    if info.enabled:
        red = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "mean": dist.ReduceOp.SUM}[op]
        dist.all_reduce(t, op=red)
        if op == "mean":
            t /= info.world_size
    return t


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """Rank ``src``'s Python object on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
