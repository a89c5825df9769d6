"""bench/_goals.py: the issues' GPU goals from benchmark rows, and filing rows by card."""
from __future__ import annotations

import glob
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import _goals as goals  # noqa: E402


def _statuses(rows):
    return {goal: (value, status) for _, goal, value, status in goals.evaluate(rows)}


def test_recorded_h200_rows_give_the_readme_verdicts():
    """The H200 rows of 2026-11-26 (bench/results/README.md): 64k memory and 256k met; 16k speed,
    pose bandwidth and attention vs sdpa missed; flex, dense and the train step not measured."""
    got = _statuses(goals.load(sorted(glob.glob(os.path.join(ROOT, "bench", "results", "*_h200.jsonl")))))
    assert got["contrastive N=16k: triton vs eager >= 1.0x"] == ("0.87x", goals.MISSED)
    assert got["contrastive N=64k: triton peak extra < 2% of eager's"] == ("0.47%", goals.MET)
    assert got["contrastive N=256k: triton runs within 80 GB"][1] == goals.MET
    assert got["pose affine B=256: the op at >= 60% of copy bandwidth"] == ("12.5%", goals.MISSED)
    assert got["attn ragged: triton vs sdpa >= 2.0x"] == ("1.16x", goals.MISSED)
    assert got["attn ragged_long: triton vs sdpa >= 2.0x"] == ("1.50x", goals.MISSED)
    for absent in ("attn ragged: triton vs flex >= 1.3x", "attn dense: triton vs sdpa >= 0.9x",
                   "train step base: MFU >= 35%"):
        assert got[absent] == (None, goals.ABSENT)


def _attn(run, provider, ms, device="NVIDIA H100 80GB HBM3"):
    return {"bench": "attn", "shape": "ragged", "layout": "padded", "mode": "fwd+bwd", "dtype": "bfloat16",
            "B": 64, "H": 8, "D": 64, "provider": provider, "median_ms": ms, "device": device, "run": run}


def test_ratios_come_from_one_run_and_cpu_rows_do_not_count(tmp_path):
    rows = [_attn("a", "triton", 1.0), _attn("b", "flex", 5.0),  # different runs: no ratio
            _attn("c", "triton", 1.0, device="cpu:x86_64 x2"), _attn("c", "sdpa", 9.0, device="cpu:x86_64 x2")]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = _statuses(goals.load([str(path)]))
    assert got["attn ragged: triton vs flex >= 1.3x"] == (None, goals.ABSENT)
    assert got["attn ragged: triton vs sdpa >= 2.0x"] == (None, goals.ABSENT)  # the CPU rows are ignored
    rows = [_attn("d", "triton", 1.0), _attn("d", "triton", 2.0), _attn("d", "flex", 1.2)]
    assert _statuses(rows)["attn ragged: triton vs flex >= 1.3x"] == ("1.20x", goals.MISSED)  # best of each


def test_rows_are_filed_by_bench_and_card(tmp_path):
    rows = [_attn("a", "triton", 1.0), {**_attn("a", "sdpa", 2.0), "bench": "pose", "device": "NVIDIA H200"}]
    written = goals.file_rows(rows, str(tmp_path))
    assert [os.path.basename(p) for p in written] == ["attn_h100.jsonl", "pose_h200.jsonl"]
    assert json.loads((tmp_path / "attn_h100.jsonl").read_text())["provider"] == "triton"


def test_breakdowns_say_whether_kernels_or_the_host_set_the_pace():
    base = {"device": "NVIDIA H200", "run": "r1", "bench": "attn", "shape": "ragged", "layout": "padded",
            "mode": "fwd+bwd", "dtype": "bfloat16"}
    rows = [{**base, "provider": "triton", "median_ms": 0.40, "device_ms": 0.10, "host_ms": 0.38,
             "kernels_us": {"attn_bwd_kernel": 70.0, "attn_fwd_kernel": 30.0}},
            {**base, "provider": "sdpa", "median_ms": 0.90, "device_ms": 0.85, "host_ms": 0.2,
             "kernels_us": {"fmha_bwd": 600.0}},
            {**base, "provider": "flex", "median_ms": 1.0}]  # no breakdown: no line
    lines = goals.breakdowns(rows)
    assert len(lines) == 2
    assert "host-bound?" in lines[0] and "attn_bwd_kernel 70 us" in lines[0] and "host 0.380 ms" in lines[0]
    assert "kernel-bound" in lines[1] and "( 94%)" in lines[1]


