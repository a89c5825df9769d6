"""Triton masked attention for ragged sequences: launchers, block configs, torch ops, autograd.

Entry point: :func:`masked_attention` (called by the ``triton`` backend of
:func:`slpfast.ops.masked_attention`, which validates the input first).

- ``torch.ops.slpfast.attn_fwd(q, k, v, lens, max_seqlen, causal, scale, varlen) -> (out, lse)``
- ``torch.ops.slpfast.attn_bwd(do, q, k, v, out, lse, lens, max_seqlen, causal, scale, varlen)
  -> (dq, dk, dv)``

Both are ``torch.library.triton_op`` s (``torch.compile`` traces into the kernels; fake tensors
come for free), and ``attn_fwd`` has an autograd formula that calls ``attn_bwd``. Eager calls
take a plain ``autograd.Function`` over the same launchers (less CPU time per call).
``lens`` is ``seq_lens (B,)`` (padded, may be None: nothing padded) or ``cu_seqlens (B+1,)``
(``varlen=True``). ``lse`` is fp32 ``(H, rows)``, rows = B*T (padded) or total (packed).

Block sizes: on a GPU each kernel is autotuned over a few configs per (head dim, causal,
layout, dtype, length bucket); ``SLPFAST_ATTN_AUTOTUNE=0`` takes the first config that fits
(no tuning runs: quick compiles for tests).
Under the CPU interpreter one config is used (:data:`INTERPRETER_BLOCKS`, tests change it).
"""
from __future__ import annotations

import os

import torch
import triton

from ..ops._first_order import first_order_only
from ._host import cdiv, next_pow2, on_device
from .attention_bwd import attn_bwd_kernel
from .attention_fwd import attn_fwd_kernel

#: head dims the kernels take (multiples of 16 up to 128; non-powers of two are padded)
HEAD_DIMS = (16, 32, 48, 64, 80, 96, 112, 128)
#: (BLOCK_M, BLOCK_N) per kernel under the interpreter
INTERPRETER_BLOCKS = {"fwd": (64, 64), "bwd": (64, 64)}

_KEY = ["D", "CAUSAL", "VARLEN", "MAX_SEQLEN_KEY"]


def _configs(rows):
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in rows]


# (BLOCK_M, BLOCK_N, warps, stages, widest head dim it suits), in order of preference. The first
# fitting entry is what runs with autotuning off; those are the tiles that compile for sm_90 with
# no register spills (tests/attention_sm90_compile.py): "64" entries spill or crowd at D > 64.
_FWD_T = [(128, 64, 4, 3, 64), (128, 64, 8, 3, 128), (64, 64, 4, 3, 128), (128, 128, 8, 2, 64),
          (64, 32, 4, 4, 128), (64, 32, 4, 2, 128)]
# The backward keeps BLOCK_N rows resident in both of its roles (the key block of dK/dV, the
# query block of dQ) and streams BLOCK_M-row tiles past them.
# Every entry kept for D > 64 compiles without spills in bf16 at D=128 (the slow compile test).
_BWD_T = [(64, 128, 8, 3, 64), (32, 128, 8, 3, 128), (32, 128, 4, 3, 64), (64, 64, 4, 3, 64),
          (32, 64, 8, 3, 128), (32, 32, 4, 2, 128)]
TABLES = {"fwd": _FWD_T, "bwd": _BWD_T}


def _pruner(table):
    """Config pruning for one kernel's table: fp32 (a testing dtype) keeps small tiles with few
    stages; D > 64 keeps the entries marked for it. (Meta-parameters such as ``D`` arrive in
    ``kwargs``, positional arguments in ``named_args``.)"""
    wide = {row[:4] for row in table if row[4] > 64}

    def prune(configs, named_args, **kwargs):
        D = kwargs.get("D", named_args.get("D", 128))
        if getattr(named_args.get("Q"), "dtype", None) == torch.float32:
            kept = [c for c in configs if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 32 and c.num_stages <= 2]
        elif D > 64:
            kept = [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in wide]
        else:
            kept = list(configs)
        return kept or configs[-1:]
    return prune


def _first_config(kernel_call, quantiles):
    """Stand-in benchmark when autotuning is off: every config ties, so the first kept one wins
    (and the others are never compiled)."""
    return [0.0, 0.0, 0.0]


def _tuned(kernel, table, do_bench=None):
    """``kernel`` autotuned over ``table``'s configs (keyed by head dim, causal, layout, dtype and
    length bucket); ``do_bench`` replaces triton's benchmark (tests, autotuning off)."""
    return triton.autotune(configs=_configs([row[:4] for row in table]), key=_KEY, do_bench=do_bench,
                           prune_configs_by={"early_config_prune": _pruner(table)})(kernel)


