"""Argument checks shared by the public ops. Every failure is a ``ValueError`` that names the op
and the argument, says what was expected and what came."""
from __future__ import annotations

import numpy as np
import torch


def fail(op: str, msg: str) -> None:
    raise ValueError(f"{op}: {msg}")


def describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).replace('torch.', '')} {tuple(t.shape)} on {t.device}"


def check_tensor(op: str, name: str, t, *, ndim: int | tuple[int, ...] | None = None,
                 dtypes: tuple[torch.dtype, ...] | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        fail(op, f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in allowed:
            fail(op, f"{name} must have {' or '.join(map(str, allowed))} dims, got {describe(t)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = "/".join(str(d).replace("torch.", "") for d in dtypes)
        fail(op, f"{name} must be {names}, got {describe(t)}")


def check_same_device(op: str, **tensors: torch.Tensor) -> None:
    """The tensors (None: absent) are on one device, a CPU or a CUDA one (the ops' kernels run
    there; a meta tensor, say, would otherwise fail deep inside with torch's own message)."""
    items = [(n, t) for n, t in tensors.items() if t is not None]
    for n, t in items:
        if not isinstance(t, torch.Tensor):
            fail(op, f"{n} must be a torch.Tensor, got {type(t).__name__}")
    dev = items[0][1].device
    for n, t in items[1:]:
        if t.device != dev:
            fail(op, f"{n} is on {t.device} but {items[0][0]} is on {dev}")
    if dev.type not in ("cpu", "cuda"):
        fail(op, f"{items[0][0]} is on {dev}: the ops take CPU or CUDA tensors")


def check_lengths(op: str, name: str, lengths: torch.Tensor, batch: int, max_len: int) -> None:
    """``lengths`` (B,) int32/int64 with 0 <= lengths <= max_len (one host sync on GPU)."""
    check_tensor(op, name, lengths, ndim=1, dtypes=(torch.int32, torch.int64))
    if lengths.shape[0] != batch:
        fail(op, f"{name} must be int32/int64 of shape (B,)=({batch},), got {describe(lengths)}")
    if lengths.numel():
        lo, hi = torch.stack(torch.aminmax(lengths)).tolist()  # one device->host copy, not two
        if lo < 0 or hi > max_len:
            fail(op, f"{name} must lie in [0, T={max_len}], got values in [{lo}, {hi}]")


def check_cu_seqlens(op: str, name: str, cu: torch.Tensor, total: int | None) -> None:
    """``cu`` (B+1,) int32/int64, starting at 0, non-decreasing, ending at ``total``."""
    check_tensor(op, name, cu, ndim=1, dtypes=(torch.int32, torch.int64))
    if cu.shape[0] < 1:
        fail(op, f"{name} must have shape (B+1,) with B >= 0, got {describe(cu)}")
    host = cu.detach().to("cpu", torch.int64)
    if int(host[0]) != 0:
        fail(op, f"{name}[0] must be 0, got {int(host[0])}")
    if host.numel() > 1 and bool((host[1:] < host[:-1]).any()):
        fail(op, f"{name} must be non-decreasing, got {host.tolist()[:16]}")
    if total is not None and int(host[-1]) != total:
        fail(op, f"{name}[-1] must equal the number of packed rows {total}, got {int(host[-1])}")


def lengths_to_cu_seqlens(lengths: torch.Tensor, dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """lengths (B,) -> cu_seqlens (B+1,) = [0, cumsum(lengths)], same device, no host sync."""
    cu = torch.zeros(lengths.shape[0] + 1, dtype=dtype, device=lengths.device)
    cu[1:] = torch.cumsum(lengths, 0)
    return cu


def check_int(op: str, name: str, value, lo: int, hi: int | None = None) -> int:
    """A host int in [lo, hi] (hi None: unbounded); bools and floats (2.7 would be truncated) are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        fail(op, f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        fail(op, f"{name} must be an int {bound}, got {value}")
    return value


def is_host_real(v) -> bool:
    """A real host number; a bool is an int to Python, but True as a probability is a slip."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
