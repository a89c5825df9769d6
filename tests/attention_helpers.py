"""Shared helpers of the attention tests: random ragged inputs and the float64-relative check.

Tolerance rule: ``|fast - ref64| <= 2 * |ref_low - ref64| + floor``, where ``ref64`` is the
reference in float64 and ``ref_low`` the reference run on the inputs of the dtype under test.
For float16/bfloat16 the reference computes in float32 and rounds once (as the fused kernels
accumulate), so its error is about the rounding of the result to that dtype; ``floor`` (relative
to the largest reference value) leaves room for the kernels' rounding of intermediate
probabilities, which the reference does not share.
"""
from __future__ import annotations

import torch

from slpfast.ops._validate import lengths_to_cu_seqlens
from slpfast.reference import attention as ref

FLOOR = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float64: 1e-12}


def make_lengths(batch: int, T: int, *, zero: bool = True, full: bool = True) -> torch.Tensor:
    """(batch,) int32 lengths in [0, T]; includes a 0 and a T when batch allows."""
    lens = torch.randint(0, T + 1, (batch,), dtype=torch.int32)
    if full and batch >= 1:
        lens[0] = T
    if zero and batch >= 2:
        lens[1] = 0
    return lens


def make_qkv(shape, dtype, device="cpu"):
    return [torch.randn(shape, dtype=torch.float64).to(device=device, dtype=dtype).requires_grad_() for _ in range(3)]


def cu_from_lengths(lens: torch.Tensor) -> torch.Tensor:
    return lengths_to_cu_seqlens(lens, torch.int32)


def run_with_grads(fn, q, k, v, grad_out):
    """fn(q, k, v) -> out; returns (out, dq, dk, dv) computed at the inputs' dtype."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    if not out.requires_grad:  # e.g. the reference with no rows at all: nothing to differentiate
        return [out.detach()] + [torch.zeros_like(t) for t in (q, k, v)]
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad_out.to(out.dtype), allow_unused=True)
    dq, dk, dv = (torch.zeros_like(t) if g is None else g for g, t in zip((dq, dk, dv), (q, k, v)))
    return [t.detach() for t in (out, dq, dk, dv)]


def assert_matches_reference(fast_fn, q, k, v, *, packed: bool, lens_or_cu, causal: bool, scale=None,
                             max_seqlen=None, check_grads: bool = True):
    """Compare ``fast_fn(q, k, v)`` (output and all three gradients) with the float64 reference."""
    kw = dict(causal=causal, scale=scale, max_seqlen=max_seqlen)
    kw.update(cu_seqlens=lens_or_cu) if packed else kw.update(seq_lens=lens_or_cu)

    def ref_fn(a, b, c):
        return ref.masked_attention(a, b, c, **kw)

    grad_out = torch.randn(q.shape, dtype=torch.float64, device=q.device)
    names = ("out", "dq", "dk", "dv")
    if not check_grads:
        with torch.no_grad():
            fast = [fast_fn(q, k, v)]
            want = [ref_fn(*(t.double() for t in (q, k, v)))]
            low = [ref_fn(q, k, v)]
    else:
        fast = run_with_grads(fast_fn, q, k, v, grad_out)
        want = run_with_grads(ref_fn, *(t.double() for t in (q, k, v)), grad_out)
        low = run_with_grads(ref_fn, q, k, v, grad_out)
    for name, got, w, lo in zip(names, fast, want, low):
        assert got.shape == w.shape and got.dtype == q.dtype, (name, got.shape, got.dtype)
        assert torch.isfinite(got).all(), f"{name}: non-finite values"
        err = (got.double() - w).abs().max().item() if got.numel() else 0.0
        ref_err = (lo.double() - w).abs().max().item() if got.numel() else 0.0
        floor = FLOOR[q.dtype] * max(1.0, w.abs().max().item() if w.numel() else 1.0)
        assert err <= 2 * ref_err + floor, f"{name}: error {err:.3g} > 2 x reference error {ref_err:.3g} + {floor:.3g}"
    return fast


def assert_padding_is_zero(out, grads, lens):
    """Rows past each length: output 0 and zero gradients (padded layout)."""
    T = out.shape[1]
    pad = torch.arange(T, device=out.device)[None, :] >= lens.to(out.device)[:, None]
    for name, t in zip(("out", "dq", "dk", "dv"), (out, *grads)):
        assert (t[pad] == 0).all(), f"{name}: padding rows are not zero"
