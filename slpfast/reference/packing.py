"""Reference padded <-> packed conversion (pure torch, differentiable by autograd)."""
from __future__ import annotations

import torch


def pack_padded(padded: torch.Tensor, cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """padded (B, T, *rest), cu_seqlens (B+1,) -> packed (total, *rest)."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    rows = [padded[b, :n] for b, n in enumerate(lengths)]
    if not rows:
        return padded.new_zeros((total, *padded.shape[2:]))
    return torch.cat(rows, dim=0)


def unpack_packed(packed: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int) -> torch.Tensor:
    """packed (total, *rest), cu_seqlens (B+1,) -> padded (B, max_len, *rest), zeros past each length."""
    cu = cu_seqlens.tolist()
    batch = len(cu) - 1
    out = []
    for b in range(batch):
        seq = packed[cu[b]:cu[b + 1]]
        pad = packed.new_zeros((max_len - seq.shape[0], *packed.shape[1:]))
        out.append(torch.cat([seq, pad], dim=0))
    if not out:
        return packed.new_zeros((0, max_len, *packed.shape[1:]))
    return torch.stack(out, dim=0)
