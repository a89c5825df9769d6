"""The issues' GPU goals, evaluated from benchmark JSON lines; files the rows by card (not a
benchmark itself: the underscore keeps it out of the loops that run every bench/*.py).

    python bench/_goals.py gpu_out/results.jsonl                        # each goal: value and status
    python bench/_goals.py gpu_out/results.jsonl --file bench/results   # and append the rows to
                                                                       # bench/results/<bench>_<card>.jsonl

A goal is ``met``, ``missed`` or ``not measured`` (its rows are absent). Ratios between providers
come from rows of one benchmark run (the ``run`` id every row carries; rows written before runs
had ids count as one run per file). Only GPU rows count. The goals (issue: what):

- 3 (attention, bf16, fwd+bwd, best layout per provider): ragged shapes triton >= 1.3x flex and
  >= 2x sdpa (sdpa's best is its padded, boolean-mask form); dense triton >= 0.9x sdpa (flash).
- 4 (contrastive, bf16, D=512): N=16,384 triton >= 1.0x eager; N=65,536 triton's peak extra memory
  < 2% of eager's; N=262,144 triton runs (peak extra < 80 GiB).
- 5 (pose): the op (``ext-cuda-op``) on the B=256 workloads at >= 60% of the copy bandwidth.
- 7 (train step, base model): slpfast >= 3x the baseline and MFU >= 35%.

After the goals it prints, for every row with a kernel breakdown, the kernels' share of the
measured time per call and the largest kernel: whether the host or the kernels set the pace.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

MET, MISSED, ABSENT = "met", "missed", "not measured"


def load(paths: list[str]) -> list[dict]:
    """GPU rows of every file (a row without a run id gets its file's name as one)."""
    rows = []
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    row.setdefault("run", os.path.basename(path))
                    if not str(row.get("device", "")).startswith("cpu"):
                        rows.append(row)
    return rows


def _runs(rows: list[dict], bench: str) -> dict[str, list[dict]]:
    by_run = defaultdict(list)
    for r in rows:
        if r.get("bench") == bench:
            by_run[r["run"]].append(r)
    return by_run


def _best_ratio(rows, bench: str, match, ours: str, other: str):
    """max over runs of (other's best ms / ours' best ms) among rows passing ``match``; None if
    no run has both."""
    best = None
    for run_rows in _runs(rows, bench).values():
        ms = defaultdict(list)
        for r in run_rows:
            if match(r) and r.get("median_ms") is not None and r.get("status", "ok") == "ok":
                ms[r["provider"]].append(r["median_ms"])
        if ms.get(ours) and ms.get(other):
            ratio = min(ms[other]) / min(ms[ours])
            best = ratio if best is None else max(best, ratio)
    return best


def _status(value, ok) -> str:
    return ABSENT if value is None else (MET if ok(value) else MISSED)


def attention_goals(rows):
    out = []
    for shape, other, goal in (("ragged", "flex", 1.3), ("ragged", "sdpa", 2.0), ("ragged_long", "flex", 1.3),
                               ("ragged_long", "sdpa", 2.0), ("dense", "sdpa", 0.9)):
        match = lambda r, s=shape: r["shape"] == s and r["mode"] == "fwd+bwd" and "bfloat16" in r["dtype"]  # noqa: E731
        v = _best_ratio(rows, "attn", match, "triton", other)
        out.append((3, f"attn {shape}: triton vs {other} >= {goal}x", None if v is None else f"{v:.2f}x",
                    _status(v, lambda x, g=goal: x >= g)))
    return out


def contrastive_goals(rows):
    def bf16(n):
        return lambda r: r["N"] == n and r["D"] == 512 and r["dtype"] == "bf16"

    out = []
    v = _best_ratio(rows, "contrastive", bf16(16384), "triton", "eager")
    out.append((4, "contrastive N=16k: triton vs eager >= 1.0x", None if v is None else f"{v:.2f}x",
                _status(v, lambda x: x >= 1.0)))
    mem = [r["mem_vs_eager"] for r in rows if r.get("bench") == "contrastive" and bf16(65536)(r)
           and r["provider"] == "triton" and r.get("mem_vs_eager") is not None]
    v = min(mem) if mem else None
    out.append((4, "contrastive N=64k: triton peak extra < 2% of eager's", None if v is None else f"{100 * v:.2f}%",
                _status(v, lambda x: x < 0.02)))
    big = [r["peak_extra_mib"] for r in rows if r.get("bench") == "contrastive" and bf16(262144)(r)
           and r["provider"] == "triton" and r.get("status") == "ok"]
    v = min(big) if big else None
    out.append((4, "contrastive N=256k: triton runs within 80 GB", None if v is None else f"{v / 1024:.1f} GiB extra",
                _status(v, lambda x: x < 80 * 1024)))
    return out


def pose_goals(rows):
    out = []
    for wl in ("affine", "full"):
        pct = [r["pct_copy_bw"] for r in rows if r.get("bench") == "pose" and r.get("provider") == "ext-cuda-op"
               and r.get("workload") == wl and str(r.get("shape", "")).startswith("B=256 ")
               and r.get("pct_copy_bw") is not None]
        v = max(pct) if pct else None
        out.append((5, f"pose {wl} B=256: the op at >= 60% of copy bandwidth", None if v is None else f"{v:.1f}%",
                    _status(v, lambda x: x >= 60.0)))
    return out


def train_goals(rows):
    base = [r for r in rows if r.get("bench") == "train_step" and r.get("size") == "base" and r["provider"] == "slpfast"]
    speed = max((r["speedup"] for r in base), default=None)
    mfu = max((r["mfu"] for r in base if r.get("mfu") is not None), default=None)
    return [(7, "train step base: slpfast vs baseline >= 3x", None if speed is None else f"{speed:.2f}x",
             _status(speed, lambda x: x >= 3.0)),
            (7, "train step base: MFU >= 35%", None if mfu is None else f"{100 * mfu:.1f}%",
             _status(mfu, lambda x: x >= 0.35))]


def evaluate(rows: list[dict]) -> list[tuple[int, str, str | None, str]]:
    """(issue, goal, value, status) for every goal."""
    return attention_goals(rows) + contrastive_goals(rows) + pose_goals(rows) + train_goals(rows)


def _point(r: dict) -> str:
    if r["bench"] == "attn":
        return f"attn {r['shape']} {r['layout']} {r['mode']} {r['provider']}"
    if r["bench"] == "pose":
        return f"pose {r['workload']} {str(r.get('shape', '')).split(' ')[0]} {r['provider']}"
    if r["bench"] == "contrastive":
        return f"contrastive N={r['N']} {r['provider']}"
    return f"{r['bench']} {r.get('provider', '')}"


def breakdowns(rows: list[dict]) -> list[str]:
    """One line per row with a kernel breakdown (``device_ms``, from the benchmarks' torch
    profiler): the measured time per call, the kernels' share of it, the host's time to enqueue
    a call where measured, and the largest kernel. Kernels well under the measured time mean
    the host (launches, Python) sets the pace, not the kernels."""
    lines = []
    for r in rows:
        ms, dev = r.get("median_ms"), r.get("device_ms")
        if not ms or dev is None:
            continue
        share = dev / ms
        verdict = "kernel-bound" if share >= 0.8 else ("host-bound?" if share < 0.5 else "mixed")
        host = f", host {r['host_ms']:.3f} ms" if r.get("host_ms") is not None else ""
        kernels = r.get("kernels_us") or {}
        top = max(kernels.items(), key=lambda kv: kv[1], default=None)
        top_txt = f"   top: {top[0][:48]} {top[1]:.0f} us" if top else ""
        lines.append(f"{_point(r):44s} {ms:8.3f} ms, kernels {dev:8.3f} ms ({100 * share:3.0f}%){host}: "
                     f"{verdict}{top_txt}")
    return lines


def card(device: str) -> str:
    """'NVIDIA H200' -> 'h200', 'NVIDIA H100 80GB HBM3' -> 'h100'."""
    words = [w for w in device.replace("NVIDIA", "").split() if w]
    return (words[0] if words else "gpu").lower()


def file_rows(rows: list[dict], directory: str) -> list[str]:
    """Append each row to ``directory/<bench>_<card>.jsonl``; returns the files written."""
    written = set()
    for r in rows:
        path = os.path.join(directory, f"{r['bench']}_{card(r['device'])}.jsonl")
        with open(path, "a") as f:
            f.write(json.dumps(r) + "\n")
        written.add(path)
    return sorted(written)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("jsonl", nargs="+", help="benchmark JSON lines (e.g. the GPU check's results.jsonl)")
    p.add_argument("--file", metavar="DIR", help="also append the GPU rows to DIR/<bench>_<card>.jsonl")
    args = p.parse_args(argv)
    rows = load(args.jsonl)
    devices = sorted({r["device"] for r in rows})
    print(f"# {len(rows)} GPU rows from {', '.join(devices) or 'no GPU'}")
    for issue, goal, value, status in evaluate(rows):
        print(f"issue {issue}  {goal:58s} {value or '-':>16s}  {status}")
    lines = breakdowns(rows)
    if lines:
        print("# where the time goes (kernels' device time per call against the measured time per call):")
        print("\n".join(lines))
    if args.file:
        for path in file_rows(rows, args.file):
            print(f"# appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
