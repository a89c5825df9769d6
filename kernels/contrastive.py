"""Fused symmetric InfoNCE (CLIP) in Triton: tiled log-sum-exps forward, gradient tiles backward.

Both directions of the loss are row-LSE problems ``s * A @ B.T`` with A (M, D) the local rows and
B (K, D) the (gathered) columns. Every kernel runs on a (row tiles x column tiles) grid, which
fills the GPU even when M is one rank's few hundred rows; there are no atomics, and the N x N
logits never exist in memory. Two kernels, each computing its S tile in fp32 with a loop over D:

- ``_lse_tile_kernel`` (forward): reduces its S tile to partial log-sum-exps of each row over
  the tile's columns and (``COLS``) of each column over the tile's rows; :func:`tile_lse`
  merges them with ``torch.logsumexp``. One process: both directions from one S pass
  (2 N^2 D flops); distributed: one call per direction, rows only.
- ``_grad_tile_kernel`` (backward): writes the logit gradient
  ``G = exp(s*S - lse_row[:, None]) + exp(s*S - lse_col[None, :]) - labels`` (either exponential
  optional) in the operands' dtype, plus the tile's sum of ``G * S`` for the scale's gradient.
  :func:`grad_products` runs it over row chunks of at most ``GRAD_CHUNK_BYTES`` and takes
  ``G @ B`` and ``G.T @ A`` with two library matmuls per chunk: deterministic, and the products
  run at matmul speed instead of inside a kernel that must also recompute S (an earlier design
  recomputed S once per direction and per slice of D: 12 N^2 D flops in the backward, against
  6 N^2 D now).

They implement the backend contract of :mod:`slpfast.ops.contrastive_chunked`
(``fwd_pair, fwd_row, bwd_pair, bwd_row``); the loss, the positive-pair terms and the
autograd glue live in :mod:`slpfast.ops.contrastive`. Operands are fp16/bf16/fp32 (tensor cores
for the halves; fp32 follows ``torch.get_float32_matmul_precision()``: "highest" -> exact fp32,
"high" -> 3xTF32, "medium" -> TF32); all statistics are fp32.

On a GPU the tile shape is picked per (kernel, D, dtype, size bucket): large problems time every candidate once
(``SLPFAST_AUTOTUNE=0``: no timing), small ones take the first candidate that fits; a candidate
that raises ``OutOfResources`` is skipped. The candidates were not tuned on hardware.

``compile_for_gpu(90)`` compiles every GPU tile candidate for sm_90 on a machine without a GPU
(tested in CI: catches what the interpreter cannot, e.g. layout or shared-memory problems).

Without a GPU the kernels run in the Triton interpreter (``TRITON_INTERPRET=1`` before triton is
imported): correct for fp32/fp16, wrong for bf16 arithmetic, ~1.4 ms per program and ~5 ms per
``tl.dot`` step, so the interpreter configuration uses few, wide tiles.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from ._host import cdiv, next_pow2, on_device

#: the kernels were decorated under the interpreter (TRITON_INTERPRET=1 read at import)
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
LOG2E = 1.0 / math.log(2.0)


@triton.jit
def _sim_tile(A, B, rm, rn, M, K, D, stride_a, stride_b,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    """S[rm, rn] = A[rm] . B[rn] over D in BLOCK_D steps (fp32 accumulator, zero outside M/K)."""
    rd = tl.arange(0, BLOCK_D)
    a_rows = A + rm.to(tl.int64)[:, None] * stride_a  # int64: N * D may pass 2**31
    b_rows = B + rn.to(tl.int64)[None, :] * stride_b
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + rd
        a = tl.load(a_rows + cols[None, :],
                    mask=(rm[:, None] < M) & (cols[None, :] < D), other=0.0)
        bt = tl.load(b_rows + cols[:, None],
                     mask=(rn[None, :] < K) & (cols[:, None] < D), other=0.0)
        acc = tl.dot(a, bt, acc, input_precision=PREC)
    return acc


@triton.jit
def _grid_tile(A, B, M, K, D, stride_a, stride_b, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    """The S tile of program (pid_m, pid_n) on a (row tiles x column tiles) grid:
    -> (pid_m, pid_n, rows, columns, rows < M, columns < K, S = A[rows] . B[columns] fp32)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    s = _sim_tile(A, B, rm, rn, M, K, D, stride_a, stride_b, BLOCK_M, BLOCK_N, BLOCK_D, PREC)
    return pid_m, pid_n, rm, rn, rm < M, rn < K, s


