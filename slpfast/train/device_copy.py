"""Host-to-GPU batch copies on a side stream, so that they overlap the previous step's kernels.

A copy issued on the compute stream waits behind every kernel queued before it: with steps
queued ahead (``Trainer.pipeline_depth``), the ~40-60 MB of pose and confidences of the next
batch would cross PCIe only after the current step's backward, and the next step's kernels
would then wait for it. :class:`DeviceCopier` issues the copies on its own stream (the copy
engine runs them beside the compute kernels) and makes the compute stream wait for them
before anything that uses the copies.

Memory safety: the destination tensors are allocated on the copy stream and used on the
compute stream, so each is marked with ``record_stream`` (the caching allocator then does
not reuse its memory before the compute stream's work on it is done); the pinned sources are
kept alive by torch's caching host allocator until the copies reading them finish.
"""
from __future__ import annotations

import torch


class DeviceCopier:
    """``copier(t1, t2, ...)`` -> the tensors on ``device``, in order.

    On a GPU the copies run on a side stream and the current stream waits for them (no host
    synchronization); elsewhere they are plain ``.to(device)`` moves. Sources should be pinned
    host tensors for the copies to be asynchronous.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.stream is None:
            return tuple(t.to(self.device) for t in tensors)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            out = tuple(t.to(self.device, non_blocking=True) for t in tensors)
        compute.wait_stream(self.stream)
        for src, t in zip(tensors, out):
            if t is not src:  # a source already on the GPU comes back as itself: nothing to mark
                t.record_stream(compute)
        return out