def _full_attn(run, provider, ms, shape="ragged", device="NVIDIA H100 80GB HBM3", **kw):
    B, H, D = {"ragged": (64, 8, 64), "ragged_long": (32, 12, 64), "dense": (32, 8, 64)}[shape]  # issue 3
    return {**_attn(run, provider, ms, device), "shape": shape, "B": B, "H": H, "D": D, **kw}


def test_quick_attention_rows_do_not_count():
    """bench/attn.py --quick (the GPU check's QUICK=1) names its tiny shapes "ragged" and "dense"
    too: B=4, H=2, D=32 rows are no evidence for the issue's B=64, H=8, D=64 goal."""
    tiny = {"B": 4, "H": 2, "D": 32}
    rows = [{**_attn("q", "triton", 0.1), **tiny}, {**_attn("q", "sdpa", 1.0), **tiny}]
    assert _statuses(rows)["attn ragged: triton vs sdpa >= 2.0x"] == (None, goals.ABSENT)
    rows = [_full_attn("f", "triton", 0.1), _full_attn("f", "sdpa", 1.0)]
    assert _statuses(rows)["attn ragged: triton vs sdpa >= 2.0x"] == ("10.00x", goals.MET)
    # a row that says it is --quick does not count either
    rows = [_full_attn("f", "triton", 0.1, quick=True), _full_attn("f", "sdpa", 1.0, quick=True)]
    assert _statuses(rows)["attn ragged: triton vs sdpa >= 2.0x"] == (None, goals.ABSENT)


def test_ratios_need_one_device_and_a_device_named(tmp_path):
    rows = [_full_attn("r", "triton", 0.1, device="NVIDIA H200"), _full_attn("r", "sdpa", 1.0)]
    assert _statuses(rows)["attn ragged: triton vs sdpa >= 2.0x"] == (None, goals.ABSENT)
    # rows without run ids: one run per file, also when two folders hold files of one name
    for sub, (prov, ms) in (("h100", ("triton", 0.1)), ("a10", ("sdpa", 1.0))):
        (tmp_path / sub).mkdir()
        row = _full_attn(None, prov, ms)
        del row["run"]
        (tmp_path / sub / "results.jsonl").write_text(json.dumps(row) + "\n")
    got = _statuses(goals.load([str(tmp_path / "h100" / "results.jsonl"), str(tmp_path / "a10" / "results.jsonl")]))
    assert got["attn ragged: triton vs sdpa >= 2.0x"] == (None, goals.ABSENT)
    # a row without a device is not a GPU row
    path = tmp_path / "nodevice.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "device"}) + "\n"
                            for r in [_full_attn("n", "triton", 0.1), _full_attn("n", "sdpa", 1.0)]))
    assert goals.load([str(path)]) == []


def _con(run, provider, n, status="ok", ms=1.0, extra=100.0, **kw):
    return {"bench": "contrastive", "N": n, "D": 512, "dtype": "bf16", "provider": provider, "status": status,
            "device": "NVIDIA H100 80GB HBM3", "run": run,
            **({"median_ms": ms, "peak_extra_mib": extra} if status == "ok" else {}), **kw}


def test_contrastive_out_of_memory_misses_the_goal():
    rows = [_con("a", "triton", 262144, status="OOM"), _con("a", "eager", 262144, status="OOM"),
            _con("a", "triton", 16384, status="OOM"), _con("a", "eager", 16384, ms=10.0),
            _con("a", "triton", 65536, status="OOM"), _con("a", "eager", 65536, extra=80000.0)]
    got = _statuses(rows)
    assert got["contrastive N=256k: triton runs within 80 GB"] == ("triton OOM", goals.MISSED)
    assert got["contrastive N=16k: triton vs eager >= 1.0x"] == ("triton OOM", goals.MISSED)
    assert got["contrastive N=64k: triton peak extra < 2% of eager's"] == ("triton OOM", goals.MISSED)
    # eager out of memory, nothing of triton's: not measured
    got = _statuses([_con("b", "eager", 65536, status="OOM")])
    assert got["contrastive N=64k: triton peak extra < 2% of eager's"] == (None, goals.ABSENT)


