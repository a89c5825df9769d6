"""Backends of :func:`slpfast.ops.masked_attention`, fastest first: triton, xformers, flex, sdpa, eager.

Every backend takes the validated, normalised input of the public op as keyword arguments::

    q, k, v      (B, T, H, D) padded  or  (total, H, D) packed, same dtype and device
    seq_lens     (B,) int lengths (padded input; None: nothing padded)
    cu_seqlens   (B+1,) int offsets (packed input), else None
    max_seqlen   host int (packed: always set; padded: T or the caller's bound)
    causal       bool;  scale  float
    forced       True when the caller named the backend (``auto`` skips slow CPU paths)

and returns ``out`` shaped like ``q`` with zeros in padding rows and zero-length sequences.
``available()`` gives the reasons a backend cannot run on this machine at all; ``supports``
the reasons it cannot take this input (honest, user-facing sentences).
"""
from __future__ import annotations

import os
import warnings

import torch

from ..reference import attention as ref
from ._dispatch import Backend
from ._validate import lengths_to_cu_seqlens
from .packing import pack_rows, unpack_rows


def _row_valid(seq_lens: torch.Tensor, T: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True below each length."""
    return torch.arange(T, device=seq_lens.device)[None, :] < seq_lens[:, None]


def _empty_out(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The output for empty q, k, v (B, T or H = 0; packed total = 0): shaped like q, no rows.

    Built from all three inputs, not ``zeros_like(q)`` / ``q * 0``: backward must give q, k and
    v each a (zero-size) gradient, as the eager reference does; a graph through q alone would
    leave k.grad and v.grad None and make ``out.sum().backward()`` fail when only k or v needs it.
    """
    return (q + k + v) * 0  # empty: nothing is computed, no 0 * inf


# ----------------------------------------------------------------------------------- eager
def _eager_run(q, k, v, *, seq_lens, cu_seqlens, max_seqlen, causal, scale, **_):
    return ref.masked_attention(q, k, v, seq_lens=seq_lens, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
                                causal=causal, scale=scale)


# ------------------------------------------------------------------------------------ sdpa
def _nan_where_query_is_not_finite(out: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """out, q (..., D): NaN in the output rows whose query row holds a NaN or an inf.

    The reference gives NaN there (every score of the row is NaN or +-inf, whose softmax is NaN);
    torch's CPU flash SDPA kernel gives 0 for a NaN query row instead, which would hide a
    diverged model. O(rows * D): a pass over q and out, no score matrix. CPU only: on a GPU the
    sdpa backend is the baseline of the attention benchmarks and is left as torch runs it (the
    `cuda` test beside the CPU one checks that torch's CUDA kernels give NaN there themselves).
    """
    if q.device.type != "cpu":
        return out
    bad = ~torch.isfinite(q).all(-1, keepdim=True)
    return torch.where(bad, float("nan"), out)


def _sdpa_padded(q, k, v, seq_lens, causal, scale):
    F = torch.nn.functional
    if q.numel() == 0:  # SDPA's CPU kernel dies of SIGFPE on empty inputs in torch 2.11 (not 2.13)
        return _empty_out(q, k, v)
    B, T = q.shape[:2]
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    dense = seq_lens is None or (seq_lens.device.type == "cpu" and not torch.compiler.is_compiling()
                                 and bool((seq_lens == T).all()))
    if dense:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, scale=scale).transpose(1, 2)
        return _nan_where_query_is_not_finite(out, q)
    row_valid = _row_valid(seq_lens, T)
    keep = row_valid[:, :, None, None]
    # padding rows may hold anything: zeroed so that inf/NaN there cannot reach valid rows (0 * inf)
    qt, kt, vt = (torch.where(keep, t, 0.0).transpose(1, 2) for t in (q, k, v))
    if causal:
        # A valid row i < L attends to keys j <= i < L: the causal mask alone keeps padding keys
        # out, and no row is fully masked. Not a boolean mask: SDPA adds a mask as a -inf bias,
        # and NaN + -inf = NaN would let a NaN key leak into the valid rows before it.
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale).transpose(1, 2)
    else:
        # padding rows attend to every key (no all-masked row, hence no NaN); zeroed below
        allowed = (row_valid[:, None, :].expand(B, T, T) | ~row_valid[:, :, None])[:, None]
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=allowed, scale=scale).transpose(1, 2)
    return torch.where(keep, _nan_where_query_is_not_finite(out, q), 0.0)


def _sdpa_run(q, k, v, *, seq_lens, cu_seqlens, max_seqlen, causal, scale, **_):
    if cu_seqlens is None:
        return _sdpa_padded(q, k, v, seq_lens, causal, scale)
    B, total = cu_seqlens.shape[0] - 1, q.shape[0]
    if B * max_seqlen == total:  # every sequence has the longest length: a plain reshape, no mask
        if B == 0 or total == 0:
            return _empty_out(q, k, v)
        qp, kp, vp = (t.view(B, max_seqlen, *t.shape[1:]) for t in (q, k, v))
        return _sdpa_padded(qp, kp, vp, None, causal, scale).reshape(q.shape)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
    qp, kp, vp = (unpack_rows(t, cu_seqlens, max_seqlen) for t in (q, k, v))
    return pack_rows(_sdpa_padded(qp, kp, vp, lengths, causal, scale), cu_seqlens, total)


