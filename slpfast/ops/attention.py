"""``masked_attention``: self-attention over ragged pose sequences, padded or packed.

    out = masked_attention(q, k, v, seq_lens=lens)                      # q, k, v (B, T, H, D)
    out = masked_attention(q, k, v, cu_seqlens=cu, max_seqlen=Lmax)     # q, k, v (total, H, D)

Backends (``backend=``; ``"auto"`` takes the first that can run the input):

- ``triton``: fused FlashAttention-2-style kernels (:mod:`slpfast.kernels.attention`); first on
  a GPU. On CPU it runs only in the Triton interpreter, so ``auto`` skips it there.
- ``xformers``: ``memory_efficient_attention`` with a ``BlockDiagonalMask`` (CUDA only).
- ``flex``: FlexAttention with a padding / document block mask built once per call.
- ``sdpa``: ``scaled_dot_product_attention`` with a boolean mask (no mask when nothing is padded).
- ``eager``: the reference :mod:`slpfast.reference.attention`.

Host syncs: checking the *values* of ``seq_lens`` / ``cu_seqlens`` reads them on the host.
On a GPU that check (and its sync) is skipped when the caller passes ``max_seqlen`` — the caller
then vouches for the lengths — and always under ``torch.compile``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ._dispatch import Dispatcher
from ._validate import check_cu_seqlens, check_lengths, check_same_device, check_tensor, describe, fail
from .attention_backends import BACKENDS

__all__ = ["masked_attention", "DISPATCHER"]

OP = "masked_attention"
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
LENGTH_DTYPES = (torch.int32, torch.int64)
MAX_HEAD_DIM = 256
FLOAT32_MAX = float(np.finfo(np.float32).max)
DISPATCHER = Dispatcher(OP, BACKENDS)


def _from_block_diagonal_mask(mask, q: torch.Tensor):
    """xformers ``BlockDiagonalMask`` / ``BlockDiagonalCausalMask`` -> (cu_seqlens, max_seqlen, causal)."""
    kind = type(mask).__name__
    if kind not in ("BlockDiagonalMask", "BlockDiagonalCausalMask"):
        fail(OP, f"cu_seqlens: of the xformers masks only BlockDiagonalMask and BlockDiagonalCausalMask "
                 f"are accepted, got {kind}")
    qs, ks = mask.q_seqinfo, mask.k_seqinfo
    if list(qs.seqstart_py) != list(ks.seqstart_py):
        fail(OP, "cu_seqlens: a BlockDiagonalMask with different query and key lengths is not self-attention")
    cu = torch.tensor(qs.seqstart_py, dtype=torch.int32, device=q.device)
    return cu, int(qs.max_seqlen), kind == "BlockDiagonalCausalMask"


def _check_values(cu_seqlens, seq_lens, max_seqlen, total, T):
    """Host-side checks of the length values; returns the longest length."""
    if cu_seqlens is not None:
        host = cu_seqlens.detach().to("cpu", torch.int64)
        check_cu_seqlens(OP, "cu_seqlens", host, total)
        longest = int((host[1:] - host[:-1]).max()) if host.numel() > 1 else 0
    else:
        host = seq_lens.detach().to("cpu", torch.int64)
        check_lengths(OP, "seq_lens", host, host.shape[0], T)
        longest = int(host.max()) if host.numel() else 0
    if max_seqlen is not None and max_seqlen < longest:
        fail(OP, f"max_seqlen must be >= the longest sequence ({longest}), got {max_seqlen}")
    return longest


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, seq_lens: torch.Tensor | None = None,
                     cu_seqlens=None, max_seqlen: int | None = None, causal: bool = False,
                     scale: float | None = None, backend: str = "auto") -> torch.Tensor:
    """Masked multi-head self-attention over variable-length sequences.

    Args:
        q, k, v: padded ``(B, T, H, D)`` or packed ``(total, H, D)``; same shape, dtype
            (float16/bfloat16/float32/float64) and device; ``D`` a multiple of 8 up to 256.
        seq_lens: ``(B,)`` int32/int64 lengths in ``[0, T]`` for padded input (None: all ``T``).
        cu_seqlens: ``(B+1,)`` int32/int64 offsets for packed input (``[0, L0, L0+L1, ...,
            total]``), or an xformers ``BlockDiagonalMask`` / ``BlockDiagonalCausalMask`` (then
            ``q`` may also be ``(1, total, H, D)``, and the causal mask sets ``causal=True``).
        max_seqlen: optional host int >= the longest length. Packed: sizes the launch grid.
            On a GPU, passing it skips the value checks of the lengths (no device->host sync).
        causal: query ``i`` attends only to keys ``j <= i`` of its sequence.
        scale: multiplier of ``q k^T``; default ``1/sqrt(D)``.
        backend: ``"auto"`` or one of ``triton, xformers, flex, sdpa, eager``.

    Returns:
        ``out`` shaped like ``q``; rows past a length and zero-length sequences are 0 (and get
        zero gradients).

    Raises:
        ValueError: bad input (naming the argument), or a named backend that cannot run it.
        NotImplementedError: ``auto`` and no backend can run it (lists each backend's reasons).
        RuntimeError: a double backward (differentiating the gradients) through ``triton``,
            whose backward is first order only (``eager`` and ``sdpa`` support it).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(OP, name, t, ndim=(3, 4), dtypes=DTYPES)
    unbatch = False
    if cu_seqlens is not None and not isinstance(cu_seqlens, torch.Tensor):
        if not hasattr(cu_seqlens, "q_seqinfo"):
            fail(OP, f"cu_seqlens must be a torch.Tensor or an xformers BlockDiagonalMask, "
                     f"got {type(cu_seqlens).__name__}")
        cu_seqlens, mask_max, mask_causal = _from_block_diagonal_mask(cu_seqlens, q)
        max_seqlen = mask_max if max_seqlen is None else max_seqlen
        causal = causal or mask_causal
        if q.dim() == 4:
            if q.shape[0] != 1:
                fail(OP, f"q with a BlockDiagonalMask must be (total, H, D) or (1, total, H, D), got {describe(q)}")
            unbatch = True
            q, k, v = (t[0] if t.dim() == 4 else t for t in (q, k, v))
    packed = cu_seqlens is not None
    if packed and seq_lens is not None:
        fail(OP, "pass either seq_lens (padded input) or cu_seqlens (packed input), not both")
    want = 3 if packed else 4
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != want:
            layout = "packed (total, H, D) with cu_seqlens" if packed else "padded (B, T, H, D) with seq_lens"
            fail(OP, f"{name} must have {want} dims for {layout} input, got {describe(t)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            fail(OP, f"{name} must have the shape of q {tuple(q.shape)}, got {describe(t)}")
        if t.dtype != q.dtype:
            fail(OP, f"{name} must have the dtype of q ({describe(q)}), got {describe(t)}")
    check_same_device(OP, q=q, k=k, v=v, seq_lens=seq_lens, cu_seqlens=cu_seqlens)
    D = q.shape[-1]
    if D % 8 or not 8 <= D <= MAX_HEAD_DIM:
        fail(OP, f"head dim (q.shape[-1]) must be a multiple of 8 in [8, {MAX_HEAD_DIM}], got {D}")
    # numpy scalars are accepted as the Python values they stand for (np.bool_ is not a bool)
    if not isinstance(causal, (bool, np.bool_)):
        fail(OP, f"causal must be a bool, got {type(causal).__name__} {causal!r}")
    causal = bool(causal)
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    elif (isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real) or not math.isfinite(scale)
          or abs(scale) > FLOAT32_MAX):  # the kernels scale in fp32: a larger one is inf there (NaN out)
        fail(OP, f"scale must be a finite float (at most {FLOAT32_MAX:.4g} in magnitude) or None, got {scale!r}")
    if max_seqlen is not None:
        if isinstance(max_seqlen, (bool, np.bool_)) or not isinstance(max_seqlen, numbers.Integral) or max_seqlen < 0:
            fail(OP, f"max_seqlen must be a non-negative host int or None, got {max_seqlen!r}")
        max_seqlen = int(max_seqlen)

    if packed:
        check_tensor(OP, "cu_seqlens", cu_seqlens, ndim=1, dtypes=LENGTH_DTYPES)
        if cu_seqlens.shape[0] < 1:
            fail(OP, f"cu_seqlens must have shape (B+1,) with B >= 0, got {describe(cu_seqlens)}")
    elif seq_lens is not None:
        check_tensor(OP, "seq_lens", seq_lens, ndim=1, dtypes=LENGTH_DTYPES)
        if seq_lens.shape[0] != q.shape[0]:
            fail(OP, f"seq_lens must be int32/int64 of shape (B,)=({q.shape[0]},), got {describe(seq_lens)}")
    T = None if packed else q.shape[1]
    if max_seqlen is not None and T is not None and max_seqlen > T:
        fail(OP, f"max_seqlen must be <= T={T} for padded input, got {max_seqlen}")
    lengths = cu_seqlens if packed else seq_lens
    compiling = torch.compiler.is_compiling()
    trusted = compiling or (max_seqlen is not None and q.device.type != "cpu")
    if lengths is not None and not trusted:
        longest = _check_values(cu_seqlens, seq_lens, max_seqlen, q.shape[0], T)
        if max_seqlen is None:
            max_seqlen = longest
    if trusted and seq_lens is not None and T is not None:
        # Unchecked lengths must still never make a kernel read past a sequence's T rows: clamping
        # on the device costs no sync (a length > T then means "all T rows").
        seq_lens = seq_lens.clamp(0, T)
    if packed and max_seqlen is not None:
        # a bound, not a size: no sequence is longer than the packed rows (a loose bound such as
        # a config's maximum clip length must not size buffers or launch grids beyond them)
        max_seqlen = min(max_seqlen, q.shape[0])
    if max_seqlen is None:
        if packed:  # under torch.compile: one sync here (pass max_seqlen to avoid it)
            max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if cu_seqlens.numel() > 1 else 0
        else:
            max_seqlen = T

    inputs = dict(q=q, k=k, v=v, seq_lens=seq_lens, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
                  causal=causal, scale=float(scale), forced=backend != "auto")
    out = DISPATCHER.select(backend, **inputs).run(**inputs)
    return out[None] if unbatch else out
