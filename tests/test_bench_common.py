"""bench/_common.py helpers that the GPU check relies on, exercised on CPU."""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from _common import Results, op_times, short_kernel_name  # noqa: E402


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


# ---------------------------------------------------------------------------------------------
# command-line checking: a bad value is an argparse error (exit 2, one line naming the option),
# never a traceback

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench")

# (script, arguments, the option the error must name, text the error line must contain)
BAD_ARGS = [
    ("attn.py", ["--quick", "--providers=nope"], "--providers", "triton,flex,sdpa,xformers,eager"),
    ("attn.py", ["--quick", "--shapes=ragged,huge"], "--shapes", "ragged,ragged_long,dense"),
    ("attn.py", ["--quick", "--modes=bwd"], "--modes", "fwd,fwd+bwd"),
    ("attn.py", ["--quick", "--layouts=packed,"], "--layouts",
     "empty item in 'packed,' (comma-separated, choose from packed,padded)"),
    ("contrastive.py", ["--quick", "--sizes=abc"], "--sizes", ">= 1"),
    ("contrastive.py", ["--quick", "--sizes=512,0"], "--sizes", ">= 1"),
    ("contrastive.py", ["--quick", "--dim=0"], "--dim", ">= 1"),
    ("contrastive.py", ["--quick", "--providers=eager,eager"], "--providers",
     "twice in 'eager,eager' (comma-separated, choose from triton,chunked,eager)"),
    ("pose.py", ["--quick", "--workloads=nope"], "--workloads", "affine,full"),
    ("pose.py", ["--quick", "--devices=gpu"], "--devices", "cpu,cuda"),
    ("pose.py", ["--quick", "--gpu-batches=64,big"], "--gpu-batches", ">= 1"),
    ("data.py", ["--quick", "--clips=0"], "--clips", ">= 1"),
    ("data.py", ["--quick", "--repeats=-1"], "--repeats", ">= 1"),
    ("train_step.py", ["--quick", "--sizes=huge"], "--sizes", "tiny,small,base"),
    ("train_step.py", ["--quick", "--batch=0"], "--batch", ">= 1"),
    ("train_step.py", ["--quick", "--max-frames=1"], "--max-frames", "[2, 922]"),
    ("train_step.py", ["--quick", "--rounds=x"], "--rounds", ">= 1"),
    ("attn.py", ["--quick", "--json=/"], "--json", "is a folder, not a file"),
    ("train_step.py", ["--quick", "--json=/proc/version/x.jsonl"], "--json", "cannot be created: /proc/version is a file"),
]


# the defects of the user trial, end to end: a real command line, its exit status and stderr
REPORTED = [case for case in BAD_ARGS if case[1][1] in ("--providers=nope", "--sizes=abc", "--workloads=nope",
                                                         "--sizes=huge", "--clips=0")]


def _load_bench(script):
    """A bench script as a module (a unique name: ``data``, ``pose`` ... are common names)."""
    import importlib.util

    name = "bench_under_test_" + script[:-3]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, script))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[name] = mod
    return sys.modules[name]


@pytest.fixture(scope="module")
def reported_runs():
    """The REPORTED command lines, run side by side (each exits after its imports)."""
    import subprocess

    procs = {(script, tuple(args)): subprocess.Popen([sys.executable, os.path.join(BENCH, script), *args],
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for script, args, _, _ in REPORTED}
    runs = {}
    for key, p in procs.items():
        out, err = p.communicate(timeout=180)
        runs[key] = (p.returncode, out, err)
    return runs


def _check_error(script, option, allowed, rc, out, err):
    assert "Traceback" not in err + out, err
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"{script}: error: argument {option}: "), err
    assert allowed in lines[-1], err
    assert not out.strip(), out  # no work started


@pytest.mark.parametrize("script,args,option,allowed", REPORTED, ids=[f"{s[:-3]}{a[-1]}" for s, a, _, _ in REPORTED])
def test_reported_bad_arguments_exit_2_without_traceback(reported_runs, script, args, option, allowed):
    _check_error(script, option, allowed, *reported_runs[(script, tuple(args))])


@pytest.mark.parametrize("script,args,option,allowed", BAD_ARGS, ids=[f"{s[:-3]}{a[-1]}" for s, a, _, _ in BAD_ARGS])
def test_bad_arguments_are_argparse_errors(capsys, monkeypatch, script, args, option, allowed):
    """Every case in this process (fast): ``main(argv)`` ends in argparse's SystemExit(2)."""
    mod = _load_bench(script)
    monkeypatch.setattr(sys, "argv", [script])  # argparse names the program after argv[0]
    with pytest.raises(SystemExit) as exc:
        mod.main(args)
    out, err = capsys.readouterr()
    _check_error(script, option, allowed, exc.value.code, out, err)