_TUNED = {}
KERNELS = {"fwd": attn_fwd_kernel, "bwd": attn_bwd_kernel}


def _kernel(name: str, device: torch.device):
    """(kernel, extra meta-parameters) for this device: autotuned on GPU, fixed blocks on CPU."""
    if device.type == "cpu":
        m, n = INTERPRETER_BLOCKS[name]
        return KERNELS[name], {"BLOCK_M": m, "BLOCK_N": n}
    tune = os.environ.get("SLPFAST_ATTN_AUTOTUNE", "1") != "0"
    if (name, tune) not in _TUNED:
        _TUNED[name, tune] = _tuned(KERNELS[name], TABLES[name], do_bench=None if tune else _first_config)
    return _TUNED[name, tune], {}


_BEST: dict = {}  # (autotuner, tuning key) -> the config it chose


def _run(name: str, wrap: bool, device: torch.device, grid, args: tuple, meta: dict, tuning_key: tuple) -> None:
    """Launch kernel ``name``. On a GPU in eager mode the autotuner runs once per tuning key;
    later calls launch the kernel directly with the config it chose (the autotuner's per-call
    bookkeeping costs CPU time comparable to these kernels on short clips). Traced calls
    (``wrap``, under torch.compile) hand the autotuner itself to ``wrap_triton``."""
    kernel, blocks = _kernel(name, device)
    if wrap or blocks or not isinstance(kernel, triton.runtime.Autotuner):
        _launcher(kernel, wrap)[grid](*args, **meta, **blocks)  # traced (inductor places it) or CPU
        return
    key = (kernel, tuning_key)
    config = _BEST.get(key)
    with on_device(device):  # Triton launches on the current device: make it the tensors' one
        if config is None:
            kernel[grid](*args, **meta)
            _BEST[key] = kernel.best_config
        else:
            kernel.fn[grid](*args, **meta, **config.all_kwargs())


def _geometry(q: torch.Tensor, lens, max_seqlen: int, varlen: bool):
    """-> (B, T, H, D, rows of the LSE buffer, rows the launch grid covers per sequence)."""
    if varlen:
        total, H, D = q.shape
        return lens.shape[0] - 1, 0, H, D, total, max_seqlen
    B, T, H, D = q.shape
    return B, T, H, D, B * T, T


def _strides(t: torch.Tensor, varlen: bool):
    return (0, t.stride(0), t.stride(1)) if varlen else (t.stride(0), t.stride(1), t.stride(2))


def _last_dim_contiguous(*ts):
    return [t if t.stride(-1) == 1 else t.contiguous() for t in ts]


def _fake_under_interpreter(t: torch.Tensor) -> bool:
    """Fake tensors reach the kernel itself under TRITON_INTERPRET=1 (wrap_triton hands back the
    interpreted function): then there is nothing to compute, only shapes to return."""
    return t.device.type == "cpu" and torch._subclasses.fake_tensor.is_fake(t)


def _tuning_key(q, lens, bucket: int, meta: dict) -> tuple:
    return (q.dtype, None if lens is None else lens.dtype, bucket, *meta.values())


def _common(q, lens, max_seqlen, varlen, causal):
    B, T, H, D, rows, grid_rows = _geometry(q, lens, max_seqlen, varlen)
    block_d = max(16, next_pow2(D))
    meta = dict(D=D, VARLEN=varlen, HAS_LENS=lens is not None, CAUSAL=causal, BLOCK_D=block_d, EVEN_D=block_d == D,
                DOT_PREC="ieee" if q.dtype == torch.float32 else "tf32")
    bucket = next_pow2(max(grid_rows, 16))
    return B, T, H, rows, grid_rows, bucket, meta


def _launcher(kernel, wrap: bool):
    """Inside a triton_op body ``wrap_triton`` lets torch.compile trace the launch; the eager
    autograd path calls the kernel directly. Under the interpreter the kernels are interpreted
    functions, which torch 2.13's ``wrap_triton`` hands back unchanged and torch 2.11's refuses:
    they are called directly (there is no compiled tracing under the interpreter)."""
    if wrap and isinstance(kernel, (triton.runtime.JITFunction, triton.runtime.Autotuner)):
        return torch.library.wrap_triton(kernel)
    return kernel


