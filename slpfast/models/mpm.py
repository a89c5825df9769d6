"""Masked pose modeling: a light decoder and the confidence-weighted reconstruction loss.

The encoder sees the pose with some joints hidden (their inputs zeroed and the per-part mask
tokens of :class:`slpfast.models.part_embed.PartEmbedding` added). :class:`MPMDecoder` maps the
encoder's fused per-frame features back to every joint's coordinates and
:func:`mpm_loss` scores the reconstruction on hidden joints only, weighted by the joint's
confidence: a joint the pose estimator barely saw is a poor target, a missing one (conf 0) is
no target at all.

The decoder is deliberately light (one residual MLP block per frame, then one linear head per
part): it should not be able to do the encoder's job.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slpfast.layouts import NUM_JOINTS, PART_NAMES, PART_SLICES


class MPMDecoder(nn.Module):
    """Per-frame reconstruction head.

    Args:
        dim: encoder width D.
        coord_dims: C.

    Forward: frames (..., D) -> (..., J, C) predicted coordinates (padded (B,T,D) or packed (total,D)).
    """

    def __init__(self, dim: int, coord_dims: int = 2):
        super().__init__()
        self.coord_dims = coord_dims
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.heads = nn.ModuleList([
            nn.Linear(dim, (PART_SLICES[p].stop - PART_SLICES[p].start) * coord_dims) for p in PART_NAMES
        ])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        h = frames + self.mlp(self.norm(frames))
        out = torch.cat([head(h) for head in self.heads], dim=-1)
        return out.unflatten(-1, (NUM_JOINTS, self.coord_dims))


def mpm_loss(pred: torch.Tensor, target: torch.Tensor, conf: torch.Tensor, mask: torch.Tensor, *,
             kind: str = "smooth_l1", beta: float = 0.05) -> torch.Tensor:
    """Confidence-weighted reconstruction loss on hidden joints.

    loss = sum_{t,j} m_tj * c_tj * e_tj / max(sum_{t,j} m_tj * c_tj, eps), where e_tj is the
    L1 (or smooth-L1 with ``beta``) error summed over the C coordinates.

    Args:
        pred, target: (..., J, C).
        conf: (..., J) confidences (the weights).
        mask: (..., J) bool, True where the joint was hidden (only those count).
        kind: 'l1' or 'smooth_l1'.

    Returns a scalar; exactly 0 (with zero gradients) when no hidden joint has confidence > 0.
    """
    if kind not in ("l1", "smooth_l1"):
        raise ValueError(f"mpm_loss: kind must be 'l1' or 'smooth_l1', got {kind!r}")
    if pred.shape != target.shape:
        raise ValueError(f"mpm_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must match")
    if conf.shape != pred.shape[:-1] or mask.shape != conf.shape:
        raise ValueError(f"mpm_loss: conf {tuple(conf.shape)} and mask {tuple(mask.shape)} must be "
                         f"{tuple(pred.shape[:-1])}")
    conf = conf.float()
    # a NaN / inf confidence is a missing joint (as everywhere else), never a NaN weight
    w = torch.where(mask & torch.isfinite(conf), conf.clamp(min=0), torch.zeros((), device=conf.device))
    pred = pred.float()
    # A NaN/inf target at a zero-weight joint must not poison the loss or its gradient
    # (0 * NaN = NaN, also in the backward), so such targets are replaced before any arithmetic.
    target = target.float().masked_fill(~(w > 0).unsqueeze(-1), 0.0)
    pred_used = torch.where((w > 0).unsqueeze(-1), pred, torch.zeros_like(pred))
    if kind == "l1":
        err = (pred_used - target).abs()
    else:
        err = F.smooth_l1_loss(pred_used, target, reduction="none", beta=beta)
    return (err.sum(-1) * w).sum() / w.sum().clamp(min=1e-6)
