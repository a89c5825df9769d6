"""contrastive_loss: chunked and eager backends against a float64 reference, validation, dispatch,
and the ContrastiveLoss module. (Triton kernels: test_contrastive_triton.py; gloo:
test_contrastive_distributed.py.)"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from slpfast.nn import ContrastiveLoss
from slpfast.ops import contrastive_loss
from slpfast.ops import contrastive_chunked as chunked
from slpfast.ops.contrastive import _DISPATCH
from slpfast.reference.contrastive import contrastive_loss_global


def make_inputs(n, d, dtype=torch.float32, scale=14.285):
    x = F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1)
    y = F.normalize(x + 0.8 * torch.randn(n, d, dtype=torch.float64), dim=1)  # correlated pairs
    return x.to(dtype), y.to(dtype), torch.tensor(scale, dtype=torch.float32)


def reference(x, y, s):
    """Loss and (dX, dY, ds) of the plain global loss in float64, by autograd."""
    x64 = x.detach().double().requires_grad_()
    y64 = y.detach().double().requires_grad_()
    s64 = s.detach().double().requires_grad_()
    loss = contrastive_loss_global(x64, y64, s64)
    return (loss.detach(), *torch.autograd.grad(loss, (x64, y64, s64)))


def run(x, y, s, backend, **kw):
    x = x.detach().clone().requires_grad_()
    y = y.detach().clone().requires_grad_()
    s = s.detach().clone().requires_grad_()
    loss = contrastive_loss(x, y, s, backend=backend, **kw)
    return (loss.detach(), *torch.autograd.grad(loss, (x, y, s)))


def assert_close_rel(got, want, rtol, what, atol=1e-6):
    """max|got - want| <= rtol * max|want| + atol (atol: rounding of an all-zero reference,
    e.g. N=1 where the loss and every gradient are exactly 0)."""
    err = (got.double() - want.double()).abs().max().item()
    bound = rtol * want.double().abs().max().item() + atol
    assert err <= bound, f"{what}: max err {err:.3g} > {bound:.3g}"


TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def check_against_reference(x, y, s, backend, **kw):
    got = run(x, y, s, backend, **kw)
    want = reference(x, y, s)
    rtol = TOL[x.dtype]
    # An input gradient is s / 2N * sum_j G_ij y_j with sum_j |G_ij| <= 4 (softmax minus labels):
    # its rounding error scales with those terms, which cancel exactly at N = 1 (zero gradient)
    terms = float(s) / (2 * x.shape[0]) * max(x.abs().max().item(), y.abs().max().item(), 1e-30)
    for g, w, name in zip(got, want, ("loss", "d_sign", "d_text", "d_scale")):
        assert torch.isfinite(g).all(), f"{name} not finite"
        atol = max(1e-6, rtol * terms) if name in ("d_sign", "d_text") else 1e-6
        assert_close_rel(g, w, rtol, f"{backend} {tuple(x.shape)} {x.dtype} {name}", atol=atol)
    assert got[1].dtype == x.dtype and got[2].dtype == y.dtype and got[3].dtype == s.dtype


@pytest.mark.parametrize("backend", ["chunked", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("d", [32, 256, 384])
@pytest.mark.parametrize("n", [1, 7, 64, 300])
def test_matches_float64_reference(n, d, dtype, backend):
    check_against_reference(*make_inputs(n, d, dtype), backend)


@pytest.mark.parametrize("n,chunk", [(7, 1), (64, 5), (300, 64), (301, 300)])
def test_chunked_tiles_agree_with_eager(n, chunk, monkeypatch):
    """Several tiles (and a ragged last one) must give the one-tile answer."""
    monkeypatch.setitem(chunked.TILE_ELEMS, "cpu", chunk * n)  # rows per tile = chunk
    x, y, s = make_inputs(n, 48, torch.float32, scale=50.0)
    got, want = run(x, y, s, "chunked"), run(x, y, s, "eager")
    for g, w in zip(got, want):
        assert_close_rel(g, w, 2e-5, f"chunk={chunk}")


class _LargestTensor(TorchDispatchMode):
    """Records the largest numel produced by any aten op (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_chunked_never_materializes_n_by_n(monkeypatch):
    """Memory linear in N: no op output of the chunked path is larger than one (rows, N) tile or
    an (N, D) tensor, while eager's logits are N x N (the check can tell them apart)."""
    n, d, rows = 1024, 16, 64
    monkeypatch.setitem(chunked.TILE_ELEMS, "cpu", rows * n)
    x, y, s = make_inputs(n, d)
    largest = {}
    for backend in ("chunked", "eager"):
        with _LargestTensor() as mode:
            run(x, y, s, backend)
        largest[backend] = mode.largest
    assert largest["chunked"] <= max(rows * n, n * d), largest
    assert largest["eager"] >= n * n, largest


def test_extreme_scale_is_stable():
    """Scale 100 with near-duplicate rows: large logits must not overflow the online LSE."""
    x, _, _ = make_inputs(64, 32, torch.float32)
    y = F.normalize(x + 1e-3 * torch.randn_like(x), dim=1)
    s = torch.tensor(100.0)
    check_against_reference(x, y, s, "chunked")


def check_frozen_text(x, y, s, backend):
    """Text features without gradient (frozen encoder): d_sign and d_scale unchanged."""
    want = reference(x, y, s)
    xg, sg = x.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
    loss = contrastive_loss(xg, y.detach(), sg, backend=backend)
    d_sign, d_scale = torch.autograd.grad(loss, (xg, sg))
    assert_close_rel(d_sign, want[1], TOL[x.dtype], f"{backend} frozen d_sign")
    assert_close_rel(d_scale, want[3], TOL[x.dtype], f"{backend} frozen d_scale")


@pytest.mark.parametrize("backend", ["chunked", "eager"])
def test_frozen_text_features(backend):
    check_frozen_text(*make_inputs(33, 24), backend)


def test_compiled_loss_matches_the_reference():
    """Under torch.compile the chunked backend's autograd.Function gave a wrong dX (2.13 dropped
    the alpha of an in-place add in its backward); value and every gradient must match."""
    import torch._dynamo

    x, y, s = make_inputs(40, 24)
    want = reference(x, y, s)
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b, c: contrastive_loss(a, b, c, backend="chunked", gather=False))
    xs = [t.detach().clone().requires_grad_() for t in (x, y, s)]
    loss = compiled(*xs)
    got = (loss.detach(), *torch.autograd.grad(loss, xs))
    for g, w, what in zip(got, want, ("loss", "dX", "dY", "d scale")):
        assert_close_rel(g, w, TOL[torch.float32], what)


