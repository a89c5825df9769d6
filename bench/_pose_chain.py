"""The "chain of torch ops" provider of bench/pose.py (a helper module: bench/gpu_check.sh skips
_*.py): normalize_pose + augment_pose written as batched eager torch (what one would write
without a custom op). Same definitions as the op
(csrc/core/pose_augment.h) except the random draws (torch's generator instead of Philox) and
the bounding-box fallback (clips without shoulders get the identity frame). With jitter and
dropout off it matches the extension; bench/pose.py checks that before timing it.
"""
from __future__ import annotations

import torch


class ChainLayout:
    """The layout tables of a PoseLayoutSpec as tensors on ``device``."""

    def __init__(self, spec, device):
        self.a, self.b = spec.shoulders
        self.anchor = torch.as_tensor(spec.anchor, device=device)
        self.has_anchor = self.anchor >= 0
        self.anchor_idx = torch.where(self.has_anchor, self.anchor, torch.arange(spec.num_joints, device=device))
        self.perm = torch.as_tensor(spec.flip_perm, device=device)
        self.part = torch.as_tensor(spec.part_id, device=device)


def normalize_chain(pose, conf, lengths, L: ChainLayout):
    """(B, T, J, C) -> normalized float32 values and validity (B, T, J)."""
    B, T, J, C = pose.shape
    x = pose.float()
    t = torch.arange(T, device=pose.device)
    valid = (conf > 0) & torch.isfinite(x).all(-1) & (t[None, :] < lengths[:, None])[..., None]
    x = torch.where(valid[..., None], x, 0.0)
    both = (valid[:, :, L.a] & valid[:, :, L.b]).float()
    n = both.sum(1).clamp_min(1.0)
    centre = (0.5 * (x[:, :, L.a] + x[:, :, L.b]) * both[..., None]).sum(1) / n[:, None]
    dist = ((x[:, :, L.a] - x[:, :, L.b]).norm(dim=-1) * both).sum(1) / n
    ok_scale = dist > 1e-6
    scale = torch.where(ok_scale, dist, 1.0)
    centre = torch.where(ok_scale[:, None], centre, 0.0)
    ref = torch.where(L.has_anchor[None, None, :, None], x[:, :, L.anchor_idx], centre[:, None, None, :])
    valid = valid & (valid[:, :, L.anchor_idx] | ~L.has_anchor[None, None, :])
    return (x - ref) / scale[:, None, None, None], valid


def augment_chain(x, valid, conf, lengths, params, out_len: int, L: ChainLayout, *, jitter_std=0.0,
                  joint_drop_p=0.0, frame_drop_p=0.0, generator=None):
    """Resample, flip, affine, jitter, dropout of normalized values -> (pose, conf, out_lengths)."""
    B, T, J, C = x.shape
    dev = x.device
    lengths = lengths.to(torch.float64)
    out_lengths = torch.floor(lengths / params[:, 7] + 0.5).clamp_min(1)
    out_lengths = torch.where(lengths > 0, out_lengths, 0.0).clamp_max(out_len)
    i = torch.arange(out_len, device=dev, dtype=torch.float64)
    s = i[None, :] * (lengths[:, None] - 1) / (out_lengths[:, None] - 1).clamp_min(1)
    s = torch.where(out_lengths[:, None] > 1, s, 0.0)
    t0 = torch.floor(s).clamp(min=0).long().clamp_max((lengths.long() - 1).clamp_min(0)[:, None])
    w = (s - t0).float()
    t1 = torch.minimum(t0 + 1, (lengths.long() - 1).clamp_min(0)[:, None])
    flip = params[:, 0] != 0
    src = torch.where(flip[:, None], L.perm[None, :], torch.arange(J, device=dev)[None, :])  # (B, J)
    bidx = torch.arange(B, device=dev)[:, None, None]
    jidx = src[:, None, :]
    v0, v1 = x[bidx, t0[..., None], jidx], x[bidx, t1[..., None], jidx]
    ok0, ok1 = valid[bidx, t0[..., None], jidx], valid[bidx, t1[..., None], jidx]
    c0, c1 = conf[bidx, t0[..., None], jidx], conf[bidx, t1[..., None], jidx]
    wj = w[..., None]
    has1 = (wj > 0) & (t0 + 1 < lengths.long()[:, None])[..., None]
    both = has1 & ok0 & ok1
    take1 = has1 & ~both & ok1 & (wj > 0.5)
    kill = has1 & ~both & ~take1 & (wj > 0.5)
    v = torch.where(both[..., None], v0 + wj[..., None] * (v1 - v0), torch.where(take1[..., None], v1, v0))
    cf = torch.where(both, c0 + wj * (c1 - c0), torch.where(take1, c1, c0))
    ok = (ok0 | take1) & ~kill & (i[None, :] < out_lengths[:, None])[..., None]
    # flip + affine: M = Shear @ Rot @ Scale, row vectors
    c, sn, sh, sx, sy = params[:, 1].cos(), params[:, 1].sin(), params[:, 2], params[:, 3], params[:, 4]
    m = torch.stack([torch.stack([(c + sh * sn) * sx, (sh * c - sn) * sy], -1), torch.stack([sn * sx, c * sy], -1)],
                    -2).float()
    xy = torch.cat([torch.where(flip[:, None, None], -v[..., 0], v[..., 0])[..., None], v[..., 1:2]], -1)
    xy = torch.einsum("bijk,bkl->bijl", xy, m) + params[:, None, None, 5:7].float()
    v = torch.cat([xy, v[..., 2:]], -1)
    if jitter_std > 0:
        v = v + jitter_std * torch.randn(v.shape, device=dev, generator=generator)
    bits = params[:, 8].long()
    ok = ok & ~(((bits[:, None] >> L.part[None, :]) & 1).bool()[:, None, :])
    if frame_drop_p > 0:
        ok = ok & ~(torch.rand(B, out_len, 1, device=dev, generator=generator) < frame_drop_p)
    if joint_drop_p > 0:
        ok = ok & ~(torch.rand(B, out_len, J, device=dev, generator=generator) < joint_drop_p)
    v = torch.where(ok[..., None], v, 0.0)
    return v, torch.where(ok, cf, 0.0), out_lengths.long()


def normalize_augment_chain(pose, conf, lengths, params, out_len, L: ChainLayout, **noise):
    x, valid = normalize_chain(pose, conf, lengths, L)
    v, cf, n = augment_chain(x, valid, conf, lengths, params, out_len, L, **noise)
    return v.to(pose.dtype), cf, n
