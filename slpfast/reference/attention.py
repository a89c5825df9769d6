"""Reference masked self-attention over ragged sequences (pure torch, differentiable by autograd).

The executable specification of :func:`slpfast.ops.masked_attention`:

- query row ``i`` of sequence ``b`` attends to keys ``j < L_b`` (and ``j <= i`` when causal);
- ``softmax(scale * q k^T) v`` with ``scale = 1/sqrt(D)`` by default;
- rows ``i >= L_b`` (padding) and sequences with ``L_b = 0`` give output 0 and zero
  gradients, never NaN, whatever the padding rows hold (even inf or NaN);
- float16/bfloat16 inputs are computed in float32 (float64 stays float64) and rounded once at
  the end, so large but finite half inputs give finite outputs, as the fused kernels do.

The score matrix is materialised (``(B, H, T, T)``): this is the slow, obviously-right version.
"""
from __future__ import annotations

import math

import torch


def _padded_index(cu_seqlens: torch.Tensor, max_seqlen: int):
    """cu_seqlens (B+1,) -> (index (B, T) into the packed rows, valid (B, T) bool)."""
    cu = cu_seqlens.to(torch.int64)
    lengths = cu[1:] - cu[:-1]
    pos = torch.arange(max_seqlen, device=cu.device)
    valid = pos[None, :] < lengths[:, None]
    index = torch.where(valid, cu[:-1, None] + pos[None, :], 0)
    return index, valid


def packed_to_padded(x: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
    """x (total, *rest) -> (B, max_seqlen, *rest), zeros past each length (differentiable, no host sync)."""
    index, valid = _padded_index(cu_seqlens, max_seqlen)
    if x.shape[0] == 0:  # nothing to gather; x.sum() (= 0, x is empty) keeps the autograd graph
        return x.new_zeros((*index.shape, *x.shape[1:])) + x.sum()
    out = x[index]
    # where, not a multiply: a non-finite packed row must not leak into another sequence (inf * 0)
    return torch.where(valid.view(*valid.shape, *([1] * (x.dim() - 1))), out, 0.0)


def padded_to_packed(x: torch.Tensor, cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """x (B, T, *rest) -> (total, *rest): the rows below each length (differentiable, no host sync)."""
    cu = cu_seqlens.to(torch.int64)
    rows = torch.arange(total, device=cu.device)
    seq = torch.searchsorted(cu[1:], rows, right=True)  # sequence of each packed row
    flat = seq * x.shape[1] + (rows - cu[seq])
    return x.reshape(-1, *x.shape[2:])[flat]


def attention_padded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_lens: torch.Tensor, *,
                     causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """q, k, v (B, T, H, D); seq_lens (B,) -> out (B, T, H, D) in the dtype of q.

    Scores, softmax and the weighted sum run in float32 for float16/bfloat16 input (float64 for
    float64), as the fused kernels accumulate: half-precision scores overflow to inf (and the
    softmax to NaN) for large but finite inputs, |q . k| > 65504. The result is rounded to q's
    dtype once, at the end; gradients come back in the inputs' dtypes through the casts.
    """
    B, T, H, D = q.shape
    out_dtype = q.dtype
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v = (t.to(acc) for t in (q, k, v))
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    pos = torch.arange(T, device=q.device)
    row_valid = pos[None, :] < seq_lens.to(q.device)[:, None]  # (B, T)
    # padding rows may hold anything (garbage, inf, NaN): zero them so that they cannot reach a
    # valid row (0 * inf) or a gradient; their outputs are 0 whatever they held
    keep = row_valid[:, :, None, None]
    q, k, v = (torch.where(keep, t, 0.0) for t in (q, k, v))
    allowed = row_valid[:, None, :].expand(B, T, T)  # keys j < L_b for every query row
    if causal:
        allowed = allowed & (pos[None, :, None] >= pos[None, None, :])
    # Padding rows would have every key masked (softmax of all -inf = NaN, also in backward):
    # let them attend to everything and zero their output afterwards.
    allowed = allowed | ~row_valid[:, :, None]
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * scale
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhij,bjhd->bihd", probs, v)
    return torch.where(keep, out, 0.0).to(out_dtype)


def attention_packed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_seqlen: int | None = None, *, causal: bool = False,
                     scale: float | None = None) -> torch.Tensor:
    """q, k, v (total, H, D); cu_seqlens (B+1,) -> out (total, H, D)."""
    cu = cu_seqlens.to(torch.int64)
    if max_seqlen is None:
        max_seqlen = int((cu[1:] - cu[:-1]).max()) if cu.numel() > 1 else 0
    lengths = cu[1:] - cu[:-1]
    qp, kp, vp = (packed_to_padded(t, cu, max_seqlen) for t in (q, k, v))
    out = attention_padded(qp, kp, vp, lengths, causal=causal, scale=scale)
    return padded_to_packed(out, cu, q.shape[0])


def masked_attention(q, k, v, *, seq_lens=None, cu_seqlens=None, max_seqlen=None, causal=False, scale=None):
    """Reference with the public signature (validated input: exactly one of seq_lens/cu_seqlens)."""
    if cu_seqlens is not None:
        return attention_packed(q, k, v, cu_seqlens, max_seqlen, causal=causal, scale=scale)
    if seq_lens is None:
        seq_lens = torch.full((q.shape[0],), q.shape[1], dtype=torch.int64, device=q.device)
    return attention_padded(q, k, v, seq_lens, causal=causal, scale=scale)
