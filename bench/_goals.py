"""The issues' GPU goals, evaluated from benchmark JSON lines; files the rows by card (not a
benchmark itself: the underscore keeps it out of the loops that run every bench/*.py).

    python bench/_goals.py gpu_out/results.jsonl                        # each goal: value and status
    python bench/_goals.py gpu_out/results.jsonl --file bench/results   # and append the rows to
                                                                       # bench/results/<bench>_<card>.jsonl

A goal is ``met``, ``missed`` or ``not measured`` (its rows are absent). Ratios between providers
come from rows of one benchmark run on one device (the ``run`` id every row carries, and its
``device``; rows written before runs had ids count as one run per file). Only GPU rows count: a
row without a device, a CPU row, or a row marked ``"quick": true`` does not. The goals (issue: what):

- 3 (attention, bf16, fwd+bwd, not causal, best layout per provider, the issue's sizes: --quick
  rows reuse the shape names at tiny sizes and do not count): ragged shapes triton >= 1.3x flex and
  >= 2x sdpa (sdpa's best is its padded, boolean-mask form); dense triton >= 0.9x sdpa (flash).
- 4 (contrastive, bf16, D=512): N=16,384 triton >= 1.0x eager; N=65,536 triton's peak extra memory
  < 2% of eager's; N=262,144 triton runs (peak extra < 80 GB = 80e9 bytes, which leaves room on an
  80 GB card for the inputs and the CUDA context). A triton row that ran out of memory or failed
  at one of these N misses the goal.
- 5 (pose): the op (``ext-cuda-op``) on the B=256 workloads (T~U(32,256), C=3, float16: the
  bench's defaults; a --dtype fp32 or --C 2 run moves other bytes) at >= 60% of the copy bandwidth.
- 7 (train step, base model): slpfast >= 3x the baseline and MFU >= 35%, judged apart for eager
  and ``--compile`` runs (the GPU check runs both; neither shadows the other).

After the goals it prints, for every row with a kernel breakdown, the kernels' share of the
measured time per call and the largest kernel: whether the host or the kernels set the pace.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict

MET, MISSED, ABSENT = "met", "missed", "not measured"


# issue 3's named shapes, (B, H, D) (bench/attn.py SHAPES; its --quick shapes reuse the names)
ATTN_SIZES = {"ragged": (64, 8, 64), "ragged_long": (32, 12, 64), "dense": (32, 8, 64)}
# issue 5's batch (bench/pose.py's row "shape" at its defaults)
POSE_SHAPE = "B=256 T~U(32,256) J=123 C=3 fp16"
# issue 4: "N=262,144 runs on one 80 GB GPU"
GPU_80GB_MIB = 80e9 / 2**20


def is_gpu_row(row: dict) -> bool:
    """A row measured on a GPU at full size: it names its device, not a CPU, and is not --quick."""
    device = str(row.get("device") or "")
    return bool(device) and not device.startswith("cpu") and not row.get("quick")


def load(paths: list[str]) -> list[dict]:
    """GPU rows of every file (a row without a run id is one run with the other such rows of its
    file: ``_file`` holds the file's path, never written back by :func:`file_rows`)."""
    rows = []
    for path in paths:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{i}: not a JSON row ({exc}); a torn last line of an "
                                         "interrupted write can be deleted") from None
                    if "run" not in row:
                        row["_file"] = os.path.abspath(path)
                    if is_gpu_row(row):
                        rows.append(row)
    return rows


def _run_key(r: dict) -> tuple:
    return (r.get("run", r.get("_file")), r.get("device"))


def _runs(rows: list[dict], bench: str) -> dict[tuple, list[dict]]:
    by_run = defaultdict(list)
    for r in rows:
        if r.get("bench") == bench:
            by_run[_run_key(r)].append(r)
    return by_run


