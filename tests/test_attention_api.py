"""masked_attention: validation, dispatch rules, the non-Triton backends, the module, torch.compile."""
from __future__ import annotations

import math
import os

import pytest
import torch

from attention_helpers import (assert_matches_reference, assert_padding_is_zero, cu_from_lengths, make_lengths,
                               make_qkv, run_with_grads)
from slpfast.nn import MaskedSelfAttention
from slpfast.ops import masked_attention
from slpfast.ops.attention import DISPATCHER
from slpfast.reference import attention as ref


def _attn(backend, **kw):
    return lambda q, k, v: masked_attention(q, k, v, backend=backend, **kw)


# ------------------------------------------------------------------------------- backends
@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_backend_padded_matches_reference(backend, causal, dtype):
    B, T, H, D = 4, 17, 2, 32
    lens = make_lengths(B, T)
    q, k, v = make_qkv((B, T, H, D), dtype)
    out, *grads = assert_matches_reference(_attn(backend, seq_lens=lens, causal=causal), q, k, v, packed=False,
                                           lens_or_cu=lens, causal=causal)
    assert_padding_is_zero(out, grads, lens)


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("causal", [False, True])
def test_backend_packed_matches_reference(backend, causal):
    lens = torch.tensor([5, 0, 17, 1], dtype=torch.int32)
    cu = cu_from_lengths(lens)
    q, k, v = make_qkv((int(lens.sum()), 3, 16), torch.float32)
    assert_matches_reference(_attn(backend, cu_seqlens=cu, causal=causal), q, k, v, packed=True, lens_or_cu=cu,
                             causal=causal)


@pytest.mark.parametrize("packed", [False, True])
def test_flex_forward_on_cpu(packed):
    """Flex runs forward-only on CPU (no backward there); the GPU tests cover its backward."""
    lens = torch.tensor([9, 0, 4], dtype=torch.int32)
    if packed:
        cu = cu_from_lengths(lens)
        q, k, v = make_qkv((13, 2, 16), torch.float32)
        kw = dict(cu_seqlens=cu)
    else:
        q, k, v = make_qkv((3, 9, 2, 16), torch.float32)
        kw = dict(seq_lens=lens)
    for causal in (False, True):
        assert_matches_reference(_attn("flex", causal=causal, **kw), q, k, v, packed=packed,
                                 lens_or_cu=kw.get("cu_seqlens", lens), causal=causal, check_grads=False)


def test_sdpa_dense_and_equal_length_packed_take_the_unmasked_path():
    B, T, H, D = 3, 8, 2, 16
    q, k, v = make_qkv((B, T, H, D), torch.float32)
    want = ref.attention_padded(q, k, v, torch.full((B,), T), causal=True)
    got = masked_attention(q, k, v, causal=True, backend="sdpa")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    cu = torch.arange(0, B * T + 1, T, dtype=torch.int32)
    got = masked_attention(*(t.reshape(B * T, H, D) for t in (q, k, v)), cu_seqlens=cu, causal=True, backend="sdpa")
    torch.testing.assert_close(got, want.reshape(B * T, H, D), atol=1e-5, rtol=1e-5)


def test_scale_and_all_zero_lengths():
    q, k, v = make_qkv((2, 5, 1, 8), torch.float32)
    for backend in ("eager", "sdpa"):
        got = masked_attention(q, k, v, scale=0.3, backend=backend)
        want = ref.attention_padded(q.double(), k.double(), v.double(), torch.tensor([5, 5]), scale=0.3)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
        lens = torch.zeros(2, dtype=torch.int64)
        out, *grads = run_with_grads(_attn(backend, seq_lens=lens), q, k, v, torch.randn(q.shape))
        assert_padding_is_zero(out, grads, lens)