def _fwd(q, k, v, lens, max_seqlen: int, causal: bool, scale: float, varlen: bool, wrap: bool):
    q, k, v = _last_dim_contiguous(q, k, v)
    B, T, H, rows, grid_rows, bucket, meta = _common(q, lens, max_seqlen, varlen, causal)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((H, rows), dtype=torch.float32, device=q.device)
    if B * H * grid_rows == 0:
        return out.zero_(), lse.zero_()
    if _fake_under_interpreter(q):
        return out, lse
    grid = lambda META: (B * H * cdiv(grid_rows, META["BLOCK_M"]),)  # noqa: E731  (one axis: see _program_block)
    args = (q, k, v, out, lse, lens if lens is not None else q, *_strides(q, varlen), *_strides(k, varlen),
            *_strides(v, varlen), *_strides(out, varlen), lse.stride(0), T, H, scale, bucket, grid_rows)
    _run("fwd", wrap, q.device, grid, args, meta, _tuning_key(q, lens, bucket, meta))
    return out, lse


def _bwd(do, q, k, v, out, lse, lens, max_seqlen: int, causal: bool, scale: float, varlen: bool, wrap: bool):
    q, k, v = _last_dim_contiguous(q, k, v)
    do, out = do.contiguous(), out.contiguous()
    B, T, H, rows, grid_rows, bucket, meta = _common(q, lens, max_seqlen, varlen, causal)
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dv = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if B * H * grid_rows == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    if _fake_under_interpreter(q):
        return dq, dk, dv
    # O, dO, dQ, dK and dV are contiguous with q's shape: the kernel takes one set of strides for them
    grid = lambda META: (B * H * 2 * cdiv(grid_rows, META["BLOCK_N"]),)  # noqa: E731
    _run("bwd", wrap, q.device, grid, (q, k, v, out, do, dq, dk, dv, lse, lens if lens is not None else q,
                                       *_strides(q, varlen), *_strides(k, varlen), *_strides(v, varlen),
                                       *_strides(dq, varlen), lse.stride(0), T, H, scale, bucket, grid_rows),
         meta, _tuning_key(q, lens, bucket, meta))
    return dq, dk, dv


# ------------------------------------------------- torch ops (what torch.compile sees)
@torch.library.triton_op("slpfast::attn_fwd", mutates_args=())
def attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lens: torch.Tensor | None, max_seqlen: int,
             causal: bool, scale: float, varlen: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _fwd(q, k, v, lens, max_seqlen, causal, scale, varlen, wrap=True)


@torch.library.triton_op("slpfast::attn_bwd", mutates_args=())
def attn_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             lse: torch.Tensor, lens: torch.Tensor | None, max_seqlen: int, causal: bool, scale: float,
             varlen: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _bwd(do, q, k, v, out, lse, lens, max_seqlen, causal, scale, varlen, wrap=True)


def _setup_context(ctx, inputs, output):
    q, k, v, lens, max_seqlen, causal, scale, varlen = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse, lens)
    ctx.args = (max_seqlen, causal, scale, varlen)


def _backward(ctx, d_out, _d_lse):
    q, k, v, out, lse, lens = ctx.saved_tensors
    dq, dk, dv = torch.ops.slpfast.attn_bwd(d_out, q, k, v, out, lse, lens, *ctx.args)
    return dq, dk, dv, None, None, None, None, None


attn_fwd.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------- eager autograd (a fraction of the op overhead)
class _MaskedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, lens, max_seqlen, causal, scale, varlen):
        out, lse = _fwd(q, k, v, lens, max_seqlen, causal, scale, varlen, wrap=False)
        ctx.save_for_backward(q, k, v, out, lse, lens)
        ctx.args = (max_seqlen, causal, scale, varlen)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse, lens = ctx.saved_tensors
        with torch.no_grad():
            dq, dk, dv = _bwd(d_out, q, k, v, out, lse, lens, *ctx.args, wrap=False)
        # first order only: under create_graph=True a double backward raises, never a silent None
        grads = first_order_only("masked_attention", "triton", (dq, dk, dv), (d_out, q, k, v))
        return (*grads, None, None, None, None, None)


def masked_attention(q, k, v, *, seq_lens=None, cu_seqlens=None, max_seqlen: int, causal: bool, scale: float):
    """Validated input of :func:`slpfast.ops.masked_attention` -> out (rows past a length: 0).

    Eager calls go through a plain ``autograd.Function`` (the custom-op dispatch costs more CPU
    time per call than these kernels take on short pose clips); under ``torch.compile`` the
    ``torch.ops.slpfast.attn_*`` triton ops are used, which compile traces into.
    """
    varlen = cu_seqlens is not None
    lens = cu_seqlens if varlen else seq_lens
    args = (q, k, v, lens, int(max_seqlen), bool(causal), float(scale), varlen)
    if torch.compiler.is_compiling():
        return torch.ops.slpfast.attn_fwd(*args)[0]
    return _MaskedAttention.apply(*args)
