"""Forward Triton kernel of masked attention (FlashAttention-2 online softmax) and shared helpers.

Tensors are addressed as ``(batch, token, head, dim)`` with strides; the dim stride is 1.

- padded (``VARLEN=False``): sequence ``b`` is ``x[b, :L_b]`` with ``L_b = seq_lens[b]``
  (or ``T`` without lengths); rows ``L_b <= t < T`` are written as 0.
- packed (``VARLEN=True``): sequence ``b`` is ``x[cu[b]:cu[b+1]]`` (batch stride 0).

The LSE lives in an fp32 buffer ``(H, rows)`` with ``rows = B*T`` (padded) or ``total``
(packed); sequence ``b`` starts at row ``bi*T + start`` there. No ``T x T`` mask exists anywhere:
masks are computed from indices inside the tile, and only for tiles that straddle a length or
the causal diagonal (``MASK=True``); interior tiles run unmasked.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _program_block(PER_SEQUENCE):
    """The 1-D grid is (sequence b, head h) x ``PER_SEQUENCE`` programs, the programs of one
    (b, h) adjacent (as a 2-D grid with them on axis 0 would launch them, for the L2 reuse of
    its K / V). One axis because axis 1 of a CUDA grid stops at 65,535: a packed batch of many
    short clips has more (b, h) pairs than that. -> (program within its (b, h), b * H + h)."""
    pid = tl.program_id(0)
    return pid % PER_SEQUENCE, pid // PER_SEQUENCE


@triton.jit
def _program_sequence(pid_bh, LENS, T, H, VARLEN: tl.constexpr, HAS_LENS: tl.constexpr):
    """(sequence b, head h) = ``pid_bh`` -> (h, batch index for the batch stride, first token,
    length)."""
    b = pid_bh // H
    h = pid_bh % H
    if VARLEN:
        start = tl.load(LENS + b).to(tl.int64)
        length = (tl.load(LENS + b + 1).to(tl.int64) - start).to(tl.int32)
        bi = b * 0
    else:
        start = (b * 0).to(tl.int64)
        if HAS_LENS:
            length = tl.load(LENS + b).to(tl.int32)
        else:
            length = b * 0 + T
        bi = b
    return h, bi.to(tl.int64), start, length


@triton.jit
def _load_tile(ptrs, row_ok, d_ok, MASK_ROWS: tl.constexpr, EVEN_D: tl.constexpr):
    """Load a (rows, BLOCK_D) tile; masked rows / padded dims read as 0."""
    if MASK_ROWS:
        if EVEN_D:
            x = tl.load(ptrs, mask=row_ok[:, None], other=0.0)
        else:
            x = tl.load(ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    else:
        if EVEN_D:
            x = tl.load(ptrs)
        else:
            x = tl.load(ptrs, mask=d_ok[None, :], other=0.0)
    return x


@triton.jit
def _store_rows(ptrs, x, offs, L, T, d_ok, VARLEN: tl.constexpr, EVEN_D: tl.constexpr):
    """Store a (rows, BLOCK_D) tile: rows >= L get 0; packed stores stop at L, padded at T."""
    x = tl.where((offs < L)[:, None], x, 0.0)
    if VARLEN:
        in_buf = offs < L
    else:
        in_buf = offs < T
    if EVEN_D:
        tl.store(ptrs, x.to(ptrs.dtype.element_ty), mask=in_buf[:, None])
    else:
        tl.store(ptrs, x.to(ptrs.dtype.element_ty), mask=in_buf[:, None] & d_ok[None, :])


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_base, v_base, s_kt, s_vt, lo, hi, L, offs_m, offs_n0, offs_d, d_ok, qk_scale,
               MASK: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr, DOT_PREC: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """Online softmax over key blocks [lo, hi); ``MASK`` applies the length and causal masks."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        key_ok = offs_n < L
        k = _load_tile(k_base + offs_n[:, None] * s_kt + offs_d[None, :], key_ok, d_ok, MASK, EVEN_D)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
        if MASK:
            ok = key_ok[None, :]
            if CAUSAL:
                ok = ok & (offs_m[:, None] >= offs_n[None, :])
            s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(v_base + offs_n[:, None] * s_vt + offs_d[None, :], key_ok, d_ok, MASK, EVEN_D)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def attn_fwd_kernel(
    Q, K, V, O, LSE, LENS,
    s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_ob, s_ot, s_oh, s_lh,
    T, H, scale, MAX_SEQLEN_KEY, GRID_ROWS,
    D: tl.constexpr, VARLEN: tl.constexpr, HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (B*H * cdiv(GRID_ROWS, BLOCK_M),): per (sequence, head) one program per BLOCK_M query
    rows of the longest (GRID_ROWS) rows. Writes O (rows past L: 0) and LSE (natural log)."""
    pid_m, pid_bh = _program_block(tl.cdiv(GRID_ROWS, BLOCK_M))
    h, bi, start, L = _program_sequence(pid_bh, LENS, T, H, VARLEN, HAS_LENS)
    m_start = pid_m * BLOCK_M
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    # per-sequence base pointers in 64-bit arithmetic; in-tile offsets stay 32-bit
    o_base = O + bi * s_ob + start * s_ot + h * s_oh
    lse_base = LSE + h * s_lh + bi * T + start
    if m_start >= L:  # past the end: padded rows are zeros; packed programs have nothing to do
        if not VARLEN:
            _store_rows(o_base + offs_m[:, None] * s_ot + offs_d[None, :], tl.zeros([BLOCK_M, BLOCK_D], tl.float32),
                        offs_m, L, T, d_ok, VARLEN, EVEN_D)
            tl.store(lse_base + offs_m, tl.zeros([BLOCK_M], tl.float32), mask=offs_m < T)
        return

    row_ok = offs_m < L
    q = _load_tile(Q + bi * s_qb + start * s_qt + h * s_qh + offs_m[:, None] * s_qt + offs_d[None, :], row_ok, d_ok,
                   True, EVEN_D)
    k_base = K + bi * s_kb + start * s_kt + h * s_kh
    v_base = V + bi * s_vb + start * s_vt + h * s_vh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    scale = tl.cast(scale, tl.float32)  # torch.compile (inductor) passes Python floats as fp64
    qk_scale = scale * 1.4426950408889634  # exp2 domain
    if CAUSAL:
        hi = tl.minimum(L, m_start + BLOCK_M)
        full_end = (tl.minimum(L, m_start + 1) // BLOCK_N) * BLOCK_N
    else:
        hi = L
        full_end = (L // BLOCK_N) * BLOCK_N
    # key blocks wholly inside the length (and below the diagonal): no masks
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, s_kt, s_vt, 0, full_end, L, offs_m, offs_n0,
                               offs_d, d_ok, qk_scale, False, CAUSAL, EVEN_D, DOT_PREC, BLOCK_N)
    # the last partial block and the diagonal blocks
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, s_kt, s_vt, full_end, hi, L, offs_m, offs_n0,
                               offs_d, d_ok, qk_scale, True, CAUSAL, EVEN_D, DOT_PREC, BLOCK_N)
    # every row of a live block sees key 0, so l_i >= 1 and m_i is finite: no NaN
    out = acc / l_i[:, None]
    lse = (m_i + tl.math.log2(l_i)) / 1.4426950408889634
    _store_rows(o_base + offs_m[:, None] * s_ot + offs_d[None, :], out, offs_m, L, T, d_ok, VARLEN, EVEN_D)
    lse = tl.where(row_ok, lse, 0.0)
    if VARLEN:
        tl.store(lse_base + offs_m, lse, mask=row_ok)
    else:
        tl.store(lse_base + offs_m, lse, mask=offs_m < T)
