"""Backward Triton kernel of masked attention (FlashAttention-2), one launch: dK/dV and dQ.

Deterministic: each program owns its output rows (no atomics). With ``S = scale * q k^T``,
``P = exp(S - LSE)`` and ``Delta_i = sum_d dO_i * O_i``:

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - Delta),   dK = scale * dS^T Q,   dQ = scale * dS K

One launch does all of it: even programs compute dK, dV of a key block, odd programs dQ of a
query block, and each computes the Delta of the query rows it reads from ``O`` and ``dO``
instead of a separate Delta pre-pass. The price: each dK/dV step loads an O tile beside its Q
and dO tiles, and Delta is recomputed once per key block; the kernel's registers are those of
its heavier (dK/dV) role. What it buys: on pose-length sequences the backward is short enough
that launches set the pace, and one launch instead of three saves two launches' host time and
two kernel boundaries, with both roles filling the GPU together. (Not yet timed on a GPU:
``bench/attn.py`` records its device time beside the host's.)
Rows past a length contribute nothing (their P is masked to 0) and get zero gradients; the
layout conventions are those of :mod:`attention_fwd`.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .attention_fwd import _load_tile, _program_block, _program_sequence, _store_rows


@triton.jit
def _row_delta(o, do):
    """Delta of a tile's rows: sum_d O * dO in fp32 (masked rows were loaded as 0: Delta 0)."""
    return tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_base, do_base, o_base, s_qt, s_gt, lse_base, lo, hi, L, offs_n, offs_m0,
                offs_d, d_ok, qk_scale, MASK: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr,
                DOT_PREC: tl.constexpr, BLOCK_M: tl.constexpr):
    """Accumulate dK, dV of one key block over query blocks [lo, hi)."""
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        row_ok = offs_m < L
        q = _load_tile(q_base + offs_m[:, None] * s_qt + offs_d[None, :], row_ok, d_ok, MASK, EVEN_D)
        do = _load_tile(do_base + offs_m[:, None] * s_gt + offs_d[None, :], row_ok, d_ok, MASK, EVEN_D)
        o = _load_tile(o_base + offs_m[:, None] * s_gt + offs_d[None, :], row_ok, d_ok, MASK, EVEN_D)
        if MASK:
            lse = tl.load(lse_base + offs_m, mask=row_ok, other=0.0)
        else:
            lse = tl.load(lse_base + offs_m)
        delta = _row_delta(o, do)
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
def _dkdv_program(Q, K, V, O, DO, DK, DV, LSE, bi, start, h, L, n_start,
                  s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_gb, s_gt, s_gh, s_lh, T, qk_scale, scale,
                  VARLEN: tl.constexpr, CAUSAL: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, DOT_PREC: tl.constexpr):
    """dK, dV of the key block starting at ``n_start`` (< L), streaming query blocks of BLOCK_M."""
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    key_ok = offs_n < L
    k = _load_tile(K + bi * s_kb + start * s_kt + h * s_kh + offs_n[:, None] * s_kt + offs_d[None, :], key_ok, d_ok,
                   True, EVEN_D)
    v = _load_tile(V + bi * s_vb + start * s_vt + h * s_vh + offs_n[:, None] * s_vt + offs_d[None, :], key_ok, d_ok,
                   True, EVEN_D)
    g_off = bi * s_gb + start * s_gt + h * s_gh
    q_base = Q + bi * s_qb + start * s_qt + h * s_qh
    lse_base = LSE + h * s_lh + bi * T + start
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    if CAUSAL:
        m_lo = (n_start // BLOCK_M) * BLOCK_M  # earlier query rows see no key of this block
        m_mid = tl.cdiv(n_start + BLOCK_N - 1, BLOCK_M) * BLOCK_M  # from here every row sees every key
    else:
        m_lo = n_start * 0
        m_mid = n_start * 0
    L_floor = (L // BLOCK_M) * BLOCK_M
    # diagonal query blocks (masked), interior blocks (unmasked), the last partial block (masked)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, DO + g_off, O + g_off, s_qt, s_gt, lse_base, m_lo,
                         tl.minimum(m_mid, L), L, offs_n, offs_m0, offs_d, d_ok, qk_scale, True, CAUSAL, EVEN_D,
                         DOT_PREC, BLOCK_M)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, DO + g_off, O + g_off, s_qt, s_gt, lse_base, m_mid, L_floor, L,
                         offs_n, offs_m0, offs_d, d_ok, qk_scale, False, CAUSAL, EVEN_D, DOT_PREC, BLOCK_M)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, DO + g_off, O + g_off, s_qt, s_gt, lse_base,
                         tl.maximum(m_mid, L_floor), L, L, offs_n, offs_m0, offs_d, d_ok, qk_scale, True, CAUSAL,
                         EVEN_D, DOT_PREC, BLOCK_M)
    tile = offs_n[:, None] * s_gt + offs_d[None, :]
    _store_rows(DK + g_off + tile, dk * scale, offs_n, L, T, d_ok, VARLEN, EVEN_D)
    _store_rows(DV + g_off + tile, dv, offs_n, L, T, d_ok, VARLEN, EVEN_D)