@pytest.mark.parametrize("backend", ["eager", "sdpa", "flex"])
@pytest.mark.parametrize("fill", [float("nan"), float("inf"), 1e30])
def test_padding_contents_never_reach_valid_rows(backend, fill):
    """Whatever padding rows hold (garbage, inf, NaN), outputs and gradients equal those of zero
    padding: valid rows unchanged, padding rows 0, never NaN. Packed: a non-finite row of one
    sequence stays inside that sequence."""
    B, T, H, D = 3, 7, 2, 16
    lens = torch.tensor([7, 3, 0])
    pad = torch.arange(T)[None, :] >= lens[:, None]
    clean = [t.detach() for t in make_qkv((B, T, H, D), torch.float32)]
    for t in clean:
        t[pad] = 0
    dirty = [t.clone() for t in clean]
    for t in dirty:
        t[pad] = fill
    g = torch.randn(B, T, H, D)
    fn = _attn(backend, seq_lens=lens)
    if backend == "flex":  # forward only on CPU
        with torch.no_grad():
            want, got = fn(*clean), fn(*dirty)
        torch.testing.assert_close(got, want)
        assert (got[pad] == 0).all()
    else:
        want = run_with_grads(fn, *clean, g)
        got = run_with_grads(fn, *dirty, g)
        for w, x in zip(want, got):
            torch.testing.assert_close(x, w)
        assert_padding_is_zero(got[0], got[1:], lens)
    # packed: row 0 (sequence 0) is inf; sequence 1 must not see it through the padded gather
    q, k, v = (t.detach().reshape(B * T, H, D)[:8].clone() for t in clean)
    q[0] = float("inf")
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    with torch.no_grad():
        out = masked_attention(q, k, v, cu_seqlens=cu, backend=backend)
        want = masked_attention(q[3:], k[3:], v[3:], cu_seqlens=torch.tensor([0, 5], dtype=torch.int32),
                                backend=backend)
    torch.testing.assert_close(out[3:], want)


