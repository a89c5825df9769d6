"""pack_padded / unpack_packed: the C++ extension against the reference, forward and backward."""
import pytest
import torch

from slpfast import _extension
from slpfast.ops import pack_padded, unpack_packed
from slpfast.reference import packing as ref

needs_ext = pytest.mark.skipif(not _extension.load().loaded, reason="extension not built")


def _random_batch(lengths, rest=(3, 2), dtype=torch.float32, device="cpu"):
    lengths = torch.tensor(lengths, dtype=torch.int64, device=device)
    T = int(lengths.max()) if len(lengths) else 1
    x = torch.randn(len(lengths), max(T, 1), *rest, dtype=torch.float64, device=device).to(dtype)
    return x, lengths


CASES = [[5, 0, 3], [1], [0], [7, 7], [13, 1, 0, 11, 2]]


@needs_ext
@pytest.mark.parametrize("lengths", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.int64, torch.uint8])
def test_extension_matches_reference(lengths, dtype):
    x, lens = _random_batch(lengths, dtype=dtype) if dtype.is_floating_point else (
        torch.randint(0, 100, (len(lengths), max(max(lengths), 1), 3, 2)).to(dtype), torch.tensor(lengths))
    packed, cu = pack_padded(x, lens, backend="extension")
    want, want_cu = pack_padded(x, lens, backend="eager")
    assert torch.equal(cu, want_cu) and cu.dtype == torch.int32
    assert torch.equal(packed, want)
    back = unpack_packed(packed, cu, x.shape[1], backend="extension")
    assert torch.equal(back, unpack_packed(packed, cu, x.shape[1], backend="eager"))
    mask = torch.arange(x.shape[1])[None, :] < lens[:, None]
    assert torch.equal(back[mask], x[mask])
    assert not back[~mask].any()  # padding rows are exactly zero


@needs_ext
def test_gradients_match_reference():
    x, lens = _random_batch([4, 0, 2, 5], dtype=torch.float64)
    x.requires_grad_(True)
    packed, cu = pack_padded(x, lens, backend="extension")
    g = torch.randn_like(packed)
    (gx,) = torch.autograd.grad(packed, x, g)
    x2 = x.detach().clone().requires_grad_(True)
    (gx_ref,) = torch.autograd.grad(ref.pack_padded(x2, cu.long(), packed.shape[0]), x2, g)
    assert torch.equal(gx, gx_ref)
    assert torch.autograd.gradcheck(lambda t: torch.ops.slpfast.pack_padded(t, cu.long(), int(cu[-1])), (x,))
    p = packed.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: torch.ops.slpfast.unpack_packed(t, cu.long(), 6), (p,))


@needs_ext
def test_opcheck():
    x, lens = _random_batch([3, 1, 0], dtype=torch.float32)
    cu = torch.tensor([0, 3, 4, 4], dtype=torch.int64)
    torch.library.opcheck(torch.ops.slpfast.pack_padded.default, (x.requires_grad_(True), cu, 4))
    packed = torch.randn(4, 3, 2, requires_grad=True)
    torch.library.opcheck(torch.ops.slpfast.unpack_packed.default, (packed, cu, 5))


@needs_ext
def test_inside_torch_compile():
    x, lens = _random_batch([4, 2], dtype=torch.float32)
    cu = torch.tensor([0, 4, 6], dtype=torch.int64)

    def f(t):
        p = torch.ops.slpfast.pack_padded(t, cu, 6)
        return torch.ops.slpfast.unpack_packed(p * 2, cu, 4)

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), f(x))


@pytest.mark.parametrize("extension", [True, False], ids=["extension", "torch-fallback"])
@pytest.mark.parametrize("lengths", [[5, 0, 3], [0, 0], [13, 1, 0, 11, 2]])
def test_pack_rows_and_unpack_rows(lengths, extension, monkeypatch):
    """The no-check entry points used inside other ops: values, zeros past each length (even
    with garbage there), gradients and a fullgraph compile, with and without the extension."""
    from slpfast.ops import packing

    if extension and not _extension.load().loaded:
        pytest.skip("extension not built")
    if not extension:
        monkeypatch.setattr(packing._extension, "unavailable_reasons", lambda device_type="cpu": ["forced off"])
    x, lens = _random_batch(lengths, dtype=torch.float64)
    T = x.shape[1]
    for b, n in enumerate(lens.tolist()):
        x[b, n:] = float("nan")  # padding rows may hold anything
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = lens.cumsum(0)
    total = int(cu[-1])
    x.requires_grad_()
    packed = packing.pack_rows(x, cu, total)
    torch.testing.assert_close(packed, ref.pack_padded(x.detach(), cu.long(), total))
    padded = packing.unpack_rows(packed, cu, T + 2)  # wider than any length
    assert padded.shape == (len(lengths), T + 2, *x.shape[2:])
    torch.testing.assert_close(padded, ref.unpack_packed(packed.detach(), cu.long(), T + 2))
    (g,) = torch.autograd.grad(padded.sum(), x)
    valid = torch.arange(T)[None, :] < lens[:, None]
    assert torch.equal(g[valid], torch.ones_like(g[valid])) and not g[~valid].any()
    compiled = torch.compile(lambda t: packing.unpack_rows(packing.pack_rows(t, cu, total) * 2, cu, T),
                             backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x.detach()), 2 * ref.unpack_packed(packed.detach(), cu.long(), T))