# ------------------------------------------------------------------------------------ flex
_FLEX_COMPILED = []


def _flex_fn(device_type: str):
    """flex_attention, compiled on CUDA (the fused kernel; shapes turn dynamic after the first
    recompile); eager elsewhere (on CPU it is forward-only and run only when named)."""
    from torch.nn.attention.flex_attention import flex_attention

    if device_type != "cuda":
        return flex_attention
    if not _FLEX_COMPILED:
        _FLEX_COMPILED.append(torch.compile(flex_attention))
    return _FLEX_COMPILED[0]


def _flex_available() -> list[str]:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError as exc:
        return [f"flex: torch.nn.attention.flex_attention cannot be imported ({exc})"]
    return []


def _flex_supports(q, k, v, *, forced=False, **_) -> list[str]:
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return ["flex: FlexAttention has no backward on CPU (inputs require grad)"]
    if q.device.type == "cpu" and not forced:
        return ["flex: on CPU it runs unfused (materialises the scores); auto prefers sdpa, "
                "pass backend='flex' to force it"]
    if q.dtype == torch.float64 and q.device.type == "cuda":
        return ["flex: float64 is not supported by the fused CUDA kernel"]
    return []


def _flex_run(q, k, v, *, seq_lens, cu_seqlens, max_seqlen, causal, scale, **_):
    from torch.nn.attention.flex_attention import create_block_mask

    if q.numel() == 0:  # T = 0 or H = 0: create_block_mask cannot describe it; nothing to attend
        return _empty_out(q, k, v)
    compile_mask = q.device.type == "cuda"
    if q.device.type == "cpu":  # flex refuses CPU inputs that require grad, even under no_grad
        q, k, v = q.detach(), k.detach(), v.detach()
    with warnings.catch_warnings():  # the unfused CPU path warns on every call
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return _flex_call(q, k, v, seq_lens, cu_seqlens, causal, scale, compile_mask)


def _flex_call(q, k, v, seq_lens, cu_seqlens, causal, scale, compile_mask):
    from torch.nn.attention.flex_attention import create_block_mask

    if cu_seqlens is None:
        B, T = q.shape[:2]
        lens = seq_lens if seq_lens is not None else torch.full((B,), T, device=q.device, dtype=torch.int64)

        def mask_mod(b, h, qi, kj):
            ok = (kj < lens[b]) & (qi < lens[b])
            return ok & (qi >= kj) if causal else ok

        block_mask = create_block_mask(mask_mod, B, None, T, T, device=q.device, _compile=compile_mask)
        keep = _row_valid(lens, T)[:, :, None, None]
        # padding rows zeroed: inf/NaN there must not reach valid rows through masked products
        qt, kt, vt = (torch.where(keep, t, 0.0).transpose(1, 2) for t in (q, k, v))
        out = _flex_fn(q.device.type)(qt, kt, vt, block_mask=block_mask, scale=scale).transpose(1, 2)
        # flex gives 0 for rows with every key masked; keep the contract explicit all the same
        return torch.where(keep, out, 0.0)
    total = q.shape[0]
    if total == 0:
        return _empty_out(q, k, v)
    doc = torch.searchsorted(cu_seqlens[1:].to(torch.int64), torch.arange(total, device=q.device), right=True)

    def doc_mask(b, h, qi, kj):
        same = doc[qi] == doc[kj]
        return same & (qi >= kj) if causal else same

    block_mask = create_block_mask(doc_mask, None, None, total, total, device=q.device, _compile=compile_mask)
    # A block of the mask spans several sequences, and a masked key still enters the sum p @ v
    # with p = 0: 0 * NaN = NaN would carry a non-finite v of one sequence into the others.
    # v's non-finite entries are zeroed for the kernel and put back, as NaN, into the columns of
    # their own sequence, where the reference has them (0 * inf / NaN, or inf - inf): a few passes
    # over v in its own dtype, O(total*H*D).
    poison = v.detach() * 0  # NaN where v is not finite, else 0
    v = torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    qt, kt, vt = (t.transpose(0, 1)[None] for t in (q, k, v))  # (1, H, total, D)
    out = _flex_fn(q.device.type)(qt, kt, vt, block_mask=block_mask, scale=scale)[0].transpose(0, 1)
    per_seq = poison.new_zeros(cu_seqlens.shape[0] - 1, *v.shape[1:]).index_add_(0, doc, poison)  # (B, H, D)
    return out + per_seq[doc]


# -------------------------------------------------------------------------------- xformers
_MACHINE: dict[str, object] = {}  # facts of this machine, found on first use