@pytest.mark.parametrize("backend", ["sdpa", "flex", "triton"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_non_finite_valid_rows_give_nan_where_the_reference_does(backend, padded, causal, where):
    """A NaN / inf in a *valid* row is not hidden and not spread further than the reference spreads
    it: the rows that are non-finite are the reference's (torch's CPU flash SDPA gives 0 for a NaN query
    row, and its additive causal mask lets a NaN key leak into the rows before it)."""
    _check_non_finite_rows(backend, padded, causal, where, "cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["sdpa", "flex", "triton"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_non_finite_valid_rows_give_nan_where_the_reference_does_on_cuda(backend, causal, where):
    """The same on the GPU, where the sdpa backend leaves NaN rows to torch's CUDA kernels (the
    repair of the CPU flash kernel's 0 for a NaN query row runs on the CPU only)."""
    for padded in (False, True):
        _check_non_finite_rows(backend, padded, causal, where, "cuda")


def _check_non_finite_rows(backend, padded, causal, where, device):
    B, T, H, D = 2, 6, 2, 16
    lens = torch.tensor([5, 6], device=device) if padded else None
    for fill in (float("nan"), float("inf")):
        q, k, v = (t.detach().to(device) for t in make_qkv((B, T, H, D), torch.float32))
        dict(q=q, k=k, v=v)[where][0, 2, 1, 3] = fill
        with torch.no_grad():
            want = ref.masked_attention(q, k, v, seq_lens=lens, causal=causal).isfinite().logical_not()
            got = masked_attention(q, k, v, seq_lens=lens, causal=causal, backend=backend).isfinite().logical_not()
        assert want.any()
        assert torch.equal(got.any(-1), want.any(-1)), (fill, got.any(-1)[0, :, 1], want.any(-1)[0, :, 1])
    # packed, equal lengths (sdpa's unmasked path) and unequal ones
    for cu in (torch.tensor([0, 4, 8], dtype=torch.int32), torch.tensor([0, 3, 8], dtype=torch.int32)):
        cu = cu.to(device)
        q, k, v = (t.detach().to(device) for t in make_qkv((8, H, D), torch.float32))
        dict(q=q, k=k, v=v)[where][1, 0, 0] = float("nan")
        with torch.no_grad():
            want = ref.masked_attention(q, k, v, cu_seqlens=cu, causal=causal).isnan().any(-1)
            got = masked_attention(q, k, v, cu_seqlens=cu, causal=causal, backend=backend).isnan().any(-1)
        assert torch.equal(got, want), (cu, got[:, 0], want[:, 0])


def test_block_diagonal_mask_input():
    fmha = pytest.importorskip("xformers.ops.fmha")
    lens = [3, 0, 6]
    q, k, v = make_qkv((9, 2, 16), torch.float32)
    cu = torch.tensor([0, 3, 3, 9], dtype=torch.int32)
    for mask_cls, causal in ((fmha.attn_bias.BlockDiagonalMask, False), (fmha.attn_bias.BlockDiagonalCausalMask, True)):
        mask = mask_cls.from_seqlens(lens)
        want = ref.attention_packed(q, k, v, cu, causal=causal)
        torch.testing.assert_close(masked_attention(q, k, v, cu_seqlens=mask, backend="sdpa"), want)
        got4 = masked_attention(q[None], k[None], v[None], cu_seqlens=mask, backend="eager")
        assert got4.shape == (1, 9, 2, 16)
        torch.testing.assert_close(got4[0], want)
    with pytest.raises(ValueError, match="cu_seqlens"):
        masked_attention(q, k, v, cu_seqlens=fmha.attn_bias.BlockDiagonalMask.from_seqlens([3, 6], [4, 5]))


# ----------------------------------------------------------------------------- validation
def _valid():
    q, k, v = (torch.randn(2, 6, 2, 16) for _ in range(3))
    return q, k, v, torch.tensor([6, 3])


@pytest.mark.parametrize("mutate, match", [
    (lambda q, k, v, l: ((q[0], k[0], v[0]), dict(seq_lens=l)), "q must have 4 dims"),
    (lambda q, k, v, l: ((q, k[:, :5], v), dict(seq_lens=l)), "k must have the shape of q"),
    (lambda q, k, v, l: ((q, k, v.half()), dict(seq_lens=l)), "v must have the dtype of q"),
    (lambda q, k, v, l: ((q, k, v), dict(seq_lens=l.float())), "seq_lens must be int32/int64"),
    (lambda q, k, v, l: ((q, k, v), dict(seq_lens=[6, 3])), "seq_lens must be a torch.Tensor, got list"),
    (lambda q, k, v, l: ((q, k, v), dict(seq_lens=l[:1])), r"seq_lens must be int32/int64 of shape \(B,\)"),
    (lambda q, k, v, l: ((q, k, v), dict(seq_lens=torch.tensor([7, 1]))), "seq_lens must lie in"),
    (lambda q, k, v, l: ((q, k, v), dict(seq_lens=torch.tensor([-1, 1]))), "seq_lens must lie in"),
    (lambda q, k, v, l: ((q, k, v), dict(seq_lens=l, max_seqlen=7)), "max_seqlen must be <= T"),
    (lambda q, k, v, l: ((q, k, v), dict(seq_lens=l, max_seqlen=5)), "max_seqlen must be >= the longest"),
    (lambda q, k, v, l: ((q[..., :12], k[..., :12], v[..., :12]), dict()), "head dim"),
    (lambda q, k, v, l: ((q.int(), k.int(), v.int()), dict()), "q must be float16"),
    (lambda q, k, v, l: ((q, k, v), dict(scale=float("nan"))), "scale"),
    (lambda q, k, v, l: ((q, k, v), dict(causal=1)), "causal"),
    (lambda q, k, v, l: ((q, k, v), dict(cu_seqlens=torch.tensor([0, 6, 12]))), "q must have 3 dims"),
])
def test_validation_padded(mutate, match):
    args, kw = mutate(*_valid())
    with pytest.raises(ValueError, match=match):
        masked_attention(*args, **kw)


@pytest.mark.parametrize("cu, match", [
    (torch.tensor([0.0, 4.0, 9.0]), "cu_seqlens must be int32/int64"),
    (torch.tensor([[0, 4, 9]]), "cu_seqlens must have 1 dims"),
    (torch.tensor([1, 4, 9]), r"cu_seqlens\[0\] must be 0"),
    (torch.tensor([0, 5, 4, 9]), "non-decreasing"),
    (torch.tensor([0, 4, 8]), r"cu_seqlens\[-1\] must equal"),
])
def test_validation_cu_seqlens(cu, match):
    q, k, v = (torch.randn(9, 2, 16) for _ in range(3))
    with pytest.raises(ValueError, match=match):
        masked_attention(q, k, v, cu_seqlens=cu)


def test_validation_packed_misc():
    q, k, v = (torch.randn(9, 2, 16) for _ in range(3))
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)
    with pytest.raises(ValueError, match="not both"):
        masked_attention(q, k, v, cu_seqlens=cu, seq_lens=torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="q is on meta: the ops take CPU or CUDA tensors"):
        masked_attention(*(t.to("meta") for t in (q, k, v)), cu_seqlens=cu.to("meta"))
    with pytest.raises(ValueError, match="not both"):  # padded q: the same answer, not "q must have 3 dims"
        masked_attention(q[None], k[None], v[None], cu_seqlens=cu, seq_lens=torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="max_seqlen must be >= the longest"):
        masked_attention(q, k, v, cu_seqlens=cu, max_seqlen=4)
    with pytest.raises(ValueError, match="max_seqlen must be a non-negative host int"):
        masked_attention(q, k, v, cu_seqlens=cu, max_seqlen=torch.tensor(5))
    with pytest.raises(ValueError, match="cu_seqlens must be a torch.Tensor"):
        masked_attention(q, k, v, cu_seqlens=[0, 4, 9])


def test_numpy_scalars_are_taken_and_an_fp32_overflowing_scale_is_refused():
    import numpy as np

    q, k, v = (torch.randn(9, 2, 16) for _ in range(3))
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)
    want = masked_attention(q, k, v, cu_seqlens=cu, max_seqlen=5, causal=True, scale=0.5, backend="eager")
    got = masked_attention(q, k, v, cu_seqlens=cu, max_seqlen=np.int64(5), causal=np.bool_(True),
                           scale=np.float32(0.5), backend="eager")
    torch.testing.assert_close(got, want)
    # the kernels scale in fp32, where 1e300 is inf: NaN out, silently
    with pytest.raises(ValueError, match="scale must be a finite float"):
        masked_attention(q, k, v, cu_seqlens=cu, scale=1e300)
    with pytest.raises(ValueError, match="causal must be a bool, got int 1"):
        masked_attention(q, k, v, cu_seqlens=cu, causal=1)


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_loose_max_seqlen_bound_on_packed_input(backend):
    """max_seqlen is only an upper bound: a loose one (far above the packed rows) neither sizes
    buffers nor launch grids by it."""
    q, k, v = (torch.randn(9, 2, 16) for _ in range(3))
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)
    want = masked_attention(q, k, v, cu_seqlens=cu, backend=backend)
    torch.testing.assert_close(masked_attention(q, k, v, cu_seqlens=cu, max_seqlen=1 << 40, backend=backend), want)