def test_normalize_flag_equals_prenormalized_inputs():
    x, y = torch.randn(9, 16) * 3, torch.randn(9, 16) * 0.2
    s = torch.tensor(10.0)
    a = contrastive_loss(x, y, s, normalize=True)
    b = contrastive_loss(F.normalize(x, dim=1), F.normalize(y, dim=1), s)
    c = contrastive_loss(x, y, s)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_float_scale_and_shape_one_scale():
    x, y, _ = make_inputs(5, 8)
    a = contrastive_loss(x, y, 7.0)
    s1 = torch.tensor([7.0], requires_grad=True)
    b = contrastive_loss(x, y, s1)
    torch.testing.assert_close(a, b.detach())
    b.backward()
    assert s1.grad.shape == (1,) and torch.isfinite(s1.grad).all()


@pytest.mark.parametrize("backend", ["chunked", "eager"])
@pytest.mark.parametrize("shape", [(1,), (1, 1, 1), ()])
@pytest.mark.parametrize("scale_dtype", [torch.float64, torch.float32, torch.float16])
def test_any_one_element_scale_on_every_backend(backend, shape, scale_dtype):
    """Every one-element floating scale the validation accepts runs on every backend (eager
    once crashed on shape (1,) / (1, 1, 1) and on float64 with float32 inputs), with the loss of
    a 0-dim float32 scale and a gradient of the scale's own shape and dtype."""
    x, y, s = make_inputs(6, 16)
    scale = s.to(scale_dtype).reshape(shape).requires_grad_()
    loss = contrastive_loss(x, y, scale, backend=backend)
    want = contrastive_loss(x, y, s.to(scale_dtype).float(), backend=backend)
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert scale.grad.shape == shape and scale.grad.dtype == scale_dtype and torch.isfinite(scale.grad).all()


