"""bench/_common.py helpers that the GPU check relies on, exercised on CPU."""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from _common import op_times, short_kernel_name  # noqa: E402


def test_short_kernel_names():
    cuda_kernel = ("void slpfast::pose::(anonymous namespace)::augment_kernel<unsigned short, true, 3>"
                   "(unsigned short const*, float const*, unsigned short*, float*, slpfast::pose::Seqs, long)")
    assert short_kernel_name(cuda_kernel) == "augment_kernel<unsigned short, true, 3>"
    assert short_kernel_name("attn_bwd_kernel") == "attn_bwd_kernel"
    assert short_kernel_name("Memcpy HtoD (Pinned -> Device)") == "Memcpy HtoD (Pinned -> Device)"
    assert short_kernel_name("aten::mm") == "mm"
    lambda_kernel = ("void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl<F>"
                     "(at::TensorIteratorBase&, F const&)::{lambda(int)#1}>(int, F)")
    assert short_kernel_name(lambda_kernel).startswith("elementwise_kernel<128, 2, ")


def test_op_times_attributes_time_to_ops():
    a = torch.randn(384, 384)
    got = op_times(lambda: torch.relu(a @ a), "cpu", calls=3, top=2)
    top = got["kernels_us"]
    assert len(top) <= 2 and "mm" in top, top
    assert top["mm"] > 0 and got["device_ms"] * 1e3 >= sum(top.values()) - 0.02
    assert list(top.values()) == sorted(top.values(), reverse=True)


def test_op_times_survives_a_failing_profiler(monkeypatch):
    import torch.profiler

    def broken(*args, **kwargs):
        raise RuntimeError("no CUPTI")

    monkeypatch.setattr(torch.profiler, "profile", broken)
    assert op_times(lambda: torch.ones(3).sum(), "cpu") == {}


def test_ncu_target_runs_its_calls(capsys):
    """bench/_ncu_target.py (the Nsight Compute stage of the GPU check), as far as a CPU goes."""
    import _ncu_target
    import pytest

    _ncu_target.main(["--ops", "pose", "--device", "cpu"])
    assert capsys.readouterr().out.count("profiled one call of pose") == 2
    with pytest.raises(SystemExit, match="unknown --ops"):
        _ncu_target.main(["--ops", "pose,bogus", "--device", "cpu"])
    with pytest.raises(SystemExit, match="pose only"):
        _ncu_target.main(["--ops", "attn", "--device", "cpu"])