@triton.jit
def _lse_tile_kernel(A, B, ROW_PART, COL_PART, M, K, D, stride_a, stride_b, scale_log2, COLS: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    """One (BLOCK_M, BLOCK_N) tile of ``s * A @ B.T`` reduced to partial log-sum-exps (natural
    log, fp32): of each row over this tile's columns -> ROW_PART[pid_n, rows] and, with COLS, of
    each column over this tile's rows -> COL_PART[pid_m, columns]. Merging the partials (a
    logsumexp over the tile axis) gives the LSEs; with COLS both directions from one S."""
    scale_log2 = tl.cast(scale_log2, tl.float32)  # a Python float arrives as fp64 from torch.compile
    pid_m, pid_n, rm, rn, row_ok, col_ok, s = _grid_tile(A, B, M, K, D, stride_a, stride_b, BLOCK_M, BLOCK_N,
                                                         BLOCK_D, PREC)
    z = tl.where(row_ok[:, None] & col_ok[None, :], s * scale_log2, float("-inf"))  # base 2
    # every valid row has >= 1 valid column in every tile (and vice versa), so the stored maxima
    # are finite; rows / columns past the edge (all -inf, never stored) take max 0 and sum 1
    # rather than -inf - -inf and log(0)
    r_max = tl.where(row_ok, tl.max(z, 1), 0.0)
    r_lse = r_max + tl.log2(tl.where(row_ok, tl.sum(tl.exp2(z - r_max[:, None]), 1), 1.0))
    tl.store(ROW_PART + pid_n.to(tl.int64) * M + rm, r_lse * 0.6931471805599453, mask=row_ok)
    if COLS:
        c_max = tl.where(col_ok, tl.max(z, 0), 0.0)
        c_lse = c_max + tl.log2(tl.where(col_ok, tl.sum(tl.exp2(z - c_max[None, :]), 0), 1.0))
        tl.store(COL_PART + pid_m.to(tl.int64) * K + rn, c_lse * 0.6931471805599453, mask=col_ok)


@triton.jit
def _grad_tile_kernel(A, B, LSE_R, LSE_C, G, PS, M, K, D, stride_a, stride_b, stride_g, scale_log2, diag_col,
                      diag_value, HAS_R: tl.constexpr, HAS_C: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    """One (BLOCK_M, BLOCK_N) tile of the logit gradient G (see ``grad_products``), stored in G's
    dtype, and its sum(G * S) in PS[pid_m, pid_n]. Program (pid_m, pid_n): consecutive programs
    share a column tile of B and walk the rows of A, which stay in L2 across the grid."""
    scale_log2 = tl.cast(scale_log2, tl.float32)  # a Python float arrives as fp64 from torch.compile
    pid_m, pid_n, rm, rn, row_ok, col_ok, s = _grid_tile(A, B, M, K, D, stride_a, stride_b, BLOCK_M, BLOCK_N,
                                                         BLOCK_D, PREC)
    z = s * scale_log2  # logits in base 2
    g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if HAS_R:
        lse_r = tl.load(LSE_R + rm, mask=row_ok, other=0.0) * 1.4426950408889634
        g += tl.exp2(z - lse_r[:, None])
    if HAS_C:
        lse_c = tl.load(LSE_C + rn, mask=col_ok, other=0.0) * 1.4426950408889634
        g += tl.exp2(z - lse_c[None, :])
    # the labels, subtracted in fp32 before G is rounded to the operands' dtype
    g = tl.where(rn[None, :] == rm[:, None] + diag_col, g - tl.cast(diag_value, tl.float32), g)
    g = tl.where(row_ok[:, None] & col_ok[None, :], g, 0.0)
    tl.store(PS + pid_m * tl.num_programs(1) + pid_n, tl.sum(tl.sum(g * s, 1), 0))
    tl.store(G + rm.to(tl.int64)[:, None] * stride_g + rn[None, :], g.to(G.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


# ---------------------------------------------------------------------------------------------
# launchers

def _pow2(x: int, lo: int = 16) -> int:
    return max(lo, next_pow2(x))


def _precision(dtype: torch.dtype) -> str:
    if dtype != torch.float32 or INTERPRET:
        return "ieee" if INTERPRET else "tf32"  # halves: tensor cores; the flag only matters for fp32
    return {"highest": "ieee", "high": "tf32x3", "medium": "tf32"}[torch.get_float32_matmul_precision()]


def _configs(kind: str, m: int, k: int, d: int, dtype: torch.dtype, device: torch.device) -> list[dict]:
    """Candidate tile shapes, most conservative last (see ``_launch`` for how one is picked).

    ``kind``: ``"lse"`` (forward tiles) or ``"bwd"`` (gradient tiles). The GPU candidates are
    educated guesses, not tuned on hardware when written."""
    if device.type != "cuda":
        # interpreter: the cost is per program and per op, not per flop -> few, wide tiles, and
        # one dot step covers all of D (N=300, D=384: 2 x 2 tiles; fwd ~0.2 s, grad ~0.4 s)
        bd = _pow2(d)
        cfg = dict(BLOCK_M=min(256, _pow2(m)), BLOCK_N=min(256, _pow2(k)), BLOCK_D=bd, num_warps=4, num_stages=1)
        return [cfg]
    # both kinds: a GEMM main loop over D (A and B tiles pipelined through shared memory), then an
    # elementwise epilogue; classic matmul tile shapes, halved for fp32 operands (128 x 256 spilled
    # 120 bytes per thread for sm_90; tests/contrastive_sm90_compile.py checks every candidate)
    if dtype != torch.float32:
        return [dict(BLOCK_M=128, BLOCK_N=128, BLOCK_D=64, num_warps=8, num_stages=3),
                dict(BLOCK_M=128, BLOCK_N=64, BLOCK_D=64, num_warps=4, num_stages=4),
                dict(BLOCK_M=64, BLOCK_N=128, BLOCK_D=64, num_warps=4, num_stages=4),
                dict(BLOCK_M=64, BLOCK_N=64, BLOCK_D=64, num_warps=4, num_stages=3),
                dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=32, num_warps=4, num_stages=1)]
    return [dict(BLOCK_M=64, BLOCK_N=64, BLOCK_D=32, num_warps=4, num_stages=3),
            dict(BLOCK_M=128, BLOCK_N=64, BLOCK_D=32, num_warps=8, num_stages=3),
            dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=32, num_warps=4, num_stages=1)]


#: (kernel variant, D, dtype, fp32 precision mode, device, size bucket) -> index of the config in use
_chosen: dict[tuple, int] = {}
#: problems with at least this many logits (M * K) are autotuned on a GPU; smaller ones take the
#: first candidate that fits (keeps compile time of small calls and of the GPU tests low)
AUTOTUNE_MIN_LOGITS = 1 << 24
AUTOTUNE_ENV = "SLPFAST_AUTOTUNE"  # "0": never time candidates


def chosen_configs(d: int, dtype: torch.dtype, device: torch.device, n: int) -> dict[str, dict]:
    """The tile configs in use for width ``d`` and ``dtype``, by "<kernel variant> <size bucket>"
    (what the benchmark records; ``n`` sizes the candidate lists as the calls did)."""
    return {f"{kind} {bucket}": _configs(kind.split(":")[0], n, n, d, dtype, device)[i]
            for (kind, kd, kdtype, _prec, _dev, bucket), i in _chosen.items() if kd == d and kdtype == dtype}


def _time_config(run, cfg: dict, reps: int = 2) -> float:
    """Milliseconds per ``run(**cfg)`` on the GPU (after one untimed call that compiles)."""
    run(**cfg)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        run(**cfg)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def _launch(kind: str, m: int, k: int, d: int, dtype: torch.dtype, device: torch.device, run):
    """``run(**config)`` with the config chosen for this (kernel variant, D, dtype, precision,
    size bucket). ``kind`` names the kernel and its constexpr variant (e.g. ``"lse:cols"``): a
    choice timed for one variant is not reused for another (they differ in registers and work).

    Large GPU problems: the first time, every candidate is timed and the fastest kept (an
    ``OutOfResources`` candidate is skipped). Otherwise: the first candidate that launches. The
    kernels are idempotent, so timing runs only repeat work. Different configs change the
    summation order, so results may differ in the last bits between processes.
    """
    configs = _configs(kind.split(":")[0], m, k, d, dtype, device)
    tune = (device.type == "cuda" and m * k >= AUTOTUNE_MIN_LOGITS and len(configs) > 1
            and os.environ.get(AUTOTUNE_ENV, "1") != "0")
    key = (kind, d, dtype, _precision(dtype), device.type, (_pow2(m), _pow2(k)) if tune else "first-fit")
    if key in _chosen:
        return run(**configs[_chosen[key]])
    if tune:
        times = {}
        for i, cfg in enumerate(configs):
            try:
                times[i] = _time_config(run, cfg)
            except triton.runtime.errors.OutOfResources:
                continue
        if not times:
            raise RuntimeError(f"slpfast contrastive {kind} kernel: no tile config fits this GPU (D={d}, {dtype})")
        _chosen[key] = min(times, key=times.get)
        return run(**configs[_chosen[key]])
    for i, cfg in enumerate(configs):
        try:
            out = run(**cfg)
        except triton.runtime.errors.OutOfResources:
            if i + 1 == len(configs):
                raise
            continue
        _chosen[key] = i
        return out
    raise AssertionError("unreachable: _configs returned no config")


def _prep(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


#: bytes of the forward's per-tile partial LSEs of one row chunk (both directions together)
LSE_PARTIAL_BYTES = 128 << 20


def _lse_chunk_rows(m: int, k: int, tile: int = 256) -> int:
    """Rows per chunk of :func:`tile_lse`: the partials of tiles as small as 32 x 32, (K/32 + rows/32)
    floats per row and column, stay within LSE_PARTIAL_BYTES."""
    rows = LSE_PARTIAL_BYTES * 32 // (2 * 4 * max(1, k))
    return m if rows >= m else max(tile, rows // tile * tile)


def tile_lse(A: torch.Tensor, B: torch.Tensor, s: float, cols: bool = True):
    """A (M, D), B (K, D) -> (row LSE (M,), column LSE (K,) or None) fp32 of ``s * A @ B.T``.

    One launch per row chunk over (row tiles x column tiles) (``_lse_tile_kernel``): every S tile
    is computed once and reduced both ways (``cols``), and the grid fills the GPU even when M
    is one rank's few hundred rows. The per-tile partial LSEs are merged with
    ``torch.logsumexp``, column partials across row chunks too."""
    A, B = _prep(A), _prep(B)
    (m, d), k = A.shape, B.shape[0]
    lse_row = torch.empty(m, dtype=torch.float32, device=A.device)
    lse_col = None
    rows = _lse_chunk_rows(m, k)
    for r0 in range(0, m, rows):
        a = A[r0:r0 + rows]
        r = a.shape[0]

        def run(BLOCK_M, BLOCK_N, num_warps, num_stages, **tiles):
            grid = (cdiv(r, BLOCK_M), cdiv(k, BLOCK_N))
            row_part = torch.empty(grid[1], r, dtype=torch.float32, device=A.device)
            col_part = torch.empty(grid[0], k, dtype=torch.float32, device=A.device) if cols else row_part
            _lse_tile_kernel[grid](a, B, row_part, col_part, r, k, d, a.stride(0), B.stride(0), s * LOG2E,
                                   COLS=cols, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, PREC=_precision(A.dtype),
                                   num_warps=num_warps, num_stages=num_stages, **tiles)
            return row_part, col_part

        row_part, col_part = _launch("lse:cols" if cols else "lse:rows", r, k, d, A.dtype, A.device, run)
        torch.logsumexp(row_part, 0, out=lse_row[r0:r0 + r])
        if cols:
            chunk_col = torch.logsumexp(col_part, 0)
            lse_col = chunk_col if lse_col is None else torch.logaddexp(lse_col, chunk_col)
    return lse_row, lse_col


#: bytes of one row chunk of the logit gradient G (rows x K, the operands' dtype): the backward's
#: only temporary beyond O(N * D). bf16 at N=65,536: 2,048 rows per chunk, 32 chunks.
GRAD_CHUNK_BYTES = 256 << 20


def _chunk_rows(m: int, k: int, elem: int, tile: int = 256) -> int:
    """Rows of A per chunk of G: within GRAD_CHUNK_BYTES, whole tiles unless all of A fits."""
    rows = GRAD_CHUNK_BYTES // max(1, k * elem)
    return m if rows >= m else max(tile, rows // tile * tile)


def _grad_tiles(A, B, s: float, lse_row, lse_col, diag_col: int, diag_value: float, g: torch.Tensor):
    """Fill ``g`` (M, K) with the logit gradient of A's rows against B's; -> sum(G * S) 0-dim fp32."""
    (m, d), k = A.shape, B.shape[0]
    dummy = g  # stands in for an absent LSE (never read: HAS_R / HAS_C are constexpr)

    def run(BLOCK_M, BLOCK_N, num_warps, num_stages, **tiles):
        grid = (cdiv(m, BLOCK_M), cdiv(k, BLOCK_N))
        ps = torch.empty(grid, dtype=torch.float32, device=A.device)
        _grad_tile_kernel[grid](
            A, B, dummy if lse_row is None else lse_row, dummy if lse_col is None else lse_col, g, ps, m, k, d,
            A.stride(0), B.stride(0), g.stride(0), s * LOG2E, diag_col, diag_value,
            HAS_R=lse_row is not None, HAS_C=lse_col is not None, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
            PREC=_precision(A.dtype), num_warps=num_warps, num_stages=num_stages, **tiles)
        return ps.sum()

    variant = f"bwd:{'r' if lse_row is not None else ''}{'c' if lse_col is not None else ''}"
    return _launch(variant, m, k, d, A.dtype, A.device, run)


_FP32_PRODUCTS: dict[str, bool] = {}


def fp32_products(device: torch.device) -> bool:
    """Whether half-precision matmuls on ``device`` can write and accumulate fp32 results
    (``torch.addmm(..., out_dtype=torch.float32, out=acc)``: CUDA, torch >= 2.9). Probed once per
    device on a small product against its fp32 value; without it the products come back in half
    and are added to the fp32 results (one more rounding and N x D temporaries per chunk).
    :func:`product_mode` names the path for benchmark rows."""
    key = str(device)
    if key not in _FP32_PRODUCTS and torch.compiler.is_compiling():
        return False  # no probe inside a traced graph (it would be traced); eager calls probe
    if key not in _FP32_PRODUCTS:
        ok = False
        if device.type == "cuda":
            try:
                gen = torch.Generator(device="cpu").manual_seed(0)
                a, b = (torch.randn(32, 32, generator=gen).to(device, torch.bfloat16) for _ in range(2))
                want = a.float() @ b.float()
                acc = torch.ones(32, 32, dtype=torch.float32, device=device)
                torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)  # the calls grad_products makes
                rows = torch.empty(64, 32, dtype=torch.float32, device=device)
                torch.mm(a, b, out_dtype=torch.float32, out=rows[32:])
                ok = (torch.allclose(acc, 1.0 + want, rtol=1e-3, atol=1e-3)
                      and torch.allclose(rows[32:], want, rtol=1e-3, atol=1e-3))
            except (RuntimeError, TypeError, NotImplementedError):
                ok = False
        _FP32_PRODUCTS[key] = ok
    return _FP32_PRODUCTS[key]


def product_mode(dtype: torch.dtype, device: torch.device) -> str:
    """How :func:`grad_products` multiplies G: ``fp32`` (fp32 operands), ``half->fp32`` (half
    operands, fp32 results) or ``half`` (half results added to fp32)."""
    if dtype == torch.float32:
        return "fp32"
    return "half->fp32" if fp32_products(device) else "half"


def grad_products(A: torch.Tensor, B: torch.Tensor, s: float, lse_row=None, lse_col=None, offset: int = 0,
                  labels: float = 1.0, need_gtb: bool = True):
    """The backward of one similarity matrix ``S = A @ B.T`` (A (M, D), B (K, D)).

    The logit gradient ``G = [exp(s*S - lse_row[:, None])] + [exp(s*S - lse_col[None, :])]
    - labels * [j == offset + i]`` (terms present when given) is built in row chunks of at most
    ``GRAD_CHUNK_BYTES``, each by one Triton launch over (row tile, column tile) that recomputes
    its S tile in fp32 and rounds G to the operands' dtype; two matmuls then take the products.
    -> ``(G @ B (M, D) fp32, G.T @ A (K, D) fp32 or None, sum(G * S) 0-dim fp32)``.
    """
    A, B = _prep(A), _prep(B)
    (m, d), k = A.shape, B.shape[0]
    gb = torch.empty(m, d, dtype=torch.float32, device=A.device)
    gtb = torch.zeros(k, d, dtype=torch.float32, device=A.device) if need_gtb else None
    ps = torch.zeros((), dtype=torch.float32, device=A.device)
    rows = _chunk_rows(m, k, A.element_size())
    chunk = torch.empty(rows, k, dtype=A.dtype, device=A.device)
    mode = product_mode(A.dtype, A.device)
    for r0 in range(0, m, rows):
        r = min(rows, m - r0)
        g, a = chunk[:r], A[r0:r0 + r]
        ps += _grad_tiles(a, B, s, None if lse_row is None else lse_row[r0:r0 + r], lse_col, offset + r0, labels, g)
        # G already holds the labels: these products are the gradients themselves, so rounding
        # them to half (mode "half", as autograd's products under autocast) loses no cancellation
        if mode == "half":
            gb[r0:r0 + r] = torch.mm(g, B)
            if gtb is not None:
                gtb += torch.mm(g.T, a)
        elif mode == "fp32":
            torch.mm(g, B, out=gb[r0:r0 + r])
            if gtb is not None:
                gtb.addmm_(g.T, a)
        else:
            torch.mm(g, B, out_dtype=torch.float32, out=gb[r0:r0 + r])
            if gtb is not None:
                torch.addmm(gtb, g.T, a, out_dtype=torch.float32, out=gtb)
    return gb, gtb, ps


def compile_for_gpu(arch: int = 90, d: int = 512, full: bool = False) -> list[dict]:
    """Compile the kernels for an NVIDIA GPU of compute capability ``arch`` without one (a check
    that CPU machines can run; needs the kernels decorated without the interpreter).

    Compiles every GPU candidate of both kernels in bf16, the first candidate in fp16 and fp32,
    and every HAS_R/HAS_C variant (``full=True``: every candidate in every dtype). Returns one dict
    per compile with the config and the shared memory it needs.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    assert not INTERPRET, "compile_for_gpu needs TRITON_INTERPRET unset when triton is imported"
    target = GPUTarget("cuda", arch, 32)
    names = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
    done = []
    for dtype, tname in names.items():
        prec = "ieee" if dtype == torch.float32 else "tf32"
        for kind, fn in (("lse", _lse_tile_kernel), ("bwd", _grad_tile_kernel)):
            configs = _configs(kind, 1 << 16, 1 << 16, d, dtype, torch.device("cuda"))
            if not full and dtype != torch.bfloat16:
                configs = configs[:1]
            flags = [dict(COLS=True), dict(COLS=False)] if kind == "lse" else [
                dict(HAS_R=True, HAS_C=True), dict(HAS_R=True, HAS_C=False), dict(HAS_R=False, HAS_C=True)]
            for i, cfg in enumerate(configs):
                for flag in (flags if i == 0 or full else flags[:1]):
                    tiles = dict(cfg)
                    options = dict(num_warps=tiles.pop("num_warps"), num_stages=tiles.pop("num_stages"))
                    const = dict(tiles, PREC=prec, **flag)
                    sig = {n: "constexpr" if n in const else kernel_arg_type(n, tname) for n in fn.arg_names}
                    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=target,
                                       options=options)
                    done.append(dict(kind=kind, dtype=tname, **const, **options, shared=k.metadata.shared))
    return done


def kernel_arg_type(name: str, dtype: str, scale_type: str = "fp32") -> str:
    """Triton signature type of a (non-constexpr) kernel argument of this module, for ahead-of-time
    compiles: operands and G in the operands' dtype, statistics fp32, sizes and strides i32."""
    if name in ("A", "B", "G"):
        return "*" + dtype
    if name in ("LSE_R", "LSE_C", "PS", "ROW_PART", "COL_PART"):
        return "*fp32"
    if name in ("scale_log2", "diag_value"):
        return scale_type
    return "i32"


# ---- backend contract (see slpfast.ops.contrastive_chunked) ------------------------------------

def fwd_pair(X, Y, s: float):
    """X, Y (N, D) -> (lse_a, lse_b): row and column LSE of ``s * X @ Y.T``, from one pass over
    the S tiles (:func:`tile_lse`)."""
    with on_device(X.device):
        return tile_lse(X, Y, s)


def fwd_row(A, B, s: float):
    """A (M, D), B (K, D) -> lse (M,) fp32: row log-sum-exp of ``s * A @ B.T``."""
    with on_device(A.device):
        return tile_lse(A, B, s, cols=False)[0]


def bwd_pair(X, Y, s: float, lse_a, lse_b, need_gtx: bool = True):
    """-> (G @ Y, G.T @ X or None, sum(G * S)), G_ij = exp(s S_ij - lse_a_i) + exp(s S_ij - lse_b_j) - 2 [i == j]."""
    with on_device(X.device):
        return grad_products(X, Y, s, lse_row=lse_a, lse_col=lse_b, labels=2.0, need_gtb=need_gtx)


def bwd_row(A, B, s: float, lse, offset: int = 0, need_pta: bool = True):
    """-> (P @ B, P.T @ A or None, sum(P * S)), P_ij = exp(s S_ij - lse_i) - [j == offset + i], S = A @ B.T."""
    with on_device(A.device):
        return grad_products(A, B, s, lse_row=lse, offset=offset, need_gtb=need_pta)
