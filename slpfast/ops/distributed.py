"""Collectives with gradients, shared by the ops that see a data-parallel batch.

- :func:`group_info` -> ``(rank, world_size)`` of a group, or ``None`` when torch.distributed
  is not initialized (or not built).
- :func:`all_gather_with_grad` concatenates equal-sized ``(N_local, *rest)`` tensors of every
  rank into ``(world * N_local, *rest)`` in rank order. Its backward is a reduce-scatter (sum):
  rank r receives the sum over ranks of the gradient w.r.t. its rows. This is the semantics of
  ``torch.distributed.nn.all_gather`` and of open_clip's ``gather_with_grad=True``: combined with
  DDP's gradient averaging, a loss that each rank computes over its local rows against the
  gathered batch trains exactly like the single-process loss over the concatenated batch.
- :func:`check_equal_rows` raises ``ValueError`` when ranks disagree on ``N_local``.

Why sizes must be checked by hand: an all-gather of mismatched sizes is undefined. Measured with
gloo (torch 2.13): the rank with the larger tensor aborts the whole process inside gloo
(``EnforceNotMet``, not catchable), while the other returns garbage rows without error; NCCL may
hang. No collective reports the mismatch cleanly, so the check is one tiny all-gather of the
sizes (see :func:`should_check_rows` for when it runs).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

#: set to 1 to check N_local across ranks on every call (one tiny all-gather + host sync)
DEBUG_ENV = "SLPFAST_DEBUG_DISTRIBUTED"

_checked_groups: set[int] = set()


def _all_gather_into(out: torch.Tensor, x: torch.Tensor, group) -> None:
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in 2.13
    fn(out, x, group=group)


def _reduce_scatter_into(out: torch.Tensor, x: torch.Tensor, group) -> None:
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    fn(out, x, op=dist.ReduceOp.SUM, group=group)


def group_info(group=None) -> tuple[int, int] | None:
    """``(rank, world_size)`` in ``group`` (default group when None), or None without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return dist.get_rank(group), dist.get_world_size(group)


class _AllGatherWithGrad(torch.autograd.Function):
    """(N, *rest) on each rank -> (world * N, *rest); backward: reduce-scatter (sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group):
        ctx.group = group
        world = dist.get_world_size(group)
        x = x.contiguous()
        out = x.new_empty((world * x.shape[0], *x.shape[1:]))
        _all_gather_into(out, x, group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        world = dist.get_world_size(ctx.group)
        grad = grad.contiguous()
        out = grad.new_empty((grad.shape[0] // world, *grad.shape[1:]))
        _reduce_scatter_into(out, grad, ctx.group)
        return out, None


def all_gather_with_grad(x: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenate ``x (N_local, *rest)`` over the ranks of ``group`` -> ``(world * N_local, *rest)``.

    Every rank must pass the same shape (see :func:`check_equal_rows`). Rank r's rows are
    ``out[r * N_local:(r + 1) * N_local]``. Differentiable (reduce-scatter backward).
    """
    return _AllGatherWithGrad.apply(x, group)


def should_check_rows(group, device: torch.device) -> bool:
    """Whether :func:`check_equal_rows` runs for this call.

    Every rank takes the same decision (a collective that only some ranks enter would hang):

    - always when ``SLPFAST_DEBUG_DISTRIBUTED=1``;
    - always for CPU tensors (the size gather is host memory: no device sync, ~tens of us);
    - on the first call per process group otherwise (catches a mis-configured per-rank batch
      size once; a mismatch that appears later, e.g. a ragged last batch, needs the debug mode
      or ``drop_last=True``; on GPU every check costs a device->host sync).
    """
    if os.environ.get(DEBUG_ENV, "0") == "1" or device.type == "cpu":
        return True
    key = id(group) if group is not None else 0
    if key in _checked_groups:
        return False
    _checked_groups.add(key)
    return True


def check_equal_rows(op: str, name: str, n_local: int, group, device: torch.device) -> None:
    """Raise ``ValueError`` on every rank when the ranks' ``n_local`` differ (one small all-gather)."""
    world = dist.get_world_size(group)
    mine = torch.tensor([n_local], dtype=torch.int64, device=device)
    sizes = torch.empty(world, dtype=torch.int64, device=device)
    _all_gather_into(sizes, mine, group)
    sizes = sizes.tolist()
    if len(set(sizes)) != 1:
        raise ValueError(
            f"{op}: {name} must have the same number of rows N_local on every rank (the all-gather "
            f"needs equal sizes), got N_local per rank = {sizes}")


def label_offset(n_local: int, group=None) -> int:
    """Row index of this rank's first row in the gathered batch: ``rank * n_local``."""
    return dist.get_rank(group) * n_local