@pytest.mark.parametrize("backend", ["eager", "sdpa", "flex"])
@pytest.mark.parametrize("shape, lens", [((0, 5, 2, 16), []), ((2, 0, 2, 16), [0, 0]), ((2, 3, 0, 16), [3, 1]),
                                         ((0, 2, 16), None)])
def test_empty_inputs(backend, shape, lens):
    """B = 0, T = 0, H = 0 and no packed rows: an empty (or all-zero) output of q's shape."""
    q, k, v = (torch.randn(shape) for _ in range(3))
    if lens is None:
        kw = dict(cu_seqlens=torch.zeros(3, dtype=torch.int32))
    else:
        kw = dict(seq_lens=torch.tensor(lens, dtype=torch.int64))
    out = masked_attention(q, k, v, backend=backend, **kw)
    assert out.shape == q.shape and not out.any()


@pytest.mark.parametrize("backend", ["auto", "eager", "sdpa", "triton"])
@pytest.mark.parametrize("shape, lens", [((0, 5, 2, 16), []), ((2, 0, 2, 16), [0, 0]), ((2, 3, 0, 16), [3, 1]),
                                         ((0, 2, 16), None)])
def test_empty_inputs_keep_the_graph_of_q_k_and_v(backend, shape, lens):
    """Empty input stays differentiable in all three inputs, as the reference: each gets a
    zero-size gradient (sdpa once returned a graph through q only, or none for packed rows)."""
    q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
    if lens is None:
        kw = dict(cu_seqlens=torch.zeros(3, dtype=torch.int32))
    else:
        kw = dict(seq_lens=torch.tensor(lens, dtype=torch.int64))
    out = masked_attention(q, k, v, backend=backend, **kw)
    assert out.requires_grad
    out.sum().backward()
    for name, t in (("q", q), ("k", k), ("v", v)):
        assert t.grad is not None and t.grad.shape == t.shape, name


