"""``ContrastiveLoss``: :func:`slpfast.ops.contrastive_loss` with a learnable temperature."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops.contrastive import contrastive_loss


#: floor of the learned scale (temperature 100): below it the logits carry no signal anyway
MIN_SCALE = 0.01


class ContrastiveLoss(nn.Module):
    """Symmetric sign-text InfoNCE with a learnable log-temperature (CLIP).

    The parameter ``log_scale`` holds log(1/temperature), initialized to log(1/0.07) ~ 2.659
    (as open_clip's ``logit_scale``). The multiplier passed to the loss is ``exp(log_scale)``
    clamped to ``[MIN_SCALE, max_scale]``: above the cap the scale stays at 100 and ``log_scale``
    gets no gradient (the clamp of CLIP, without an in-place edit after the optimizer step);
    the floor keeps a diverging ``log_scale`` from reaching an ``exp`` of 0, which the loss
    rejects. A NaN ``log_scale`` (a diverged step) gives a NaN loss, not an error: the
    trainer skips such steps and counts them.

    Args:
        init_temperature: initial temperature (> 0); the initial scale is ``1 / init_temperature``.
        max_scale: cap on the scale (> 0), 100 as in CLIP.
        learnable: train the temperature (False: a buffer).
        gather, group, backend, normalize: passed to :func:`slpfast.ops.contrastive_loss`.

    Shapes: ``forward(sign (N_local, D), text (N_local, D)) -> ()`` loss.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0, *, learnable: bool = True,
                 gather: bool = True, group=None, backend: str = "auto", normalize: bool = False):
        super().__init__()
        if not (isinstance(init_temperature, (int, float)) and math.isfinite(init_temperature)
                and init_temperature > 0):
            raise ValueError(f"ContrastiveLoss: init_temperature must be a finite float > 0, got {init_temperature!r}")
        if not (isinstance(max_scale, (int, float)) and math.isfinite(max_scale) and max_scale > 0):
            raise ValueError(f"ContrastiveLoss: max_scale must be a finite float > 0, got {max_scale!r}")
        value = torch.tensor(math.log(1.0 / init_temperature), dtype=torch.float32)
        if learnable:
            self.log_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_scale", value)
        self.max_scale = float(max_scale)
        self.gather, self.group, self.backend, self.normalize = gather, group, backend, normalize

    @property
    def scale(self) -> torch.Tensor:
        """The multiplier ``exp(log_scale)`` clamped to ``[MIN_SCALE, max_scale]`` (0-dim,
        differentiable; NaN when ``log_scale`` is)."""
        return self.log_scale.exp().clamp(min=min(MIN_SCALE, self.max_scale), max=self.max_scale)

    def forward(self, sign: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        scale = self.scale
        # NaN only when log_scale is NaN: the op would reject it; a finite stand-in keeps the
        # call valid and "+ 0 * scale" makes the loss NaN (and adds exactly 0 otherwise)
        safe = torch.nan_to_num(scale, nan=1.0)
        loss = contrastive_loss(sign, text, safe, gather=self.gather, group=self.group, backend=self.backend,
                                normalize=self.normalize)
        return loss + 0.0 * scale

    def extra_repr(self) -> str:
        return (f"scale={float(self.scale):.4g}, max_scale={self.max_scale:g}, gather={self.gather}, "
                f"backend={self.backend!r}, normalize={self.normalize}")