def _latest(rows, bench: str, measure):
    """``measure(run_rows)`` of the latest run of ``bench`` where it is not None (None if no run
    measured it). The latest, not the best: a goal met once and missed since is missed. Run ids
    start with their time (``20261126T101500-<pid>``); runs without one (older files) count as
    older than every run with one."""
    runs = _runs(rows, bench)
    for key in sorted(runs, key=lambda k: (k[0] if runs[k][0].get("run") else "", str(k)), reverse=True):
        v = measure(runs[key])
        if v is not None:
            return v
    return None


def _latest_ratio(rows, bench: str, match, ours: str, other: str):
    """(other's best ms / ours' best ms) among rows passing ``match``, both from the latest run
    that has both; None if no run has both."""
    def ratio(run_rows):
        ms = defaultdict(list)
        for r in run_rows:
            if match(r) and r.get("median_ms") is not None and r.get("status", "ok") == "ok":
                ms[r["provider"]].append(r["median_ms"])
        return min(ms[other]) / min(ms[ours]) if ms.get(ours) and ms.get(other) else None

    return _latest(rows, bench, ratio)


def _status(value, ok) -> str:
    return ABSENT if value is None else (MET if ok(value) else MISSED)


def attention_goals(rows):
    out = []
    for shape, other, goal in (("ragged", "flex", 1.3), ("ragged", "sdpa", 2.0), ("ragged_long", "flex", 1.3),
                               ("ragged_long", "sdpa", 2.0), ("dense", "sdpa", 0.9)):
        match = lambda r, s=shape: (r["shape"] == s and r["mode"] == "fwd+bwd" and "bfloat16" in r["dtype"]  # noqa: E731
                                    and not r.get("causal") and (r.get("B"), r.get("H"), r.get("D")) == ATTN_SIZES[s])
        v = _latest_ratio(rows, "attn", match, "triton", other)
        out.append((3, f"attn {shape}: triton vs {other} >= {goal}x", None if v is None else f"{v:.2f}x",
                    _status(v, lambda x, g=goal: x >= g)))
    return out


def contrastive_goals(rows):
    def bf16(n):
        return lambda r: r["N"] == n and r["D"] == 512 and r["dtype"] == "bf16"

    class Failed(str):
        """A triton row of the run ran out of memory or failed at this N: measured, and missed."""

    def measured(n, value):
        """``value(run)``, else the run's failure at N=n as :class:`Failed`, else None."""
        def measure(run):
            v = value(run)
            if v is not None:
                return v
            bad = next((r["status"] for r in run if bf16(n)(r) and r["provider"] == "triton"
                        and str(r.get("status", "ok")).startswith(("OOM", "failed"))), None)
            return None if bad is None else Failed(bad)
        return _latest(rows, "contrastive", measure)

    def goal(text, v, shown, ok):
        if isinstance(v, Failed):
            return (4, text, f"triton {v}"[:16], MISSED)
        return (4, text, None if v is None else shown(v), _status(v, ok))

    def ratio_16k(run):
        return _latest_ratio(run, "contrastive", bf16(16384), "triton", "eager")

    def mem_64k(run):
        return min((r["mem_vs_eager"] for r in run if bf16(65536)(r) and r["provider"] == "triton"
                    and r.get("mem_vs_eager") is not None), default=None)

    def extra_256k(run):
        return min((r["peak_extra_mib"] for r in run if bf16(262144)(r) and r["provider"] == "triton"
                    and r.get("status") == "ok"), default=None)

    return [goal("contrastive N=16k: triton vs eager >= 1.0x", measured(16384, ratio_16k), lambda x: f"{x:.2f}x",
                 lambda x: x >= 1.0),
            goal("contrastive N=64k: triton peak extra < 2% of eager's", measured(65536, mem_64k),
                 lambda x: f"{100 * x:.2f}%", lambda x: x < 0.02),
            goal("contrastive N=256k: triton runs within 80 GB", measured(262144, extra_256k),
                 lambda x: f"{x / 1024:.1f} GiB extra", lambda x: x < GPU_80GB_MIB)]


