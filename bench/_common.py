"""Shared benchmark plumbing: timing, the result table and JSON lines.

Every ``bench/*.py`` script accepts ``--quick`` (small sizes, used by CI and the GPU check)
and ``--json PATH`` (append one JSON object per measurement), prints a table, and compares
providers in the same run. Each JSON line carries the device name and library versions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes. Give each further option a checking ``type=``
    (:func:`int_at_least`, :func:`int_list`, :func:`name_list`): a bad value must end in an
    argparse error (exit 2, one line naming the option and what it accepts), never a traceback."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (CI, GPU check)")
    p.add_argument("--json", type=writable_file, metavar="PATH", help="append results as JSON lines to PATH")
    p.add_argument("--repeats", type=int_at_least(1), default=None, metavar="N", help="timed repeats per point")
    return p


def writable_file(text: str) -> str:
    """argparse ``type=``: a file path that can be written (checked before anything is measured:
    a folder, or a path under a file, failed at the first result, after its measurement)."""
    from slpfast.train.config import output_path_problem

    problem = output_path_problem(text, folder=False) if text else "is empty"
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


def _int(text: str, lo: int, hi: int | None, what: str = "") -> int:
    bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    try:
        v = int(text.strip())
    except ValueError:
        v = None
    if v is None or v < lo or (hi is not None and v > hi):
        raise argparse.ArgumentTypeError(f"{what}must be an integer {bounds}, got {text!r}")
    return v


def int_at_least(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse ``type=``: one integer in ``[lo, hi]`` (no upper bound when ``hi`` is None)."""
    def parse(text: str) -> int:
        return _int(text, lo, hi)
    parse.__name__ = f"int >= {lo}"
    return parse


def _items(text: str, allow_empty: bool, allowed: str) -> list[str]:
    """The items of a comma-separated list; errors end with ``allowed``, what the list takes."""
    if not text.strip():
        if allow_empty:
            return []
        raise argparse.ArgumentTypeError(f"needs at least one value, got '' ({allowed})")
    items = [v.strip() for v in text.split(",")]
    if "" in items:
        raise argparse.ArgumentTypeError(f"has an empty item in {text!r} ({allowed})")
    dup = next((v for i, v in enumerate(items) if v in items[:i]), None)
    if dup is not None:
        raise argparse.ArgumentTypeError(f"names {dup!r} twice in {text!r} ({allowed})")
    return items


def int_list(lo: int = 1, allow_empty: bool = False) -> Callable[[str], list[int]]:
    """argparse ``type=``: comma-separated distinct integers ``>= lo`` -> list of int (``""``
    gives ``[]`` when ``allow_empty``)."""
    allowed = f"comma-separated integers >= {lo}" + (", or '' for none" if allow_empty else "")

    def parse(text: str) -> list[int]:
        return [_int(v, lo, None, "each item ") for v in _items(text, allow_empty, allowed)]
    parse.__name__ = allowed
    return parse


def name_list(allowed) -> Callable[[str], list[str]]:
    """argparse ``type=``: comma-separated distinct names from ``allowed`` -> list of str."""
    allowed = list(allowed)
    what = f"comma-separated, choose from {','.join(allowed)}"

    def parse(text: str) -> list[str]:
        items = _items(text, False, what)
        bad = [v for v in items if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"invalid choice {bad[0]!r} ({what})")
        return items
    parse.__name__ = "comma-separated names"
    return parse


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu:{platform.processor() or platform.machine()} x{os.cpu_count()}"


def environment() -> dict:
    """Device and versions recorded with every result."""
    env = {"device": device_name(), "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    env["triton_interpret"] = os.environ.get("TRITON_INTERPRET") == "1"
    # one id per benchmark invocation: the goals compare providers measured in the same run
    env["run"] = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    return env


def _sync(device: str | torch.device | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], *, device=None, warmup: int = 2, repeats: int = 10) -> dict:
    """Median and p20/p80 wall time of ``fn()`` in milliseconds (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return {"median_ms": statistics.median(times), "p20_ms": q(0.2), "p80_ms": q(0.8), "repeats": repeats}


def short_kernel_name(name: str) -> str:
    """A profiler event name without return type, namespaces, template arguments or parameters:
    ``void slpfast::pose::(anonymous namespace)::augment_kernel<unsigned short, true, 3>(...)``
    -> ``augment_kernel<unsigned short, true, 3>``; triton kernels keep their function name."""
    name = name.strip()
    if name.startswith("void "):
        name = name[5:]
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # the parameter list: the first "(" outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i and name[i - 1] != " " and not name.startswith("(anonymous", i):
            cut = i
            break
    name = name[:cut]
    depth, start = 0, 0
    for i, ch in enumerate(name):  # the last "::" outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0 and name.startswith("::", i):
            start = i + 2
    return (name[start:].strip() or name)[:100]


def op_times(fn: Callable[[], object], device, calls: int = 5, top: int = 8) -> dict:
    """Where ``fn()``'s time goes, from the torch profiler: ``device_ms``, the total per call of
    every kernel it runs (GPU: device time of each CUDA kernel, copy and memset; CPU: self time
    of each ATen op), and ``kernels_us``, the ``top`` largest in microseconds per call. On a GPU
    the total against the measured time per call tells whether a point is bound by its kernels
    or by the host that launches them. A profiler that cannot run (e.g. no CUPTI) gives ``{}``:
    a benchmark point never fails for its breakdown."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(device).type == "cuda"
    fn()
    _sync(device)
    try:
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                fn()
            _sync(device)
        events = prof.key_averages()
    except Exception as exc:  # noqa: BLE001  (the profiler is optional to a benchmark)
        print(f"# op_times: the profiler failed ({type(exc).__name__}: {exc}); no kernel breakdown", file=sys.stderr)
        return {}
    totals: dict[str, float] = {}
    for ev in events:
        if cuda:
            us = getattr(ev, "self_device_time_total", None)
            us = getattr(ev, "self_cuda_time_total", 0.0) if us is None else us
        else:
            us = ev.self_cpu_time_total
        if us > 0:
            key = short_kernel_name(ev.key)
            totals[key] = totals.get(key, 0.0) + us / calls
    if not totals:
        return {}
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    return {"device_ms": round(sum(totals.values()) / 1e3, 4), "kernels_us": {k: round(v, 2) for k, v in ranked[:top]}}


class Results:
    """Collects rows, prints them as an aligned table and appends JSON lines."""

    def __init__(self, bench: str, json_path: str | None, quick: bool = False):
        self.bench = bench
        self.json_path = json_path
        self.quick = quick
        self.rows: list[dict] = []
        self.env = environment()

    def add(self, **row) -> dict:
        # every row says whether it came from --quick: the tiny sizes reuse the real shapes'
        # names, and bench/_goals.py must never count them as a measurement of a goal
        row = {"bench": self.bench, **row, "quick": self.quick}
        self.rows.append(row)
        if self.json_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.json_path)), exist_ok=True)
            with open(self.json_path, "a") as f:
                f.write(json.dumps({**row, **self.env}) + "\n")
        return row

    def print_table(self, columns: list[str], file=sys.stdout) -> None:
        print(f"# {self.bench} on {self.env['device']} (torch {self.env['torch']}, triton {self.env['triton']})", file=file)
        cells = [[_fmt(r.get(c)) for c in columns] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=file)
        print("  ".join("-" * w for w in widths), file=file)
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths)), file=file)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)
