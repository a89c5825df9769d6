"""Backward Triton kernels of masked attention (FlashAttention-2): Delta pre-pass, dK/dV, dQ.

Deterministic: each program owns its output rows (no atomics). With ``S = scale * q k^T``,
``P = exp(S - LSE)`` and ``Delta_i = sum_d dO_i * O_i``:

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - Delta),   dK = scale * dS^T Q,   dQ = scale * dS K

Rows past a length contribute nothing (their P is masked to 0) and get zero gradients; the
layout conventions are those of :mod:`attention_fwd`.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .attention_fwd import _load_tile, _program_sequence, _store_rows


@triton.jit
def attn_bwd_delta_kernel(O, DO, DELTA, ROWS, s_or, s_oh, s_dor, s_doh, s_dh,
                          D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """Grid (cdiv(rows, BLOCK_R), H): Delta[h, r] = sum_d O[r, h, d] * dO[r, h, d] in fp32."""
    h = tl.program_id(1)
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_r < ROWS)[:, None] & (offs_d < D)[None, :]
    rows = offs_r.to(tl.int64)[:, None]
    o = tl.load(O + rows * s_or + h * s_oh + offs_d[None, :], mask=ok, other=0.0).to(tl.float32)
    do = tl.load(DO + rows * s_dor + h * s_doh + offs_d[None, :], mask=ok, other=0.0).to(tl.float32)
    tl.store(DELTA + h * s_dh + offs_r, tl.sum(o * do, 1), mask=offs_r < ROWS)


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_base, do_base, s_qt, s_dot, lse_base, delta_base, lo, hi, L, offs_n, offs_m0,
                offs_d, d_ok, qk_scale, MASK: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr,
                DOT_PREC: tl.constexpr, BLOCK_M: tl.constexpr):
    """Accumulate dK, dV of one key block over query blocks [lo, hi)."""
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        row_ok = offs_m < L
        q = _load_tile(q_base + offs_m[:, None] * s_qt + offs_d[None, :], row_ok, d_ok, MASK, EVEN_D)
        do = _load_tile(do_base + offs_m[:, None] * s_dot + offs_d[None, :], row_ok, d_ok, MASK, EVEN_D)
        if MASK:
            lse = tl.load(lse_base + offs_m, mask=row_ok, other=0.0)
            delta = tl.load(delta_base + offs_m, mask=row_ok, other=0.0)
        else:
            lse = tl.load(lse_base + offs_m)
            delta = tl.load(delta_base + offs_m)
        s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * qk_scale  # (BLOCK_N, BLOCK_M)
        p_t = tl.math.exp2(s_t - lse[None, :] * 1.4426950408889634)
        if MASK:
            ok = row_ok[None, :]
            if CAUSAL:
                ok = ok & (offs_m[None, :] >= offs_n[:, None])
            p_t = tl.where(ok, p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PREC)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=DOT_PREC)
    return dk, dv


@triton.jit
def attn_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA, LENS,
    s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_db, s_dt, s_dh, s_gb, s_gt, s_gh, s_lh,
    T, H, scale, MAX_SEQLEN_KEY,
    D: tl.constexpr, VARLEN: tl.constexpr, HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (cdiv(max rows, BLOCK_N), B*H): dK, dV of one key block (DK, DV share strides s_g*)."""
    pid_n = tl.program_id(0)
    h, bi, start, L = _program_sequence(LENS, T, H, VARLEN, HAS_LENS)
    n_start = pid_n * BLOCK_N
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    # per-sequence base pointers in 64-bit arithmetic; in-tile offsets stay 32-bit
    g_off = bi * s_gb + start * s_gt + h * s_gh
    if n_start >= L:
        if not VARLEN:
            zero = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
            tile = offs_n[:, None] * s_gt + offs_d[None, :]
            _store_rows(DK + g_off + tile, zero, offs_n, L, T, d_ok, VARLEN, EVEN_D)
            _store_rows(DV + g_off + tile, zero, offs_n, L, T, d_ok, VARLEN, EVEN_D)
        return

    key_ok = offs_n < L
    k = _load_tile(K + bi * s_kb + start * s_kt + h * s_kh + offs_n[:, None] * s_kt + offs_d[None, :], key_ok, d_ok,
                   True, EVEN_D)
    v = _load_tile(V + bi * s_vb + start * s_vt + h * s_vh + offs_n[:, None] * s_vt + offs_d[None, :], key_ok, d_ok,
                   True, EVEN_D)
    q_base = Q + bi * s_qb + start * s_qt + h * s_qh
    do_base = DO + bi * s_db + start * s_dt + h * s_dh
    lse_base = LSE + h * s_lh + bi * T + start
    delta_base = DELTA + h * s_lh + bi * T + start
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    scale = tl.cast(scale, tl.float32)  # torch.compile (inductor) passes Python floats as fp64
    qk_scale = scale * 1.4426950408889634
    if CAUSAL:
        m_lo = (n_start // BLOCK_M) * BLOCK_M  # earlier query rows see no key of this block
        m_mid = tl.cdiv(n_start + BLOCK_N - 1, BLOCK_M) * BLOCK_M  # from here every row sees every key
    else:
        m_lo = n_start * 0
        m_mid = n_start * 0
    L_floor = (L // BLOCK_M) * BLOCK_M
    # diagonal query blocks (masked), interior blocks (unmasked), the last partial block (masked)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, s_qt, s_dt, lse_base, delta_base, m_lo,
                         tl.minimum(m_mid, L), L, offs_n, offs_m0, offs_d, d_ok, qk_scale, True, CAUSAL, EVEN_D,
                         DOT_PREC, BLOCK_M)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, s_qt, s_dt, lse_base, delta_base, m_mid, L_floor, L,
                         offs_n, offs_m0, offs_d, d_ok, qk_scale, False, CAUSAL, EVEN_D, DOT_PREC, BLOCK_M)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, s_qt, s_dt, lse_base, delta_base,
                         tl.maximum(m_mid, L_floor), L, L, offs_n, offs_m0, offs_d, d_ok, qk_scale, True, CAUSAL,
                         EVEN_D, DOT_PREC, BLOCK_M)
    tile = offs_n[:, None] * s_gt + offs_d[None, :]
    _store_rows(DK + g_off + tile, dk * scale, offs_n, L, T, d_ok, VARLEN, EVEN_D)
    _store_rows(DV + g_off + tile, dv, offs_n, L, T, d_ok, VARLEN, EVEN_D)