def pose_goals(rows):
    out = []
    for wl in ("affine", "full"):
        v = _latest(rows, "pose", lambda run, wl=wl: max(
            (r["pct_copy_bw"] for r in run if r.get("provider") == "ext-cuda-op" and r.get("workload") == wl
             and r.get("shape") == POSE_SHAPE and r.get("pct_copy_bw") is not None), default=None))
        out.append((5, f"pose {wl} B=256: the op at >= 60% of copy bandwidth", None if v is None else f"{v:.1f}%",
                    _status(v, lambda x: x >= 60.0)))
    return out


def train_goals(rows):
    out = []
    for compiled, label in ((False, ""), (True, " (compiled)")):
        def base(run, compiled=compiled):
            return [r for r in run if r.get("size") == "base" and r["provider"] == "slpfast"
                    and bool(r.get("compiled")) == compiled]

        speed = _latest(rows, "train_step", lambda run: max((r["speedup"] for r in base(run)
                                                             if r.get("speedup") is not None), default=None))
        mfu = _latest(rows, "train_step", lambda run: max((r["mfu"] for r in base(run) if r.get("mfu") is not None),
                                                          default=None))
        out += [(7, f"train step base{label}: slpfast vs baseline >= 3x", None if speed is None else f"{speed:.2f}x",
                 _status(speed, lambda x: x >= 3.0)),
                (7, f"train step base{label}: MFU >= 35%", None if mfu is None else f"{100 * mfu:.1f}%",
                 _status(mfu, lambda x: x >= 0.35))]
    return out


def evaluate(rows: list[dict]) -> list[tuple[int, str, str | None, str]]:
    """(issue, goal, value, status) for every goal (GPU rows only, see :func:`is_gpu_row`)."""
    rows = [r for r in rows if is_gpu_row(r)]
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


_BRANDS = {"nvidia", "geforce", "tesla", "quadro", "amd", "intel(r)", "intel"}
_SERIES = {"rtx", "gtx", "titan", "radeon", "instinct", "arc"}


def card(device: str) -> str:
    """'NVIDIA H200' -> 'h200', 'NVIDIA H100 80GB HBM3' -> 'h100',
    'NVIDIA GeForce RTX 4090' -> 'rtx4090' (a series word keeps the model number)."""
    words = [w for w in device.split() if w.lower() not in _BRANDS]
    if not words:
        return "gpu"
    name = words[0] + (words[1] if words[0].lower() in _SERIES and len(words) > 1 else "")
    return re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.") or "gpu"


def file_rows(rows: list[dict], directory: str) -> list[str]:
    """Add each row to ``directory/<bench>_<card>.jsonl``, after the rows already there; returns
    the files that got new rows. A row already in its file is not added again (filing the same
    results twice, or a file's own rows, changes nothing), and each file is replaced in one step
    (a temporary file renamed over it), so an interrupted run leaves it whole, old or new."""
    new: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        r = {k: v for k, v in r.items() if k != "_file"}
        new[os.path.join(directory, f"{r['bench']}_{card(r['device'])}.jsonl")].append(json.dumps(r))
    from slpfast.data.shard_format import atomic_write_bytes  # temp file + fsync + rename

    written = []
    for path, lines in sorted(new.items()):
        old = ""
        if os.path.exists(path):
            with open(path) as f:
                old = f.read()
        seen = {_canonical(line) for line in old.splitlines() if line.strip()}
        add = []
        for line in lines:
            key = _canonical(line)
            if key not in seen:
                seen.add(key)
                add.append(line)
        if not add:
            continue
        if old and not old.endswith("\n"):
            old += "\n"
        atomic_write_bytes(path, [(old + "".join(line + "\n" for line in add)).encode()])
        written.append(path)
    return written


def _canonical(line: str) -> str:
    try:
        return json.dumps(json.loads(line), sort_keys=True)
    except json.JSONDecodeError:
        return line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("jsonl", nargs="+", help="benchmark JSON lines (e.g. the GPU check's results.jsonl)")
    p.add_argument("--file", metavar="DIR", help="also add the GPU rows to DIR/<bench>_<card>.jsonl "
                                                 "(rows already there are not added twice)")
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
            print(f"# rows added to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