@triton.jit
def _dq_inner(dq, q, do, lse2, delta, k_base, v_base, s_kt, s_vt, lo, hi, L, offs_m, offs_n0, offs_d, d_ok,
              qk_scale, MASK: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr, DOT_PREC: tl.constexpr,
              STEP: tl.constexpr):
    """Accumulate dQ of one query block over key blocks of STEP rows in [lo, hi)."""
    for start_n in range(lo, hi, STEP):
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
def _dq_program(Q, K, V, O, DO, DQ, LSE, bi, start, h, L, m_start,
                s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_gb, s_gt, s_gh, s_lh, T, qk_scale, scale,
                VARLEN: tl.constexpr, CAUSAL: tl.constexpr, D: tl.constexpr, ROWS: tl.constexpr,
                STEP: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, DOT_PREC: tl.constexpr):
    """dQ of the ROWS query rows starting at ``m_start`` (< L), streaming key blocks of STEP."""
    offs_m = m_start + tl.arange(0, ROWS)
    offs_n0 = tl.arange(0, STEP)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    row_ok = offs_m < L
    g_off = bi * s_gb + start * s_gt + h * s_gh
    tile = offs_m[:, None] * s_gt + offs_d[None, :]
    q = _load_tile(Q + bi * s_qb + start * s_qt + h * s_qh + offs_m[:, None] * s_qt + offs_d[None, :], row_ok, d_ok,
                   True, EVEN_D)
    do = _load_tile(DO + g_off + tile, row_ok, d_ok, True, EVEN_D)
    delta = _row_delta(_load_tile(O + g_off + tile, row_ok, d_ok, True, EVEN_D), do)
    lse2 = tl.load(LSE + h * s_lh + bi * T + start + offs_m, mask=row_ok, other=0.0) * 1.4426950408889634
    k_base = K + bi * s_kb + start * s_kt + h * s_kh
    v_base = V + bi * s_vb + start * s_vt + h * s_vh
    dq = tl.zeros([ROWS, BLOCK_D], tl.float32)
    if CAUSAL:
        hi = tl.minimum(L, m_start + ROWS)
        full_end = (tl.minimum(L, m_start + 1) // STEP) * STEP
    else:
        hi = L
        full_end = (L // STEP) * STEP
    dq = _dq_inner(dq, q, do, lse2, delta, k_base, v_base, s_kt, s_vt, 0, full_end, L, offs_m, offs_n0, offs_d,
                   d_ok, qk_scale, False, CAUSAL, EVEN_D, DOT_PREC, STEP)
    dq = _dq_inner(dq, q, do, lse2, delta, k_base, v_base, s_kt, s_vt, full_end, hi, L, offs_m, offs_n0, offs_d,
                   d_ok, qk_scale, True, CAUSAL, EVEN_D, DOT_PREC, STEP)
    _store_rows(DQ + g_off + tile, dq * scale, offs_m, L, T, d_ok, VARLEN, EVEN_D)


@triton.jit
def attn_bwd_kernel(
    Q, K, V, O, DO, DQ, DK, DV, LSE, LENS,
    s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_gb, s_gt, s_gh, s_lh,
    T, H, scale, MAX_SEQLEN_KEY, GRID_ROWS,
    D: tl.constexpr, VARLEN: tl.constexpr, HAS_LENS: tl.constexpr, CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Grid (B*H * 2 * cdiv(GRID_ROWS, BLOCK_N),), per (sequence, head) 2 * cdiv(GRID_ROWS, BLOCK_N)
    programs (see ``_program_block``). Program 2i: dK, dV of key rows [i*BLOCK_N, +BLOCK_N)
    over query blocks of BLOCK_M; program 2i+1: dQ of query rows [i*BLOCK_N, +BLOCK_N) over key
    blocks of BLOCK_M (both roles keep BLOCK_N rows resident and stream BLOCK_M-row tiles).
    O, dO, dQ, dK and dV share the strides s_g*."""
    pid, pid_bh = _program_block(2 * tl.cdiv(GRID_ROWS, BLOCK_N))
    h, bi, start, L = _program_sequence(pid_bh, LENS, T, H, VARLEN, HAS_LENS)
    b_start = (pid // 2) * BLOCK_N
    is_dkdv = pid % 2 == 0
    if b_start >= L:  # past the end: padded rows get zero gradients; packed programs have nothing to do
        if not VARLEN:
            offs = b_start + tl.arange(0, BLOCK_N)
            offs_d = tl.arange(0, BLOCK_D)
            tile = bi * s_gb + h * s_gh + offs[:, None] * s_gt + offs_d[None, :]
            zero = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
            if is_dkdv:
                _store_rows(DK + tile, zero, offs, L, T, offs_d < D, VARLEN, EVEN_D)
                _store_rows(DV + tile, zero, offs, L, T, offs_d < D, VARLEN, EVEN_D)
            else:
                _store_rows(DQ + tile, zero, offs, L, T, offs_d < D, VARLEN, EVEN_D)
        return

    scale = tl.cast(scale, tl.float32)  # torch.compile (inductor) passes Python floats as fp64
    qk_scale = scale * 1.4426950408889634  # exp2 domain
    if is_dkdv:
        _dkdv_program(Q, K, V, O, DO, DK, DV, LSE, bi, start, h, L, b_start,
                      s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_gb, s_gt, s_gh, s_lh, T, qk_scale,
                      scale, VARLEN, CAUSAL, D, BLOCK_M, BLOCK_N, BLOCK_D, EVEN_D, DOT_PREC)
    else:
        _dq_program(Q, K, V, O, DO, DQ, LSE, bi, start, h, L, b_start,
                    s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_gb, s_gt, s_gh, s_lh, T, qk_scale,
                    scale, VARLEN, CAUSAL, D, BLOCK_N, BLOCK_M, BLOCK_D, EVEN_D, DOT_PREC)
