"""``MaskedSelfAttention``: multi-head self-attention over ragged sequences, for the pose encoder."""
from __future__ import annotations

import torch
from torch import nn

from ..ops.attention import masked_attention


class MaskedSelfAttention(nn.Module):
    """qkv projection -> :func:`slpfast.ops.masked_attention` -> output projection.

    Args:
        dim: model width ``D_model``; ``num_heads`` must divide it (head dim = dim // num_heads,
            a multiple of 16 up to 128 for the Triton backend).
        num_heads: number of heads ``H``.
        causal: causal masking inside each sequence.
        qkv_bias, out_bias: biases of the two projections.
        backend: passed to ``masked_attention`` (``"auto"`` picks the fastest that can run).

    Forward, padded: ``x (B, T, dim)`` with ``seq_lens (B,)`` (None: nothing padded).
    Forward, packed: ``x (total, dim)`` with ``cu_seqlens (B+1,)`` (+ optional ``max_seqlen`` host
    int: no device->host sync on a GPU). Returns the shape of ``x``. Attention outputs of rows past
    a length are 0, so after the output projection those rows hold ``out_proj.bias``; they get
    no gradient from valid rows and never influence them.
    """

    def __init__(self, dim: int, num_heads: int, *, causal: bool = False, qkv_bias: bool = True,
                 out_bias: bool = True, backend: str = "auto", device=None, dtype=None):
        super().__init__()
        if num_heads <= 0 or dim % num_heads:
            raise ValueError(f"MaskedSelfAttention: num_heads must divide dim, got dim={dim}, num_heads={num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.causal, self.backend = causal, backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, device=device, dtype=dtype)
        self.out_proj = nn.Linear(dim, dim, bias=out_bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, seq_lens: torch.Tensor | None = None, *, cu_seqlens=None,
                max_seqlen: int | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"MaskedSelfAttention: x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (2, 3) or x.shape[-1] != self.dim:
            raise ValueError(f"MaskedSelfAttention: x must be (B, T, {self.dim}) or (total, {self.dim}), "
                             f"got {tuple(x.shape)}")
        if (x.dim() == 2) != (cu_seqlens is not None):
            raise ValueError("MaskedSelfAttention: packed x (total, dim) goes with cu_seqlens, "
                             "padded x (B, T, dim) with seq_lens")
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))
        q, k, v = qkv.unbind(dim=-3)
        out = masked_attention(q, k, v, seq_lens=seq_lens, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
                               causal=self.causal, backend=self.backend)
        return self.out_proj(out.flatten(-2))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, causal={self.causal}, backend={self.backend!r}"
