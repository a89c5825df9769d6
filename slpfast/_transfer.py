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
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
