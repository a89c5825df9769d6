"""Triton masked attention vs the float64 reference: output and dQ, dK, dV.

On CPU these run in the Triton interpreter (conftest sets TRITON_INTERPRET=1), so the grid of
cases is a pairwise covering of {packed, padded} x {causal, not} x {fp32, fp16} x D {32, 64, 128}
x T {1, 17, 64, 129}, kept to a few hundred program-steps each. The ``cuda`` tests at the end run
the same checks plus bf16, larger shapes and torch.compile on the GPU machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from attention_helpers import (assert_matches_reference, assert_padding_is_zero, cu_from_lengths, make_lengths,
                               make_qkv, run_with_grads)
from slpfast.ops import masked_attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [
    pytest.mark.skipif(DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
                       reason="triton on CPU needs TRITON_INTERPRET=1"),
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning"),
]

F32, F16 = torch.float32, torch.float16
# (T, D, packed, causal, dtype): every pair of factor values appears at least once
PAIRWISE = [
    (1, 32, True, False, F32), (1, 64, False, True, F16), (1, 128, True, True, F16),
    (17, 32, False, True, F32), (17, 64, True, False, F16), (17, 128, False, False, F32),
    (64, 32, True, True, F16), (64, 64, False, False, F32), (64, 128, True, False, F32),
    (129, 32, False, False, F16), (129, 64, True, True, F32), (129, 128, False, True, F16),
]


def assert_triton_matches_reference(B, T, H, D, packed, causal, dtype, *, lens=None, scale=None, device=DEVICE):
    """Output and the three gradients of the triton backend against the float64 reference (and,
    padded, zeros past every length); returns (out, dq, dk, dv)."""
    lens = make_lengths(B, T) if lens is None else lens
    if packed:
        cu = cu_from_lengths(lens).to(device)
        q, k, v = make_qkv((int(lens.sum()), H, D), dtype, device)
        fn = lambda a, b, c: masked_attention(a, b, c, cu_seqlens=cu, causal=causal, scale=scale,  # noqa: E731
                                              max_seqlen=T, backend="triton")
        return assert_matches_reference(fn, q, k, v, packed=True, lens_or_cu=cu, causal=causal, scale=scale)
    lens = lens.to(device)
    q, k, v = make_qkv((B, T, H, D), dtype, device)
    fn = lambda a, b, c: masked_attention(a, b, c, seq_lens=lens, causal=causal, scale=scale,  # noqa: E731
                                          backend="triton")
    out, *grads = assert_matches_reference(fn, q, k, v, packed=False, lens_or_cu=lens, causal=causal, scale=scale)
    assert_padding_is_zero(out, grads, lens)
    return out, *grads


@pytest.mark.parametrize("T, D, packed, causal, dtype", PAIRWISE)
def test_triton_matches_reference(T, D, packed, causal, dtype):
    assert_triton_matches_reference(3, T, 2, D, packed, causal, dtype)


@pytest.mark.parametrize("packed", [False, True])
def test_batch_of_one_and_scale(packed):
    assert_triton_matches_reference(1, 40, 3, 32, packed, True, F32, lens=torch.tensor([37], dtype=torch.int32),
                                    scale=0.3)


def test_zero_lengths_everywhere():
    for packed in (False, True):
        out, *grads = assert_triton_matches_reference(2, 9, 1, 16, packed, False, F32,
                                                      lens=torch.zeros(2, dtype=torch.int32))
        assert all((t == 0).all() for t in (out, *grads))


def test_dense_without_lengths_and_noncontiguous_input():
    """seq_lens=None (nothing padded) and q/k/v as strided views of one qkv projection."""
    B, T, H, D = 2, 33, 2, 48
    qkv = torch.randn(B, T, 3, H, D, device=DEVICE, dtype=torch.float64).float().requires_grad_()
    grad_out = torch.randn(B, T, H, D, device=DEVICE)
    outs = []
    for backend in ("triton", "eager"):
        x = qkv.detach().clone().requires_grad_()
        q, k, v = x.unbind(2)
        out = masked_attention(q, k, v, causal=True, backend=backend)
        out.backward(grad_out)
        outs.append((out.detach(), x.grad))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=2e-5, rtol=1e-4)


class _NaNEmpty:
    """``torch`` as the launchers see it, except that ``empty`` hands out NaN-filled memory: an
    output row no program writes then shows up as NaN instead of passing by luck."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty(*args, **kwargs):
        out = torch.empty(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("blocks", [((16, 32), (16, 32)), ((32, 16), (32, 16))])
def test_every_output_row_is_written(packed, blocks, monkeypatch):
    """Rows past a length, zero-length sequences and programs past the end: out, dq, dk and dv
    are written everywhere (zeros where there is nothing to attend to), never left as found."""
    if DEVICE != "cpu":
        pytest.skip("interpreter block sizes")
    from slpfast.kernels import attention as kern

    monkeypatch.setattr(kern, "torch", _NaNEmpty())
    monkeypatch.setitem(kern.INTERPRETER_BLOCKS, "fwd", blocks[0])
    monkeypatch.setitem(kern.INTERPRETER_BLOCKS, "bwd", blocks[1])
    lens = torch.tensor([0, 50, 17, 0, 33], dtype=torch.int32)
    for causal in (False, True):
        outs = assert_triton_matches_reference(5, 50, 2, 48, packed, causal, F32, lens=lens)
        assert all(bool(torch.isfinite(t).all()) for t in outs)


def test_forward_and_backward_are_one_launch_each(monkeypatch):
    """On pose-length clips launches set the pace of fwd+bwd: one kernel each way (the backward
    computes Delta inside its dK/dV and dQ programs; no pre-pass)."""
    from slpfast.kernels import attention as kern

    if DEVICE != "cpu":
        pytest.skip("counts the interpreter's launches (GPU launches of tuned kernels bypass _launcher)")
    launched = []
    launcher = kern._launcher
    monkeypatch.setattr(kern, "_launcher", lambda kernel, wrap: (launched.append(kernel), launcher(kernel, wrap))[1])
    q, k, v = (torch.randn(2, 20, 1, 32, requires_grad=True) for _ in range(3))
    out = masked_attention(q, k, v, seq_lens=torch.tensor([20, 7]), backend="triton")
    out.sum().backward()
    assert launched == [kern.attn_fwd_kernel, kern.attn_bwd_kernel]


@pytest.mark.parametrize("blocks", [((32, 16), (16, 32)), ((16, 32), (32, 16))])
def test_unequal_block_sizes(blocks, monkeypatch):
    """Tiles with BLOCK_M != BLOCK_N (as GPU configs use) split the causal diagonal differently."""
    if DEVICE != "cpu":
        pytest.skip("block sizes are autotuned on the GPU")
    from slpfast.kernels import attention as kern

    fwd, bwd = blocks
    monkeypatch.setitem(kern.INTERPRETER_BLOCKS, "fwd", fwd)
    monkeypatch.setitem(kern.INTERPRETER_BLOCKS, "bwd", bwd)
    lens = torch.tensor([40, 0, 23], dtype=torch.int32)
    assert_triton_matches_reference(3, 40, 1, 32, False, True, F32, lens=lens)
    assert_triton_matches_reference(3, 40, 1, 32, True, True, F16, lens=lens)
    # non-causal, two heads, a head dim padded to its power of two (EVEN_D off)
    assert_triton_matches_reference(3, 40, 2, 48, True, False, F32, lens=lens)
    assert_triton_matches_reference(3, 40, 2, 48, False, False, F16, lens=lens)


@pytest.mark.parametrize("tune", [True, False])
def test_autotuned_launch_path(tune, monkeypatch):
    """The GPU launch path (autotuner, its key, the pruning, grids from META) run in the
    interpreter with small configs and a stand-in benchmark (DESIGN.md section 5); with tuning
    off, the first config that survives the pruning runs and nothing is benchmarked."""
    if DEVICE != "cpu":
        pytest.skip("the GPU tests run the real autotuner")
    from slpfast.kernels import attention as kern

    calls = []

    def fake_bench(kernel_call, quantiles):
        kernel_call()
        calls.append(1)
        return [float(len(calls) % 3), 0.0, 0.0]  # an arbitrary but valid winner

    # (BLOCK_M, BLOCK_N, warps, stages, widest head dim): at D=96 the "64" rows are pruned
    small = {"fwd": [(32, 32, 4, 3, 128), (16, 16, 4, 1, 64), (32, 16, 4, 1, 128), (16, 32, 4, 1, 128)],
             "bwd": [(16, 32, 4, 1, 128), (32, 16, 4, 1, 128), (16, 16, 4, 1, 128)]}
    bench = fake_bench if tune else kern._first_config
    tuned = {name: kern._tuned(kern.KERNELS[name], small[name], do_bench=bench) for name in small}
    monkeypatch.setattr(kern, "_kernel", lambda name, device: (tuned[name], {}))
    lens = torch.tensor([33, 0, 20], dtype=torch.int32)
    assert_triton_matches_reference(3, 33, 1, 96, False, True, F32, lens=lens)  # fp32: the 3-stage fwd tile is pruned
    assert tuned["fwd"].best_config.num_stages == 1
    assert_triton_matches_reference(3, 33, 1, 96, True, False, F16, lens=lens)  # D > 64: the 16x16 fwd tile is pruned
    assert tuned["fwd"].best_config.kwargs != {"BLOCK_M": 16, "BLOCK_N": 16}
    assert_triton_matches_reference(3, 33, 1, 32, True, False, F16, lens=lens)
    # tuned already: launched directly with the choice
    assert_triton_matches_reference(3, 33, 1, 32, True, False, F16, lens=lens)
    assert {key[0] for key in kern._BEST if key[0] in tuned.values()} == set(tuned.values())
    if tune:
        assert len(calls) == (3 + 3) + (3 + 3) + (4 + 3), "each kept config is benchmarked once"
    else:
        assert not calls and tuned["fwd"].best_config.kwargs == {"BLOCK_M": 32, "BLOCK_N": 32}


def test_lse_and_determinism():
    from slpfast.kernels import attention as kern

    lens = torch.tensor([21, 5], dtype=torch.int32, device=DEVICE)
    q, k, v = make_qkv((2, 21, 2, 32), F32, DEVICE)
    out, lse = torch.ops.slpfast.attn_fwd(q, k, v, lens, 21, True, 0.2, False)
    s = torch.einsum("bihd,bjhd->bhij", q.double(), k.double()) * 0.2
    i = torch.arange(21, device=DEVICE)
    allowed = (i[None, :] <= i[:, None])[None, None] & (i < lens[:, None, None, None])
    want = torch.logsumexp(s.masked_fill(~allowed, float("-inf")), -1)  # (B, H, T)
    got = lse.view(2, 2, 21).transpose(0, 1).double()  # (H, B*T) -> (B, H, T)
    valid = i[None, :] < lens[:, None]
    torch.testing.assert_close(got.permute(0, 2, 1)[valid], want.permute(0, 2, 1)[valid], atol=1e-5, rtol=1e-5)
    assert (got.permute(0, 2, 1)[~valid] == 0).all()
    g = torch.randn_like(q)
    first = run_with_grads(lambda a, b, c: masked_attention(a, b, c, seq_lens=lens, backend="triton"), q, k, v, g)
    again = run_with_grads(lambda a, b, c: masked_attention(a, b, c, seq_lens=lens, backend="triton"), q, k, v, g)
    assert all(torch.equal(a, b) for a, b in zip(first, again)), "backward is not deterministic"
    assert kern.HEAD_DIMS[-1] == 128


def test_torch_op_autograd_matches_eager_path():
    """The triton ops (what torch.compile sees) give the same numbers as the eager autograd path."""
    from slpfast.kernels import attention as kern

    lens = torch.tensor([0, 3, 12], dtype=torch.int32, device=DEVICE)
    cu = cu_from_lengths(lens)
    q, k, v = make_qkv((15, 2, 32), F16, DEVICE)
    g = torch.randn_like(q)
    via_op = run_with_grads(lambda a, b, c: torch.ops.slpfast.attn_fwd(a, b, c, cu, 12, True, 0.2, True)[0],
                            q, k, v, g)
    eager = run_with_grads(lambda a, b, c: kern.masked_attention(a, b, c, cu_seqlens=cu, max_seqlen=12, causal=True,
                                                                 scale=0.2), q, k, v, g)
    assert all(torch.equal(a, b) for a, b in zip(via_op, eager))


def test_opcheck():
    q, k, v = make_qkv((2, 9, 2, 16), F32, DEVICE)
    lens = torch.tensor([9, 4], device=DEVICE)
    # the AOT / compile checks cannot run the interpreter (fake tensors): GPU only
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if DEVICE == "cuda":
        utils += ("test_aot_dispatch_dynamic",)
    for args in ((q, k, v, lens, 9, False, 0.25, False), (q, k, v, None, 9, True, 0.25, False)):
        torch.library.opcheck(torch.ops.slpfast.attn_fwd.default, args, test_utils=utils)
    out, lse = torch.ops.slpfast.attn_fwd(q, k, v, lens, 9, False, 0.25, False)
    bwd_args = (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse, lens, 9, False, 0.25,
                False)
    torch.library.opcheck(torch.ops.slpfast.attn_bwd.default, bwd_args,
                          test_utils=tuple(u for u in utils if u != "test_autograd_registration"))


@pytest.mark.slow
def test_kernels_compile_for_sm90():
    """The GPU code path compiles for sm_90 without a GPU (triton's own ptxas): the tiles that run
    with autotuning off use wgmma with cp.async pipelining, and do not spill registers in bf16."""
    pytest.importorskip("triton.backends.nvidia")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attention_sm90_compile.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # fp64scale: torch.compile's inductor types a Python-float ``scale`` as fp64 (failed on the H200
    # before the kernels cast it to fp32: tl.dot's fp32 accumulator met an fp64 one)
    # bf16:128:...:all: every tile the autotuner may pick at D=128 (fwd 4, bwd 3)
    run = subprocess.run([sys.executable, script, "bf16:64:varlen:causal", "fp16:48:padded:plain",
                          "bf16:64:padded:plain:fp64scale", "bf16:128:varlen:causal:all"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 6 + 7, run.stdout
    assert all(r["wgmma"] and r["cp_async"] for r in rows if r["D"] != 128), rows  # the default tiles
    assert all(r["stack"] == 0 for r in rows if r["dtype"] == "bf16"), rows


# ------------------------------------------------------------------------------------ GPU
BF16 = torch.bfloat16


@pytest.fixture
def no_autotune(monkeypatch):
    """Correctness runs take the first fitting config (one compile per variant, no tuning);
    test_cuda_every_config covers the others."""
    monkeypatch.setenv("SLPFAST_ATTN_AUTOTUNE", "0")


# GPU: each distinct (dtype, D, layout, causal) compiles 2 kernels, so the set is kept small
# enough for bench/gpu_check.sh's time box; every value of every factor appears, bf16 included
CUDA_CASES = [
    (1, 64, False, True, BF16), (17, 32, True, True, F16), (17, 128, False, False, F32),
    (64, 64, True, False, BF16), (129, 128, True, True, BF16), (129, 32, False, False, F16),
    (64, 128, False, True, F16), (129, 64, True, False, F32),
]


@pytest.mark.cuda
@pytest.mark.parametrize("T, D, packed, causal, dtype", CUDA_CASES)
def test_cuda_matches_reference(T, D, packed, causal, dtype, no_autotune):
    assert_triton_matches_reference(3, T, 2, D, packed, causal, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("packed, causal, dtype, D", [
    (False, False, BF16, 64), (True, True, BF16, 128), (True, False, F16, 80), (False, True, BF16, 64)])
def test_cuda_large_shapes(packed, causal, dtype, D, no_autotune):
    lens = torch.randint(1, 513, (8,), dtype=torch.int32)
    lens[0], lens[1] = 512, 0
    assert_triton_matches_reference(8, 512, 4, D, packed, causal, dtype, lens=lens)


@pytest.mark.cuda
@pytest.mark.parametrize("packed, causal, dtype, D", [(False, True, BF16, 64)])
def test_cuda_every_config(packed, causal, dtype, D, monkeypatch):
    """Each autotuning candidate (that the pruning keeps) computes the right thing."""
    from slpfast.kernels import attention as kern

    raw = kern.KERNELS
    q = torch.empty(1, device="cuda", dtype=dtype)
    kept = {name: kern._pruner(table)(kern._configs([row[:4] for row in table]), {"Q": q}, D=D)
            for name, table in kern.TABLES.items()}
    lens = torch.tensor([300, 0, 129, 64, 1], dtype=torch.int32)
    for i in range(max(map(len, kept.values()))):
        pick = {name: cfgs[i % len(cfgs)] for name, cfgs in kept.items()}
        monkeypatch.setattr(kern, "_kernel", lambda name, device: (
            raw[name], {**pick[name].kwargs, "num_warps": pick[name].num_warps, "num_stages": pick[name].num_stages}))
        assert_triton_matches_reference(5, 300, 2, D, packed, causal, dtype, lens=lens)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["flex", "sdpa"])
def test_cuda_other_backends(backend, no_autotune):
    lens = torch.tensor([200, 0, 77, 129], dtype=torch.int32, device="cuda")
    for packed, causal in ((False, False), (True, True)):  # each flex variant compiles (~tens of s)
        cu = cu_from_lengths(lens)
        shape = (int(lens.sum()), 4, 64) if packed else (4, 200, 4, 64)
        kw = dict(cu_seqlens=cu, max_seqlen=200) if packed else dict(seq_lens=lens)
        q, k, v = make_qkv(shape, BF16, "cuda")
        fn = lambda a, b, c: masked_attention(a, b, c, causal=causal, backend=backend, **kw)  # noqa: E731
        assert_matches_reference(fn, q, k, v, packed=packed, lens_or_cu=kw.get("cu_seqlens", lens), causal=causal)


@pytest.mark.cuda
def test_cuda_compile_module_with_triton(no_autotune):
    from slpfast.nn import MaskedSelfAttention

    mod = MaskedSelfAttention(128, 2, causal=True, backend="triton").cuda().to(BF16)
    lens = torch.tensor([100, 3, 0, 64], dtype=torch.int32, device="cuda")
    cu = cu_from_lengths(lens)
    x = torch.randn(int(lens.sum()), 128, device="cuda", dtype=BF16, requires_grad=True)
    eager = mod(x, cu_seqlens=cu, max_seqlen=100)
    (gx,) = torch.autograd.grad(eager.float().square().sum(), x)
    compiled = torch.compile(mod, fullgraph=True)
    got = compiled(x, cu_seqlens=cu, max_seqlen=100)
    (gx2,) = torch.autograd.grad(got.float().square().sum(), x)
    torch.testing.assert_close(got, eager, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(gx2, gx, atol=5e-2, rtol=5e-2)


def test_host_integer_helpers_match_triton():
    """The launchers' plain-Python cdiv / next_pow2 (triton's are slow to call from Python)."""
    import triton

    from slpfast.kernels._host import cdiv, next_pow2

    for n in [*range(1, 70), 127, 128, 129, 1000, 1 << 20, (1 << 20) + 1]:
        assert next_pow2(n) == triton.next_power_of_2(n), n
        for b in (1, 3, 16, 64, 128):
            assert cdiv(n, b) == triton.cdiv(n, b), (n, b)
    assert next_pow2(0) == 1 and cdiv(0, 64) == 0


def test_launch_grids_are_one_axis_so_many_sequences_fit(monkeypatch):
    """Axis 1 of a CUDA grid stops at 65,535: (sequence, head) pairs on it failed to launch for a
    packed batch of 8,192 short clips at H=8. The grids are 1-D (B*H x programs per sequence)."""
    from slpfast.kernels import attention as kern

    grids = {}
    monkeypatch.setattr(kern, "_run", lambda name, wrap, device, grid, args, meta, key: grids.__setitem__(name, grid))
    B, L, H, D = 8192, 4, 8, 16
    cu = torch.arange(0, (B + 1) * L, L, dtype=torch.int32)
    q = torch.zeros(B * L, H, D)
    kern._fwd(q, q, q, cu, L, False, 0.25, True, wrap=False)
    kern._bwd(q, q, q, q, q, torch.zeros(H, B * L), cu, L, False, 0.25, True, wrap=False)
    assert grids["fwd"]({"BLOCK_M": 64}) == (B * H,)
    assert grids["bwd"]({"BLOCK_N": 64}) == (2 * B * H,)
    T = 300  # several programs per (sequence, head): B*H times as many
    q = torch.zeros(3, T, 2, 16)
    kern._fwd(q, q, q, None, T, False, 0.25, False, wrap=False)
    assert grids["fwd"]({"BLOCK_M": 64}) == (3 * 2 * 5,)


def test_launches_go_to_the_tensors_device(monkeypatch):
    """Triton launches on the current CUDA device: inputs on cuda:1 while cuda:0 is current ran
    with cuda:1 pointers on cuda:0. on_device makes the tensors' device current."""
    from slpfast.kernels import _host

    entered = []

    class Recorder:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(_host.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(_host.torch.cuda, "device", Recorder)
    with _host.on_device(torch.device("cuda", 1)):
        pass
    with _host.on_device(torch.device("cuda", 0)):
        pass
    with _host.on_device(torch.device("cpu")):
        pass
    assert entered == [torch.device("cuda", 1)]