def test_list_and_count_types():
    import argparse

    from _common import int_at_least, int_list, name_list

    assert int_list(1)("512, 2048") == [512, 2048]
    assert int_list(1, allow_empty=True)("") == []
    assert name_list(["a", "b"])("b,a") == ["b", "a"]
    assert int_at_least(2, 8)("8") == 8
    for parse, text in [(int_list(1), ""), (int_list(1), "1,,2"), (int_list(1), "1.5"), (int_list(1), "3,3"),
                        (int_list(0), "-1"), (name_list(["a"]), "A"), (name_list(["a"]), "a,"),
                        (int_at_least(1), "0"), (int_at_least(2, 8), "9"), (int_at_least(0), "x")]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_data_help_tells_where_the_data_goes(capsys):
    with pytest.raises(SystemExit) as exc:
        _load_bench("data.py").main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "--keep" not in out and "bench-data" in out and "SLPFAST_CACHE" in out, out


def test_data_sets_are_published_whole(tmp_path):
    """bench/data.py builds each data set aside and renames it into place: a concurrent run
    never sees a half-built set, and the one that finishes second keeps the first one's."""
    build = _load_bench("data.py")._build
    final = str(tmp_path / "npy-2")
    seen = []

    def fill(path):
        seen.append(os.path.exists(final))
        os.makedirs(path)
        with open(os.path.join(path, "x"), "w") as f:
            f.write("first")

    build(final, fill)
    assert open(os.path.join(final, "x")).read() == "first" and seen == [False]

    def fill_while_another_run_publishes(path):
        os.makedirs(path)
        with open(os.path.join(path, "x"), "w") as f:
            f.write("second")

    build(final, fill_while_another_run_publishes)  # the set exists: the rename fails, theirs is kept
    assert open(os.path.join(final, "x")).read() == "first"
    assert sorted(os.listdir(tmp_path)) == ["npy-2"]  # no building leftovers

    def failing(path):
        os.makedirs(path)
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build(str(tmp_path / "npy-3"), failing)
    assert sorted(os.listdir(tmp_path)) == ["npy-2"]


def test_rows_say_whether_they_are_quick(tmp_path):
    """--quick rows reuse the real shapes' names at tiny sizes: every JSON row carries ``quick``
    so that bench/_goals.py can leave them out."""
    import json

    path = tmp_path / "rows.jsonl"
    for quick in (False, True):
        Results("attn", str(path), quick=quick).add(shape="ragged", provider="triton", median_ms=1.0)
    assert [json.loads(line)["quick"] for line in path.read_text().splitlines()] == [False, True]


def test_contrastive_gpu_point_failure_is_a_row(monkeypatch, capsys):
    """bench/contrastive.py on a GPU: a point that raises (a kernel that fails to compile or launch
    at N=262,144) is a ``failed`` row, which bench/_goals.py counts as missed; it used to end the
    benchmark with a traceback (that N's rows and every larger N lost: 'not measured')."""
    import contrastive

    def broken(*args, **kwargs):
        raise RuntimeError("triton: out of resources\nmore detail")

    monkeypatch.setattr(contrastive, "_inputs", broken)
    got = contrastive.run_gpu_point("triton", 262144, 512, "bf16", 3)
    assert got == {"status": "failed: RuntimeError: triton: out of resources"}
    assert "out of resources" in capsys.readouterr().err  # the traceback goes to the log

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(contrastive, "_inputs", oom)
    assert contrastive.run_gpu_point("eager", 262144, 512, "bf16", 3) == {"status": "OOM"}


