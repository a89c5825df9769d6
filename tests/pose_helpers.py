"""Random canonical pose batches for the pose-op tests (CPU and CUDA)."""
from __future__ import annotations

import torch

from slpfast import layouts

J = layouts.NUM_JOINTS


def random_batch(lengths, T=None, C=3, dtype=torch.float32, missing=0.15, seed=0, device="cpu"):
    """Padded batch that looks like pixel-space pose: a body of shoulder width ~100 px around
    (300, 250), hands and face near their anchors, ``missing`` of the joints with conf 0 and
    one clip in four without any right hand. Returns (pose, conf, lengths)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    B = lengths.numel()
    T = int(lengths.max()) if T is None else T
    T = max(T, 1)
    base = torch.tensor([300.0, 250.0, 0.0])[:C]
    pose = base + 60.0 * torch.randn(B, T, J, C, generator=g)
    ls, rs = layouts.LEFT_SHOULDER, layouts.RIGHT_SHOULDER
    pose[:, :, ls] = base + torch.tensor([50.0, 0.0, 0.0])[:C] + torch.randn(B, T, C, generator=g)
    pose[:, :, rs] = base + torch.tensor([-50.0, 0.0, 0.0])[:C] + torch.randn(B, T, C, generator=g)
    conf = torch.rand(B, T, J, generator=g) * 0.9 + 0.1
    conf[torch.rand(B, T, J, generator=g) < missing] = 0.0
    rh = layouts.PART_SLICES["right_hand"]
    conf[::4, :, rh] = 0.0
    pad = torch.arange(T)[None, :] >= lengths[:, None]
    conf[pad] = 0.0
    pose[pad] = 0.0
    return pose.to(dtype).to(device), conf.to(device), lengths.to(device)


def pack(pose, conf, lengths):
    """Padded -> packed (rows, J, C), conf (rows, J), cu_seqlens (B+1,) int64."""
    rows = [pose[b, :n] for b, n in enumerate(lengths.tolist())]
    crow = [conf[b, :n] for b, n in enumerate(lengths.tolist())]
    cu = torch.zeros(len(rows) + 1, dtype=torch.int64, device=pose.device)
    cu[1:] = torch.cumsum(lengths.to(torch.int64), 0)
    return torch.cat(rows), torch.cat(crow), cu


FULL_CONFIG = dict(rotation_std=0.2, shear_std=0.2, scale_std=0.2, translate_std=0.1, flip_p=0.5, speed_min=0.7,
                   speed_max=1.6, jitter_std=0.02, joint_drop_p=0.1, frame_drop_p=0.05, part_drop_p=0.1)