@torch.compiler.assume_constant_result  # a machine fact: torch.compile need not trace it
def _has_cuda() -> bool:
    if "cuda" not in _MACHINE:
        _MACHINE["cuda"] = torch.cuda.is_available()
    return bool(_MACHINE["cuda"])


@torch.compiler.assume_constant_result
def _xformers_import_error() -> str:
    """'' when xformers.ops imports, else why not (imported once, only on a CUDA machine)."""
    if "xformers" not in _MACHINE:
        try:
            import xformers.ops  # noqa: F401
            _MACHINE["xformers"] = ""
        except Exception as exc:  # ImportError, or a broken build
            _MACHINE["xformers"] = f"{type(exc).__name__}: {exc}"
    return str(_MACHINE["xformers"])


def _xformers_available() -> list[str]:
    if not _has_cuda():
        return ["xformers: no CPU operator (memory_efficient_attention needs a CUDA GPU; none here)"]
    err = _xformers_import_error()
    return [f"xformers: not importable ({err})"] if err else []


def _xformers_supports(q, **_) -> list[str]:
    if q.device.type != "cuda":
        return ["xformers: no CPU operator (memory_efficient_attention needs CUDA tensors)"]
    if q.dtype == torch.float64:
        return ["xformers: float64 is not supported"]
    return []


def _xformers_run(q, k, v, *, seq_lens, cu_seqlens, max_seqlen, causal, scale, **_):
    from xformers.ops import fmha

    if cu_seqlens is None:
        B, T = q.shape[:2]
        lens = seq_lens if seq_lens is not None else torch.full((B,), T, device=q.device, dtype=torch.int64)
        cu = lengths_to_cu_seqlens(lens, torch.int64)
        total = int(cu[-1])
        packed = [pack_rows(t, cu, total) for t in (q, k, v)]
        out = _xformers_run(*packed, seq_lens=None, cu_seqlens=cu, max_seqlen=T, causal=causal, scale=scale)
        return unpack_rows(out, cu, T)
    lengths = [n for n in (cu_seqlens[1:] - cu_seqlens[:-1]).tolist() if n > 0]  # empty sequences own no rows
    if not lengths:  # no rows at all (total = 0)
        return _empty_out(q, k, v)
    mask_cls = fmha.attn_bias.BlockDiagonalCausalMask if causal else fmha.attn_bias.BlockDiagonalMask
    bias = mask_cls.from_seqlens(lengths, device=q.device)
    out = fmha.memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias, scale=scale)
    return out[0]


# ---------------------------------------------------------------------------------- triton
def _triton_available() -> list[str]:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return [f"triton: not importable ({exc})"]
    if not _has_cuda() and os.environ.get("TRITON_INTERPRET") != "1":
        return ["triton: no CUDA GPU, and tensors on CPU require TRITON_INTERPRET=1 (set before importing triton)"]
    return []


#: CUDA's limit on grid axis 1, which the Triton kernels map to (sequence, head) pairs
MAX_GRID_Y = 65535


def _triton_supports(q, *, forced=False, cu_seqlens=None, **_) -> list[str]:
    from ..kernels import attention as kern

    why = []
    D = q.shape[-1]
    if D not in kern.HEAD_DIMS:
        why.append(f"triton: head dim {D} unsupported (multiples of 16 from 16 to 128)")
    batch = q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
    if batch * q.shape[-2] > MAX_GRID_Y:
        why.append(f"triton: sequences x heads = {batch} x {q.shape[-2]} exceeds the CUDA grid limit {MAX_GRID_Y} "
                   "of the launch (one program column per sequence and head)")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        why.append(f"triton: dtype {str(q.dtype).replace('torch.', '')} unsupported (float16/bfloat16/float32)")
    if q.device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            why.append("triton: tensors on CPU require TRITON_INTERPRET=1 (set before importing triton)")
        elif q.dtype == torch.bfloat16:
            why.append("triton: bfloat16 arithmetic is wrong in the Triton interpreter (CPU); use a GPU")
        elif not forced:
            why.append("triton: on CPU it runs in the Triton interpreter (very slow); auto skips it, "
                       "pass backend='triton' to force it")
    elif q.device.type != "cuda":
        why.append(f"triton: tensors on {q.device.type} are not supported (CUDA, or CPU under TRITON_INTERPRET=1)")
    return why


def _triton_run(q, k, v, *, seq_lens, cu_seqlens, max_seqlen, causal, scale, **_):
    from ..kernels import attention as kern

    return kern.masked_attention(q, k, v, seq_lens=seq_lens, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
                                 causal=causal, scale=scale)


BACKENDS = [
    Backend("triton", _triton_run, _triton_available, _triton_supports),
    Backend("xformers", _xformers_run, _xformers_available, _xformers_supports),
    Backend("flex", _flex_run, _flex_available, _flex_supports),
    Backend("sdpa", _sdpa_run),
    Backend("eager", _eager_run),
]