def test_ncu_target_window_covers_kernels_launched_by_other_threads(monkeypatch, capsys):
    """On a GPU, autograd launches the backward kernels from its CUDA device thread: a thread-local
    NVTX push/pop range of the caller (the former ``--nvtx-include "profile/"`` filter) left them
    out of ncu.txt, so only the forward kernels of attention and the contrastive loss were seen.
    The profiled window is cudaProfilerStart/Stop (process-wide; gpu_check passes
    --profile-from-start off), opened after the warm-up calls."""
    import contextlib
    import threading

    import _ncu_target

    state = {"on": False}
    local = threading.local()
    seen = []  # (warm-up or profiled call, profiling on, inside an NVTX range) as the "device thread" saw it

    @contextlib.contextmanager
    def nvtx_range(msg):
        local.depth = getattr(local, "depth", 0) + 1
        try:
            yield
        finally:
            local.depth -= 1

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda.profiler, "start", lambda: state.update(on=True))
    monkeypatch.setattr(torch.cuda.profiler, "stop", lambda: state.update(on=False))
    monkeypatch.setattr(torch.cuda.nvtx, "range", nvtx_range)

    def calls(device):
        def backward_like():  # the kernels run on another thread, as autograd's device thread does
            t = threading.Thread(target=lambda: seen.append((state["on"], getattr(local, "depth", 0) > 0)))
            t.start()
            t.join()
        return [backward_like]

    monkeypatch.setattr(_ncu_target, "attn_calls", calls)
    _ncu_target.main(["--ops", "attn"])
    assert seen == [(False, False), (True, False)]  # warm-up outside the window, the call inside
    assert not state["on"]
    assert "profiled one call of attn" in capsys.readouterr().out
    script = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "gpu_check.sh")).read()
    assert "--profile-from-start off" in script and "--nvtx-include" not in script


_FAKE_PYTHON = r'''#!/bin/bash
# a stand-in for the GPU machine's python: records what each stage ran with
echo "$* TRITON_CACHE_AUTOTUNING=${TRITON_CACHE_AUTOTUNING:-unset}" >> "$CALLS"
case "$1 $2" in
  "-c "*_extension*) exit 0 ;;
  "-c "*) exit 1 ;;
  "-m pytest") exit 0 ;;
  "-m slpfast.info") exit 0 ;;
  "bench/_goals.py "*) exec "$REAL_PY" "$@" ;;
  "bench/contrastive.py "*) [ -n "$SLOW" ] && exec sleep 60
    echo '{"bench": "contrastive", "N": 16384, "D": 512, "dtype": "bf16", "provider": "triton", "status": "ok", "median_ms": 1.0, "peak_extra_mib": 1.0, "device": "NVIDIA H200", "run": "r"}' >> "${@: -1}"
    echo '{"bench": "contrastive", "N": 16384, "D": 512, "dtype": "bf16", "provider": "eager", "status": "ok", "median_ms": 2.0, "peak_extra_mib": 9.0, "device": "NVIDIA H200", "run": "r"}' >> "${@: -1}"
    exit 0 ;;
esac
exit 3
'''


def _gpu_check(tmp_path, stages, budget, **env):
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fake = tmp_path / "python"
    fake.write_text(_FAKE_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", os.path.join(root, "bench", "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": str(fake), "OUT": str(out), "STAGES": stages,
                                            "BUDGET": str(budget), "CALLS": str(tmp_path / "calls"),
                                            "REAL_PY": sys.executable, **env})
    calls = (tmp_path / "calls").read_text().splitlines()
    return proc, out, calls


def test_gpu_check_flow_and_autotuning_cache(tmp_path):
    """bench/gpu_check.sh with a stand-in python: stages in order, the goals printout reached from
    the rows, an honest exit status; the benchmarks (not the tests) keep triton's autotuning on disk,
    so the second attn stage and flex_long do not tune again."""
    proc, out, calls = _gpu_check(tmp_path, "pytest,contrastive", 60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (out / "summary.txt").read_text()
    assert "contrastive N=16k: triton vs eager >= 1.0x" in summary and "2.00x  met" in summary
    assert summary.rstrip().splitlines()[-1].startswith("=== done (status 0)")
    assert (out / "log.txt").read_text().count("=== done") == 1
    pytest_call = next(c for c in calls if c.startswith("-m pytest"))
    bench_call = next(c for c in calls if c.startswith("bench/contrastive.py"))
    assert pytest_call.endswith("TRITON_CACHE_AUTOTUNING=unset")
    assert bench_call.endswith("TRITON_CACHE_AUTOTUNING=1")


def test_gpu_check_time_box_cuts_stages_and_says_so(tmp_path):
    proc, out, _ = _gpu_check(tmp_path, "contrastive,pose,attn", 20, SLOW="1")
    assert proc.returncode == 1
    summary = (out / "summary.txt").read_text()
    assert "bench contrastive: exit 124 (timed out)" in summary
    assert "bench pose (GPU): SKIPPED (time box spent)" in summary
    assert summary.rstrip().splitlines()[-1].startswith("=== done (status 1)")