def test_eager_backend_always_available():
    x, lens = _random_batch([2, 3])
    packed, cu = pack_padded(x, lens, backend="eager")
    assert packed.shape == (5, 3, 2) and cu.tolist() == [0, 2, 5]


def test_elements_the_extension_cannot_move_fall_back_to_eager():
    """complex128 (16-byte elements): auto takes the eager backend (the extension once failed
    with "unsupported element size 16"); naming the extension says why it cannot."""
    from slpfast.ops import packing

    x = torch.randn(2, 3, 2, dtype=torch.complex128)
    lens = torch.tensor([1, 3])
    packed, cu = pack_padded(x, lens)
    assert torch.equal(packed, pack_padded(x, lens, backend="eager")[0]) and packed.shape == (4, 2)
    back = unpack_packed(packed, cu)
    assert torch.equal(back, unpack_packed(packed, cu, backend="eager"))
    assert torch.equal(packing.unpack_rows(packing.pack_rows(x, cu, 4), cu, 3), back)
    if _extension.load().loaded:
        with pytest.raises(ValueError, match="16 bytes"):
            pack_padded(x, lens, backend="extension")


@pytest.mark.parametrize("call, match", [
    (lambda: pack_padded(torch.randn(2, 3), torch.tensor([1.0, 2.0])), "lengths must be int32/int64"),
    (lambda: pack_padded(torch.randn(2, 3), torch.tensor([1, 4])), r"lengths must lie in \[0, T=3\]"),
    (lambda: pack_padded(torch.randn(2, 3), torch.tensor([-1, 2])), "lengths must lie"),
    (lambda: pack_padded(torch.randn(2, 3), torch.tensor([1, 2, 3])), r"shape \(B,\)=\(2,\)"),
    (lambda: pack_padded(torch.randn(3), torch.tensor([1])), "padded must have"),
    (lambda: unpack_packed(torch.randn(4, 2), torch.tensor([1, 4])), r"cu_seqlens\[0\] must be 0"),
    (lambda: unpack_packed(torch.randn(4, 2), torch.tensor([0, 3, 2, 4])), "non-decreasing"),
    (lambda: unpack_packed(torch.randn(4, 2), torch.tensor([0, 3])), r"cu_seqlens\[-1\] must equal"),
    (lambda: unpack_packed(torch.randn(4, 2), torch.tensor([0, 4]), 2), "max_len must be"),
    # True is an int to Python: it was taken as max_len=1 (a slip, as for every int argument)
    (lambda: unpack_packed(torch.randn(1, 2), torch.tensor([0, 1]), True), "max_len must be an int"),
    (lambda: pack_padded(torch.randn(2, 3), torch.tensor([1, 2]), backend="nope"), "backend must be"),
    (lambda: pack_padded(torch.randn(2, 3), [1, 2]), "lengths must be a torch.Tensor, got list"),
    (lambda: unpack_packed(torch.randn(4, 2), [0, 4]), "cu_seqlens must be a torch.Tensor, got list"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.cuda
def test_cuda_matches_cpu():
    x, lens = _random_batch([37, 0, 129, 1], rest=(123, 3), dtype=torch.float16)
    packed, cu = pack_padded(x.cuda(), lens.cuda(), backend="extension")
    want, _ = pack_padded(x, lens, backend="extension")
    assert torch.equal(packed.cpu(), want)
    back = unpack_packed(packed, cu, 129, backend="extension")
    assert torch.equal(back.cpu(), unpack_packed(want, cu.cpu(), 129))
    torch.library.opcheck(torch.ops.slpfast.pack_padded.default, (x.float().cuda(), cu.long(), int(cu[-1])))


def test_unpack_takes_a_numpy_int_max_len():
    # np.int64 (e.g. from lengths.numpy().max()) was refused as "max_len must be an int >= 2, got 5"
    import numpy as np

    x = torch.randn(3, 2)
    out = unpack_packed(x, torch.tensor([0, 1, 3]), np.int64(5))
    assert out.shape == (2, 5, 2)
    torch.testing.assert_close(out[1, :2], x[1:])
    with pytest.raises(ValueError, match="max_len must be an int"):
        unpack_packed(x, torch.tensor([0, 1, 3]), 5.0)