def test_the_latest_run_decides_a_goal_not_the_best():
    """A goal met in an older run and missed in a later one is missed (a regression must show);
    run ids start with their time. A later run that failed at N counts as its measurement."""
    old, new = "20261126T090000-1", "20261127T090000-2"
    rows = [_full_attn(old, "triton", 0.1), _full_attn(old, "sdpa", 1.0),
            _full_attn(new, "triton", 0.8), _full_attn(new, "sdpa", 1.0)]
    assert _statuses(rows)["attn ragged: triton vs sdpa >= 2.0x"] == ("1.25x", goals.MISSED)
    # a later run that measured something else leaves the goal to the run that measured it
    rows = rows[:2] + [_full_attn(new, "triton", 0.8)]
    assert _statuses(rows)["attn ragged: triton vs sdpa >= 2.0x"] == ("10.00x", goals.MET)
    rows = [_con(old, "triton", 262144, extra=1536.0), _con(new, "triton", 262144, status="OOM")]
    assert _statuses(rows)["contrastive N=256k: triton runs within 80 GB"] == ("triton OOM", goals.MISSED)
    rows = [_con(old, "triton", 262144, status="OOM"), _con(new, "triton", 262144, extra=1536.0)]
    assert _statuses(rows)["contrastive N=256k: triton runs within 80 GB"] == ("1.5 GiB extra", goals.MET)
    pose = {"bench": "pose", "provider": "ext-cuda-op", "workload": "affine", "shape": goals.POSE_SHAPE,
            "device": "NVIDIA H200"}
    rows = [{**pose, "run": old, "pct_copy_bw": 70.0}, {**pose, "run": new, "pct_copy_bw": 20.0}]
    assert _statuses(rows)["pose affine B=256: the op at >= 60% of copy bandwidth"] == ("20.0%", goals.MISSED)


def test_contrastive_256k_must_fit_an_80gb_card():
    """Measured on a larger card (H200), 79 GiB of extra memory would not fit an 80 GB one
    beside the inputs and the CUDA context."""
    got = _statuses([{**_con("a", "triton", 262144, extra=79 * 1024.0), "device": "NVIDIA H200"}])
    assert got["contrastive N=256k: triton runs within 80 GB"][1] == goals.MISSED
    got = _statuses([{**_con("a", "triton", 262144, extra=1536.0), "device": "NVIDIA H200"}])
    assert got["contrastive N=256k: triton runs within 80 GB"] == ("1.5 GiB extra", goals.MET)


def test_filing_twice_adds_nothing_and_keeps_old_rows(tmp_path):
    src = tmp_path / "results.jsonl"
    old_row = _full_attn(None, "sdpa", 3.0)
    del old_row["run"]
    src.write_text(json.dumps(_full_attn("a", "triton", 1.0)) + "\n" + json.dumps(old_row) + "\n")
    out = tmp_path / "results_dir"
    out.mkdir()
    existing = json.dumps(_full_attn("old", "flex", 2.0)) + "\n"
    (out / "attn_h100.jsonl").write_text(existing)
    rows = goals.load([str(src)])
    assert goals.file_rows(rows, str(out)) == [str(out / "attn_h100.jsonl")]
    assert goals.file_rows(rows, str(out)) == []  # again: nothing new
    # and filing the filed file's own rows changes nothing either
    assert goals.file_rows(goals.load([str(out / "attn_h100.jsonl")]), str(out)) == []
    lines = (out / "attn_h100.jsonl").read_text().splitlines()
    assert lines[0] + "\n" == existing and len(lines) == 3
    # the file's path is not written into the row that had no run id
    assert "_file" not in json.loads(lines[2]) and "run" not in json.loads(lines[2])
    assert sorted(os.listdir(out)) == ["attn_h100.jsonl"]  # no temporary file left