def test_numpy_scalar_scale_is_a_float():
    """np.float32 is no subclass of float (np.float64 is): both are numbers, the same loss."""
    x, y, _ = make_inputs(4, 8)
    want = contrastive_loss(x, y, 10.0)
    for s in (np.float32(10.0), np.float64(10.0), np.int64(10)):
        torch.testing.assert_close(contrastive_loss(x, y, s), want)


@pytest.mark.parametrize("backend", ["chunked", "eager"])
def test_python_float_scale_keeps_float64_precision(backend):
    """A Python float scale is not rounded to float32 for float64 inputs (an error of ~1e-7)."""
    x, y, _ = make_inputs(4, 8, torch.float64)
    want = contrastive_loss_global(x, y, 14.3)
    got = contrastive_loss(x, y, 14.3, backend=backend)
    assert got.dtype == torch.float64 and abs(got.item() - want.item()) < 1e-12


@pytest.mark.parametrize("backend", ["chunked", "triton"])
def test_double_backward_raises_on_first_order_backends(backend):
    """triton / chunked backwards are first order only: differentiating their gradients raises
    a RuntimeError naming the backend (it once returned None silently), while a create_graph
    backward alone still works and eager supports the double backward."""
    x, y, _ = make_inputs(3, 16)
    a = x.clone().requires_grad_()
    for grad_out in (None, torch.ones((), requires_grad=True)):
        loss = contrastive_loss(a, y, 2.0, backend=backend)
        (ga,) = torch.autograd.grad(loss, a, grad_outputs=grad_out, create_graph=True)
        torch.testing.assert_close(ga.detach(), torch.autograd.grad(contrastive_loss(a, y, 2.0, backend="eager"), a)[0])
        with pytest.raises(RuntimeError, match=f"double backward .* not supported by backend '{backend}'"):
            torch.autograd.grad(ga.pow(2).sum(), a, allow_unused=True)
    loss = contrastive_loss(a, y, 2.0, backend="eager")
    (ga,) = torch.autograd.grad(loss, a, create_graph=True)
    assert torch.autograd.grad(ga.pow(2).sum(), a)[0] is not None


def test_non_finite_embeddings_give_a_nan_loss():
    """As documented: a NaN or inf embedding makes the loss NaN (not checked: no host sync)."""
    x, y, s = make_inputs(4, 8)
    for bad in (math.nan, math.inf):
        x2 = x.clone()
        x2[1, 3] = bad
        for backend in ("chunked", "eager"):
            assert contrastive_loss(x2, y, s, backend=backend).isnan()


def test_auto_picks_chunked_on_cpu_with_honest_reasons():
    x, y, s = make_inputs(4, 8)
    assert _DISPATCH.select("auto", sign=x, auto=True).name == "chunked"
    why = _DISPATCH.backends["triton"].reasons(sign=x, auto=True)
    assert any("interpreter" in w for w in why)
    bf = x.bfloat16()
    why = _DISPATCH.backends["triton"].reasons(sign=bf, auto=False)
    assert any("bfloat16" in w for w in why)
    with pytest.raises(ValueError, match="bfloat16"):
        contrastive_loss(bf, y.bfloat16(), s, backend="triton")
    with pytest.raises(ValueError, match="backend must be"):
        contrastive_loss(x, y, s, backend="nope")


