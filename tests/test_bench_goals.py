"""bench/_goals.py: the issues' GPU goals from benchmark rows, and filing rows by card."""
from __future__ import annotations

import glob
import json
import os
import sys

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
            "provider": provider, "median_ms": ms, "device": device, "run": run}


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