# -------------------------------------------------------------------------------- dispatch
def test_dispatch_rules():
    q, k, v = (torch.randn(2, 6, 2, 16) for _ in range(3))
    lens = torch.tensor([6, 3])
    inputs = dict(q=q, k=k, v=v, seq_lens=lens, cu_seqlens=None, max_seqlen=6, causal=False, scale=0.25,
                  forced=False)
    assert DISPATCHER.select("auto", **inputs).name == "sdpa"  # CPU: never the interpreter or unfused flex
    why = DISPATCHER.backends["triton"].reasons(**inputs)
    assert why and all(w.startswith("triton:") for w in why)
    assert any("xformers" in w for w in DISPATCHER.backends["xformers"].reasons(**inputs))
    with pytest.raises(ValueError, match="backend 'xformers' cannot run"):
        masked_attention(q, k, v, seq_lens=lens, backend="xformers")
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        masked_attention(q, k, v, seq_lens=lens, backend="cudnn")
    # an input nothing supports: every backend's reasons are listed
    saved = dict(DISPATCHER.backends)
    try:
        for name in ("sdpa", "eager"):
            DISPATCHER.backends.pop(name)
        with pytest.raises(NotImplementedError) as info:
            masked_attention(q, k, v, seq_lens=lens)
        for name in ("triton", "xformers", "flex"):
            assert f"`{name}` is not supported because" in str(info.value)
    finally:
        DISPATCHER.backends.clear()
        DISPATCHER.backends.update(saved)


def test_honest_reasons(monkeypatch):
    backends = DISPATCHER.backends
    q = torch.randn(1, 4, 1, 16)
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        assert any("TRITON_INTERPRET=1" in w for w in backends["triton"].available())
        assert any("no CPU operator" in w for w in backends["xformers"].available())
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    why = backends["triton"].supports(q=q[..., :8], forced=True)
    assert any("head dim 8" in w for w in why)
    assert any("bfloat16 arithmetic is wrong" in w for w in backends["triton"].supports(q=q.bfloat16(), forced=True))
    assert not backends["triton"].supports(q=q, forced=True)
    assert any("auto skips it" in w for w in backends["triton"].supports(q=q, forced=False))
    assert any("no backward on CPU" in w for w in backends["flex"].supports(q=q.requires_grad_(), k=q, v=q))
    # grid axis 1 holds (sequence, head): CUDA allows 65535, so more pairs go to another backend
    many = torch.zeros(16).expand(4096, 1, 16, 16)
    assert not backends["triton"].supports(q=many[:4095], forced=True)
    assert any("grid limit" in w for w in backends["triton"].supports(q=many, forced=True))
    cu = torch.zeros(4097, dtype=torch.int32)
    assert any("4096 x 16" in w for w in backends["triton"].supports(q=many[0], cu_seqlens=cu, forced=True))


# -------------------------------------------------------------------------------- module
def test_module_padded_and_packed_agree():
    torch.manual_seed(0)
    mod = MaskedSelfAttention(64, 2, backend="sdpa")
    lens = torch.tensor([7, 0, 3])
    x = torch.randn(3, 7, 64, requires_grad=True)
    y = mod(x, lens)
    assert y.shape == x.shape
    # padded rows only hold the output-projection bias and never influence valid rows
    pad = torch.arange(7)[None] >= lens[:, None]
    torch.testing.assert_close(y[pad], mod.out_proj.bias.expand(int(pad.sum()), 64))
    x2 = x.detach().clone()
    x2[pad] = 1e3
    torch.testing.assert_close(mod(x2, lens)[~pad], y[~pad])
    cu = cu_from_lengths(lens.int())
    xp = torch.cat([x[0, :7], x[2, :3]])
    yp = mod(xp, cu_seqlens=cu, max_seqlen=7)
    torch.testing.assert_close(yp, torch.cat([y[0, :7], y[2, :3]]), atol=1e-5, rtol=1e-5)
    yp.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mod.parameters())
    with pytest.raises(ValueError, match="num_heads must divide dim"):
        MaskedSelfAttention(64, 3)
    with pytest.raises(ValueError, match="goes with cu_seqlens"):
        mod(xp, lens)
    with pytest.raises(ValueError, match="x must be a torch.Tensor, got list"):
        mod([[0.0] * 64], lens)


