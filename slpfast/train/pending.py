"""A queued training step whose results are still on their way to the host.

A step ends with one small device tensor (flags, gradient norm, loss terms). Reading it at
once makes the host wait for the GPU to finish the step, and the GPU then idles while the host
loads and prepares the next batch. :class:`PendingStep` starts the copy without blocking
(into pinned memory, with an event behind it) so that the trainer can queue the next step
first and read this one afterwards (``Trainer.pipeline_depth``).
"""
from __future__ import annotations

import torch


class PendingStep:
    """The summary of step ``step``: ``[skip flag, stop flag, gradient norm, *loss terms]``.

    Args:
        step: the step counter after this step.
        summary: (2 + 1 + len(keys),) float32 on the training device.
        keys: names of the loss terms, in summary order.
        stats: host-side counters of the step (clips, frames, data seconds, FLOPs, lr).
    """

    def __init__(self, step: int, summary: torch.Tensor, keys: list[str], stats: dict):
        self.step, self.keys, self.stats = step, keys, stats
        if summary.is_cuda:
            self._host = torch.empty(summary.shape, dtype=summary.dtype, pin_memory=True)
            self._host.copy_(summary, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host, self._event = summary, None

    def result(self) -> tuple[dict[str, float] | None, dict]:
        """Waits for the step's summary; returns (loss terms, or None when skipped, counters
        with ``grad_norm`` and ``stop``: some rank had received SIGTERM)."""
        if self._event is not None:
            self._event.synchronize()
        values = self._host.tolist()
        skipped = values[0] > 0
        stats = dict(self.stats, step=self.step, stop=values[1] > 0, grad_norm=values[2])
        return (None if skipped else dict(zip(self.keys, values[3:]))), stats