@pytest.mark.parametrize("bad,match", [
    (lambda x, y, s: (x, y[:-1], s), "text must have the shape"),
    (lambda x, y, s: (x, y.double(), s), "text must have the dtype"),
    (lambda x, y, s: (x[0], y[0], s), "sign must have 2 dims"),
    (lambda x, y, s: (x.int(), y.int(), s), "sign must be"),
    (lambda x, y, s: (x[:0], y[:0], s), "N_local >= 1"),
    (lambda x, y, s: (x, y, torch.tensor(-1.0)), "logit_scale must be finite and > 0"),
    (lambda x, y, s: (x, y, torch.tensor(0.0)), "logit_scale must be finite and > 0"),
    (lambda x, y, s: (x, y, torch.tensor(math.inf)), "logit_scale must be finite and > 0"),
    (lambda x, y, s: (x, y, torch.tensor(math.nan)), "logit_scale must be finite and > 0"),
    (lambda x, y, s: (x, y, torch.ones(2)), "logit_scale must be a float or a floating tensor with one element"),
    (lambda x, y, s: (x, y, "10"), "logit_scale must be a float"),
    # a finite float that the float32 loss cannot hold: named as given, not as the inf it became
    (lambda x, y, s: (x, y, 1e300), r"logit_scale 1e\+300 overflows the loss's float32"),
    (lambda x, y, s: (x, y, np.bool_(True)), "logit_scale must be a float"),
    (lambda x, y, s: (x, y, torch.device("meta")), "logit_scale must be a float"),
    (lambda x, y, s: (x, y.to("meta"), s), "text is on meta but sign is on cpu"),
])
def test_validation_errors_name_the_argument(bad, match):
    args = bad(*make_inputs(4, 8))
    with pytest.raises(ValueError, match=match):
        contrastive_loss(*args)


@pytest.mark.parametrize("kw, match", [(dict(gather="no"), "gather must be a bool, got str"),
                                       (dict(normalize=1), "normalize must be a bool, got int")])
def test_flags_must_be_bools(kw, match):
    with pytest.raises(ValueError, match=match):
        contrastive_loss(*make_inputs(4, 8), **kw)


def test_gather_without_process_group_is_the_plain_loss():
    x, y, s = make_inputs(6, 8)
    torch.testing.assert_close(contrastive_loss(x, y, s, gather=True), contrastive_loss(x, y, s, gather=False))


# ---- module ---------------------------------------------------------------------------------

def test_module_init_and_clamp():
    m = ContrastiveLoss()
    assert math.isclose(m.log_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    assert math.isclose(m.scale.item(), 1 / 0.07, rel_tol=1e-5)
    x, y, _ = make_inputs(10, 16)
    loss = m(x, y)
    torch.testing.assert_close(loss, contrastive_loss(x, y, 1 / 0.07))
    loss.backward()
    assert m.log_scale.grad is not None and m.log_scale.grad.abs() > 0
    with torch.no_grad():
        m.log_scale.fill_(math.log(1000.0))
    m.log_scale.grad = None
    assert m.scale.item() == pytest.approx(100.0)
    m(x, y).backward()
    assert m.log_scale.grad.item() == 0.0  # clamped: no gradient pushes the scale further
    torch.testing.assert_close(m(x, y), contrastive_loss(x, y, 100.0))


def test_module_survives_a_diverged_temperature():
    """A log_scale driven far down (exp -> 0) is floored at MIN_SCALE; a NaN one gives a NaN
    loss (a step the trainer skips) instead of the op's ValueError on the scale."""
    from slpfast.nn.contrastive import MIN_SCALE

    m = ContrastiveLoss()
    x, y, _ = make_inputs(10, 16)
    with torch.no_grad():
        m.log_scale.fill_(-1000.0)
    assert m.scale.item() == pytest.approx(MIN_SCALE)
    torch.testing.assert_close(m(x, y), contrastive_loss(x, y, MIN_SCALE))
    with torch.no_grad():
        m.log_scale.fill_(float("nan"))
    assert torch.isnan(m(x, y))


def test_module_learns_temperature_and_options():
    fixed = ContrastiveLoss(init_temperature=0.5, learnable=False)
    assert not list(fixed.parameters()) and fixed.scale.item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="init_temperature"):
        ContrastiveLoss(init_temperature=0.0)
    with pytest.raises(ValueError, match="max_scale"):
        ContrastiveLoss(max_scale=-1)
    # a few SGD steps on the temperature alone lower the loss of well-separated pairs
    m = ContrastiveLoss(init_temperature=1.0)
    x, _, _ = make_inputs(32, 16)
    y = F.normalize(x + 0.05 * torch.randn_like(x), dim=1)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    first = m(x, y).item()
    for _ in range(5):
        opt.zero_grad()
        m(x, y).backward()
        opt.step()
    assert m(x, y).item() < first and m.scale.item() > 1.0
