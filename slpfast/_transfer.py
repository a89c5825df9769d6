"""Moving small host tensors to a device without making the host wait.

A copy from pageable host memory to a GPU (``t.to("cuda")``) is followed by a stream
synchronization: the host waits for every kernel queued before it. Copied through pinned
memory with ``non_blocking=True`` it is queued like a kernel instead; torch's caching host
allocator keeps the pinned block until the copy has read it. Used by the pose ops' host
metadata, the pre-training and fine-tuning batch preparation and the small text encoder.
"""
from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a host tensor goes to a GPU through pinned memory, without blocking."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        # A pinned t would be read by the copy after this returns, racing with a caller that
        # reuses its buffer: it is copied to a pinned block of the caching allocator first (as
        # pin_memory() does for a pageable t). These are small metadata tensors.
        staged = torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t) if t.is_pinned() else t.pin_memory()
        return staged.to(device, non_blocking=True)
    return t.to(device)
