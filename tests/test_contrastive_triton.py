"""Triton backend of contrastive_loss: value and gradients (d_sign, d_text, d_scale) against a
float64 reference. On CPU the kernels run in the interpreter (fp32/fp16); bf16 and large N are
``@pytest.mark.cuda`` (run by bench/gpu_check.sh)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from test_contrastive import assert_close_rel, check_against_reference, check_frozen_text, make_inputs, run

kc = pytest.importorskip("slpfast.kernels.contrastive")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and not kc.INTERPRET:
    pytest.skip("Triton on CPU needs TRITON_INTERPRET=1 before triton is imported", allow_module_level=True)


def on_device(x, y, s):
    return x.to(DEVICE), y.to(DEVICE), s.to(DEVICE)


# the full N x D grid in fp32 and fp16: with the interpreter's wide tiles the largest case
# (N=300, D=384) costs ~1.5 s
GRID = [(n, d) for n in (1, 7, 64, 300) for d in (32, 256, 384)]
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n,d", GRID)
def test_triton_matches_float64_reference(n, d, dtype):
    check_against_reference(*on_device(*make_inputs(n, d, dtype)), "triton")


def test_triton_frozen_text_features():
    check_frozen_text(*on_device(*make_inputs(33, 24)), "triton")


def test_triton_extreme_scale_near_duplicates():
    x, _, _ = make_inputs(48, 32, torch.float32)
    y = F.normalize(x + 1e-3 * torch.randn_like(x), dim=1)
    check_against_reference(*on_device(x, y, torch.tensor(100.0)), "triton")


def test_gpu_tiling_paths_in_interpreter(monkeypatch):
    """The GPU configs loop over D in BLOCK_D steps; the forward merges partial LSEs across row
    chunks and the backward builds G in row chunks:
    force small tiles (ragged in M, N and D) and chunks of two row tiles to test those paths on
    CPU, in one process and in the distributed primitives (rows local, columns gathered, the
    labels at ``offset + i``)."""
    small = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_D=16, num_warps=4, num_stages=1)
    monkeypatch.setattr(kc, "_configs", lambda kind, *a: [small])
    monkeypatch.setattr(kc, "_chunk_rows", lambda m, k, elem: min(m, 32))
    monkeypatch.setattr(kc, "_lse_chunk_rows", lambda m, k: min(m, 16))
    x, y, s = make_inputs(37, 72, torch.float32, scale=30.0)
    check_against_reference(*on_device(x, y, s), "triton")
    a, b = x[:21].to(DEVICE), y.to(DEVICE)
    lse = kc.fwd_row(a, b, 30.0)
    want = torch.logsumexp(30.0 * a.double() @ b.double().T, 1)
    torch.testing.assert_close(lse.double(), want, rtol=1e-5, atol=1e-5)
    offset = 9
    pb, pta, ps = kc.bwd_row(a, b, 30.0, lse, offset)
    sim = a.double() @ b.double().T
    p = torch.exp(30.0 * sim - want[:, None])
    p[torch.arange(21), offset + torch.arange(21)] -= 1.0
    torch.testing.assert_close(pb.double(), p @ b.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pta.double(), p.T @ a.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ps.double(), (p * sim).sum(), rtol=1e-5, atol=1e-5)
    assert kc.bwd_row(a, b, 30.0, lse, offset, need_pta=False)[1] is None


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_every_gpu_tile_candidate_is_correct_in_interpreter(monkeypatch, dtype):
    """Each kernel's GPU tile candidates (the autotuner may pick any of them) run in the
    interpreter on a problem ragged against every tile size, D not a multiple of BLOCK_D."""
    cuda = torch.device("cuda")
    lists = {kind: kc._configs(kind, 1 << 16, 1 << 16, 80, dtype, cuda) for kind in ("lse", "bwd")}
    x, y, s = make_inputs(130, 80, dtype, scale=20.0)
    xr, yr = x[:50].to(DEVICE), y.to(DEVICE)  # the distributed primitives: M != K
    for i in range(max(len(v) for v in lists.values())):
        picked = {kind: configs[min(i, len(configs) - 1)] for kind, configs in lists.items()}
        monkeypatch.setattr(kc, "_configs", lambda kind, *a, picked=picked: [picked[kind]])
        check_against_reference(*on_device(x, y, s), "triton")
        lse = kc.fwd_row(xr, yr, 20.0)
        want = torch.logsumexp(20.0 * xr.double() @ yr.double().T, 1)
        torch.testing.assert_close(lse.double(), want, rtol=1e-3, atol=1e-3, msg=f"candidate {i}: {picked}")


def test_chunks_are_whole_tiles_within_their_budgets(monkeypatch):
    monkeypatch.setattr(kc, "GRAD_CHUNK_BYTES", 256 << 20)
    assert kc._chunk_rows(16384, 16384, 2) == 8192
    assert kc._chunk_rows(65536, 65536, 2) == 2048
    assert kc._chunk_rows(262144, 262144, 2) == 512
    assert kc._chunk_rows(300, 300, 4) == 300  # all of A fits: one chunk
    monkeypatch.setattr(kc, "LSE_PARTIAL_BYTES", 128 << 20)
    assert kc._lse_chunk_rows(65536, 65536) == 8192
    for n in (4096, 16384, 262144):
        rows = kc._lse_chunk_rows(n, n)
        # 32 x 32 tiles: (n/32) row partials per row and (rows/32) per column, 4 bytes each
        assert rows == n or (rows % 256 == 0 and (n // 32 * rows + rows // 32 * n) * 4 <= 128 << 20)
    assert kc._chunk_rows(1 << 20, 1 << 20, 4) == 256  # never below one tile of rows
    rows = kc._chunk_rows(100_000, 70_000, 2)
    assert rows % 256 == 0 and rows * 70_000 * 2 <= 256 << 20


def _launch_fitting_up_to(max_block_m: int, tried: list | None = None):
    """A fake kernel launch ``run(BLOCK_M)`` that runs out of shared memory above ``max_block_m``
    (records every try in ``tried``) and returns the BLOCK_M it ran with."""
    def run(BLOCK_M):
        if tried is not None:
            tried.append(BLOCK_M)
        if BLOCK_M > max_block_m:
            raise kc.triton.runtime.errors.OutOfResources(300000, 232448, "shared memory")
        return BLOCK_M
    return run


def test_launch_falls_back_when_a_config_does_not_fit(monkeypatch):
    """Configs that exceed shared memory / registers raise OutOfResources at launch: the next one
    is used and remembered (GPU safety net, tested with a fake launch)."""
    monkeypatch.setattr(kc, "_chosen", {})
    monkeypatch.setattr(kc, "_configs", lambda *a: [dict(BLOCK_M=128), dict(BLOCK_M=64), dict(BLOCK_M=32)])
    tried = []
    run = _launch_fitting_up_to(64, tried)
    assert kc._launch("lse", 1, 1, 8, torch.float16, torch.device("cpu"), run) == 64
    assert kc._launch("lse", 1, 1, 8, torch.float16, torch.device("cpu"), run) == 64
    assert tried == [128, 64, 64]

    def never(BLOCK_M):
        raise kc.triton.runtime.errors.OutOfResources(1, 0, "shared memory")

    with pytest.raises(kc.triton.runtime.errors.OutOfResources):
        kc._launch("bwd", 1, 1, 8, torch.float16, torch.device("cpu"), never)


def test_launch_autotunes_large_gpu_problems(monkeypatch):
    """Large problems on a GPU: every candidate that fits is timed once, the fastest is kept per
    size bucket; small problems and SLPFAST_AUTOTUNE=0 take the first that fits (fake timer)."""
    monkeypatch.setattr(kc, "_chosen", {})
    monkeypatch.delenv(kc.AUTOTUNE_ENV, raising=False)
    monkeypatch.setattr(kc, "_configs", lambda *a: [dict(BLOCK_M=128), dict(BLOCK_M=64), dict(BLOCK_M=32)])
    fake_ms = {128: None, 64: 2.0, 32: 1.0}  # 128: does not fit
    timed = []

    def fake_time(run, cfg):
        timed.append(cfg["BLOCK_M"])
        if fake_ms[cfg["BLOCK_M"]] is None:
            raise kc.triton.runtime.errors.OutOfResources(1, 0, "shared memory")
        return fake_ms[cfg["BLOCK_M"]]

    monkeypatch.setattr(kc, "_time_config", fake_time)
    cuda = torch.device("cuda")
    run = lambda BLOCK_M: BLOCK_M  # noqa: E731
    big = kc.AUTOTUNE_MIN_LOGITS
    assert kc._launch("bwd", big, 1, 512, torch.bfloat16, cuda, run) == 32
    assert kc._launch("bwd", big, 1, 512, torch.bfloat16, cuda, run) == 32  # remembered
    assert timed == [128, 64, 32]
    assert kc._launch("bwd", 4, 4, 512, torch.bfloat16, cuda, lambda BLOCK_M: BLOCK_M) == 128  # small
    monkeypatch.setenv(kc.AUTOTUNE_ENV, "0")
    assert kc._launch("lse", big, 1, 512, torch.bfloat16, cuda, run) == 128
    assert timed == [128, 64, 32]


def test_kernels_compile_for_h100_without_gpu():
    """Compile every GPU tile candidate for sm_90 (no GPU needed): catches errors that the
    interpreter cannot see (types, layouts, constexpr branches) and shared memory over the limit."""
    import subprocess
    import sys

    code = ("import json; from slpfast.kernels import contrastive as kc; "
            "print(json.dumps(kc.compile_for_gpu(90)))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    compiled = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(compiled) >= 14
    assert {c["dtype"] for c in compiled} == {"bf16", "fp16", "fp32"}
    assert {(c.get("HAS_R"), c.get("HAS_C")) for c in compiled if c["kind"] == "bwd"} == {
        (True, True), (True, False), (False, True)}
    assert {c.get("COLS") for c in compiled if c["kind"] == "lse"} == {True, False}
    too_big = [c for c in compiled if c["shared"] > 227 * 1024]  # H100/H200 limit per block
    assert not too_big, too_big


def test_triton_agrees_with_chunked_module_path():
    """Through the module (learnable scale) both backends give the same step."""
    from slpfast.nn import ContrastiveLoss

    x, y, _ = make_inputs(50, 64, torch.float32)
    grads = []
    for backend in ("triton", "chunked"):
        m = ContrastiveLoss(backend=backend).to(DEVICE)
        loss = m(x.to(DEVICE), y.to(DEVICE))
        loss.backward()
        grads.append((loss.detach().cpu(), m.log_scale.grad.cpu()))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_product_mode_names_the_path():
    """fp32 operands multiply in fp32; half operands on CPU (no out_dtype matmuls) come back in half."""
    cpu = torch.device("cpu")
    assert kc.product_mode(torch.float32, cpu) == "fp32"
    assert kc.product_mode(torch.float16, cpu) == "half"
    assert kc.fp32_products(cpu) is False


# ---- GPU only -------------------------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_half_products_write_fp32():
    """torch >= 2.11 on CUDA: half x half -> fp32 matmuls (out_dtype) take the gradient products."""
    assert kc.product_mode(torch.bfloat16, torch.device("cuda")) == "half->fp32"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("n,d", [(1, 32), (300, 384), (1000, 512), (4099, 128)])
def test_cuda_against_float64(n, d, dtype):
    check_against_reference(*on_device(*make_inputs(n, d, dtype)), "triton")


@pytest.mark.cuda
def test_cuda_auto_picks_triton():
    from slpfast.ops.contrastive import _DISPATCH

    x, _, _ = on_device(*make_inputs(4, 8, torch.bfloat16))
    assert _DISPATCH.select("auto", sign=x, auto=True).name == "triton"


@pytest.mark.cuda
def test_cuda_n32k_bf16_matches_chunked_and_uses_linear_memory():
    n, d = 32768, 512
    x, y, s = on_device(*make_inputs(n, d, torch.bfloat16))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    got = run(x, y, s, "triton")
    peak = torch.cuda.max_memory_allocated() - base
    want = run(x, y, s, "chunked")  # fp32 math on the same bf16 inputs
    for g, w, name in zip(got, want, ("loss", "d_sign", "d_text", "d_scale")):
        assert_close_rel(g, w, 2e-2, f"N=32k {name}")
    # fp32 N x N logits would be 4 GiB; linear memory stays far below (inputs + fp32 grads)
    assert peak < 64 * n * d, f"peak extra memory {peak / 2**20:.0f} MiB"


@pytest.mark.slow
def test_gpu_tile_candidates_compile_for_sm90():
    """Every GPU tile candidate compiles for sm_90 without a GPU (triton's own ptxas), fits the
    227 KB of shared memory a block may use there, and does not spill registers in half
    precision; the fp64 ``scale_log2`` that torch.compile passes compiles too."""
    pytest.importorskip("triton.backends.nvidia")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "contrastive_sm90_compile.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, script, "bf16:512", "fp16:384", "fp32:256", "bf16:512:fp64scale"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == (5 + 5) * 2 + (3 + 3) + 2, run.stdout  # lse, bwd per dtype; fp64 scale: first of each
    assert all(r["smem"] <= 227 * 1024 for r in rows), [r for r in rows if r["smem"] > 227 * 1024]
    half = [r for r in rows if r["dtype"] != "fp32"]
    assert all(r["stack"] == 0 for r in half), [r for r in half if r["stack"]]
    assert all(r["wgmma"] for r in half if r["BLOCK_M"] >= 64), [r for r in half if not r["wgmma"]]
    assert all(r["stack"] <= 64 for r in rows if r["dtype"] == "fp32"), rows


def test_tile_choices_are_kept_per_kernel_variant(monkeypatch):
    """A config timed for the two-way forward (COLS) was reused for the row-only one, and one of
    the paired backward for the row-only backward: each variant keeps its own choice."""
    monkeypatch.setattr(kc, "_chosen", {})
    monkeypatch.setattr(kc, "_configs", lambda *a: [dict(BLOCK_M=128), dict(BLOCK_M=64)])
    assert kc._launch("lse:rows", 1, 1, 8, torch.float16, torch.device("cpu"), _launch_fitting_up_to(64)) == 64
    assert kc._launch("lse:cols", 1, 1, 8, torch.float16, torch.device("cpu"), lambda BLOCK_M: BLOCK_M) == 128
    assert sorted(k[0] for k in kc._chosen) == ["lse:cols", "lse:rows"]
    assert kc.chosen_configs(8, torch.float16, torch.device("cpu"), 1) == {
        "lse:cols first-fit": {"BLOCK_M": 128}, "lse:rows first-fit": {"BLOCK_M": 64}}