@triton.jit
def _dq_inner(dq, q, do, lse2, delta, k_base, v_base, s_kt, s_vt, lo, hi, L, offs_m, offs_n0, offs_d, d_ok,
              qk_scale, MASK: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr, DOT_PREC: tl.constexpr,
              BLOCK_N: tl.constexpr):
    """Accumulate dQ of one query block over key blocks [lo, hi)."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        key_ok = offs_n < L
        k = _load_tile(k_base + offs_n[:, None] * s_kt + offs_d[None, :], key_ok, d_ok, MASK, EVEN_D)
        v = _load_tile(v_base + offs_n[:, None] * s_vt + offs_d[None, :], key_ok, d_ok, MASK, EVEN_D)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
        p = tl.math.exp2(s - lse2[:, None])
        if MASK:
            ok = key_ok[None, :]
            if CAUSAL:
                ok = ok & (offs_m[:, None] >= offs_n[None, :])
            p = tl.where(ok, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PREC)
    return dq


@triton.jit
def attn_bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA, LENS,
    s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_db, s_dt, s_dh, s_gb, s_gt, s_gh, s_lh,
    T, H, scale, MAX_SEQLEN_KEY,
    D: tl.constexpr, VARLEN: tl.constexpr, HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (cdiv(max rows, BLOCK_M), B*H): dQ of one query block (DQ strides s_g*)."""
    pid_m = tl.program_id(0)
    h, bi, start, L = _program_sequence(LENS, T, H, VARLEN, HAS_LENS)
    m_start = pid_m * BLOCK_M
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    dq_base = DQ + bi * s_gb + start * s_gt + h * s_gh
    if m_start >= L:
        if not VARLEN:
            _store_rows(dq_base + offs_m[:, None] * s_gt + offs_d[None, :], tl.zeros([BLOCK_M, BLOCK_D], tl.float32),
                        offs_m, L, T, d_ok, VARLEN, EVEN_D)
        return

    row_ok = offs_m < L
    q = _load_tile(Q + bi * s_qb + start * s_qt + h * s_qh + offs_m[:, None] * s_qt + offs_d[None, :], row_ok, d_ok,
                   True, EVEN_D)
    do = _load_tile(DO + bi * s_db + start * s_dt + h * s_dh + offs_m[:, None] * s_dt + offs_d[None, :], row_ok,
                    d_ok, True, EVEN_D)
    lse2 = tl.load(LSE + h * s_lh + bi * T + start + offs_m, mask=row_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + h * s_lh + bi * T + start + offs_m, mask=row_ok, other=0.0)
    k_base = K + bi * s_kb + start * s_kt + h * s_kh
    v_base = V + bi * s_vb + start * s_vt + h * s_vh
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    scale = tl.cast(scale, tl.float32)  # torch.compile (inductor) passes Python floats as fp64
    qk_scale = scale * 1.4426950408889634
    if CAUSAL:
        hi = tl.minimum(L, m_start + BLOCK_M)
        full_end = (tl.minimum(L, m_start + 1) // BLOCK_N) * BLOCK_N
    else:
        hi = L
        full_end = (L // BLOCK_N) * BLOCK_N
    dq = _dq_inner(dq, q, do, lse2, delta, k_base, v_base, s_kt, s_vt, 0, full_end, L, offs_m, offs_n0, offs_d,
                   d_ok, qk_scale, False, CAUSAL, EVEN_D, DOT_PREC, BLOCK_N)
    dq = _dq_inner(dq, q, do, lse2, delta, k_base, v_base, s_kt, s_vt, full_end, hi, L, offs_m, offs_n0, offs_d,
                   d_ok, qk_scale, True, CAUSAL, EVEN_D, DOT_PREC, BLOCK_N)
    _store_rows(dq_base + offs_m[:, None] * s_gt + offs_d[None, :], dq * scale, offs_m, L, T, d_ok, VARLEN, EVEN_D)