def test_compile_through_auto_dispatch():
    """torch.compile (fullgraph) of the module with backend="auto": the dispatch traces, and on
    CPU it lands on sdpa; forward and backward, packed and padded."""
    mod = MaskedSelfAttention(32, 2, causal=True)
    lens = torch.tensor([5, 2], dtype=torch.int32)
    cu = cu_from_lengths(lens)
    compiled = torch.compile(mod, fullgraph=True, backend="aot_eager")
    x = torch.randn(7, 32)
    got = compiled(x, cu_seqlens=cu, max_seqlen=5)
    torch.testing.assert_close(got, mod(x, cu_seqlens=cu, max_seqlen=5), atol=1e-5, rtol=1e-5)
    got.sum().backward()
    assert torch.isfinite(mod.qkv.weight.grad).all()
    xp = torch.randn(2, 5, 32)
    torch.testing.assert_close(compiled(xp, lens), mod(xp, lens), atol=1e-5, rtol=1e-5)


def test_unchecked_lengths_are_clamped_to_T(monkeypatch):
    """On the trusted path (GPU with max_seqlen, or under torch.compile) lengths are not read back
    to the host; a length > T must still not make a kernel read past the sequence's T rows."""
    B, T, H, D = 2, 9, 2, 16
    q, k, v = (torch.randn(B, T, H, D) for _ in range(3))
    want = masked_attention(q, k, v, seq_lens=torch.tensor([T, 4]), backend="eager")
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    backend = "triton" if os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available() else "sdpa"
    got = masked_attention(q, k, v, seq_lens=torch.tensor([T + 7, 4]), backend=backend)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_triton_double_backward_raises():
    """The Triton backward is first order only: differentiating its gradients raises a
    RuntimeError naming the backend, never a silent None; a create_graph backward alone works."""
    q, k, v = (torch.randn(2, 8, 2, 16, requires_grad=True) for _ in range(3))
    lens = torch.tensor([8, 5])
    for grad_out in (None, torch.ones(2, 8, 2, 16, requires_grad=True)):
        out = masked_attention(q, k, v, seq_lens=lens, backend="triton")
        (dq,) = torch.autograd.grad(out, q, grad_outputs=grad_out if grad_out is not None else torch.ones_like(out),
                                    create_graph=True)
        want = torch.autograd.grad(masked_attention(q, k, v, seq_lens=lens, backend="eager").sum(), q)[0]
        torch.testing.assert_close(dq.detach(), want, rtol=1e-4, atol=1e-5)
        with pytest.raises(RuntimeError, match="double backward .* not supported by backend 'triton'"):
            torch.autograd.grad(dq.pow(2).sum(), (q, k), allow_unused=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_eager_half_inputs_with_large_scores_stay_finite(dtype):
    """The reference computes half inputs in float32: |q . k| = 1.6e9 overflows float16 scores
    (once NaN out of eager) but not the result, which agrees with sdpa and the float64 reference."""
    x = torch.full((1, 4, 1, 16), 1e4, dtype=dtype)
    x[0, 1:, 0, ::2] = -1e4  # rows that differ: the softmax is not uniform
    out = masked_attention(x, x, x, backend="eager")
    assert out.dtype == dtype and torch.isfinite(out.float()).all()
    want = masked_attention(x.double(), x.double(), x.double(), backend="eager")
    torch.testing.assert_close(out.double(), want, rtol=1e-2, atol=0)
    torch.testing.assert_close(out, masked_attention(x, x, x, backend="sdpa"), rtol=1e-2, atol=0)