def test_cards_are_named_apart():
    assert goals.card("NVIDIA H100 80GB HBM3") == "h100" and goals.card("NVIDIA H200") == "h200"
    assert goals.card("NVIDIA GeForce RTX 4090") == "rtx4090"
    assert goals.card("NVIDIA GeForce RTX 3090") == "rtx3090"
    assert goals.card("NVIDIA RTX A6000") == "rtxa6000"
    assert goals.card("Tesla V100-SXM2-16GB") == "v100-sxm2-16gb"


def test_a_torn_line_names_its_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(_full_attn("a", "triton", 1.0)) + "\n" + '{"bench": "at')
    with pytest.raises(ValueError, match="rows.jsonl:2"):
        goals.load([str(path)])


def test_causal_attention_rows_are_not_the_issues_goal():
    """Issue 3's shapes are bidirectional (bench/attn.py's default); a later ``--causal`` run of
    the same shapes halves the work and must not replace the verdict."""
    old, new = "20261126T090000-1", "20261127T090000-2"
    rows = [_full_attn(old, "triton", 0.8, causal=False), _full_attn(old, "sdpa", 1.0, causal=False),
            _full_attn(new, "triton", 0.1, causal=True), _full_attn(new, "sdpa", 1.0, causal=True)]
    assert _statuses(rows)["attn ragged: triton vs sdpa >= 2.0x"] == ("1.25x", goals.MISSED)
    assert _statuses(rows[2:])["attn ragged: triton vs sdpa >= 2.0x"] == (None, goals.ABSENT)


def test_pose_goal_needs_the_issues_batch_in_float16():
    """A ``bench/pose.py --dtype fp32`` (or ``--C 2``) run is also B=256, but moves other bytes:
    it is no measurement of the float16 C=3 goal."""
    pose = {"bench": "pose", "provider": "ext-cuda-op", "workload": "affine", "device": "NVIDIA H200", "run": "r"}
    rows = [{**pose, "shape": "B=256 T~U(32,256) J=123 C=3 fp32", "pct_copy_bw": 70.0},
            {**pose, "shape": "B=256 T~U(32,256) J=123 C=2 fp16", "pct_copy_bw": 65.0}]
    assert _statuses(rows)["pose affine B=256: the op at >= 60% of copy bandwidth"] == (None, goals.ABSENT)
    rows.append({**pose, "shape": "B=256 T~U(32,256) J=123 C=3 fp16", "pct_copy_bw": 20.0})
    assert _statuses(rows)["pose affine B=256: the op at >= 60% of copy bandwidth"] == ("20.0%", goals.MISSED)


def test_compiled_train_steps_are_judged_apart():
    """The GPU check runs train_step, then train_step --compile (a later run): the compiled run
    must not silently replace the eager verdict, nor count as it."""
    def row(run, provider, compiled, speedup, mfu):
        return {"bench": "train_step", "size": "base", "provider": provider, "compiled": compiled,
                "speedup": speedup, "mfu": mfu, "device": "NVIDIA H200", "run": run}
    rows = [row("20261126T090000-1", "slpfast", False, 3.2, 0.30), row("20261126T090000-1", "baseline", False, 1.0, 0.1),
            row("20261126T091000-2", "slpfast", True, 1.5, 0.40), row("20261126T091000-2", "baseline", True, 1.0, 0.2)]
    got = _statuses(rows)
    assert got["train step base: slpfast vs baseline >= 3x"] == ("3.20x", goals.MET)
    assert got["train step base: MFU >= 35%"] == ("30.0%", goals.MISSED)
    assert got["train step base (compiled): slpfast vs baseline >= 3x"] == ("1.50x", goals.MISSED)
    assert got["train step base (compiled): MFU >= 35%"] == ("40.0%", goals.MET)
    got = _statuses(rows[2:])  # only a compiled run: the eager goals are not measured
    assert got["train step base: MFU >= 35%"] == (None, goals.ABSENT)
