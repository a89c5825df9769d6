"""Benchmark of contrastive_loss: forward + backward median time and peak extra memory per provider.

    python bench/contrastive.py                 # GPU: N in 4k..256k, D=512 (bf16); CPU: see below
    python bench/contrastive.py --quick         # CI / GPU check: small sizes
    python bench/contrastive.py --sizes 32768 --dim 512 --providers chunked,eager   # the CPU goal

GPU: every point in this process; peak extra memory = ``torch.cuda.max_memory_allocated()``
during one forward+backward minus what was allocated before (inputs); eager is marked ``OOM``
where it cannot run. Up to N=16k the rows also carry ``device_ms``, the kernels' own time per call,
and ``kernels_us``, the largest kernels (torch profiler).

CPU: ``triton`` runs only in the interpreter (a test tool, not timed). Each (provider, N) point
runs in a fresh subprocess: peak extra memory = peak RSS (``ru_maxrss``) after one
forward+backward minus the RSS just before it (inputs already allocated). ``ru_maxrss`` is a
high-water mark, so when the op needs less than the import-time peak this is an upper bound.
Eager is skipped (``too big``) where its ~4.1 fp32 N x N buffers would not fit in the
available memory less 2 GiB. Quote ratios, not absolute CPU times.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Results, base_parser, int_at_least, int_list, measure, name_list, op_times  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PROVIDERS = ("triton", "chunked", "eager")  # the backends of slpfast.ops.contrastive_loss


def _inputs(n, d, dtype, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = F.normalize(torch.randn(n, d, generator=g), dim=1)
    y = F.normalize(x + 0.5 * torch.randn(n, d, generator=g), dim=1)
    s = torch.tensor(1 / 0.07, device=device, requires_grad=True)
    return x.to(device, dtype).requires_grad_(), y.to(device, dtype).requires_grad_(), s


def _step_fn(provider, x, y, s, backward: bool = True):
    """forward + backward (``backward=False``: the forward alone, without autograd)."""
    from slpfast.ops import contrastive_loss

    def step():
        if not backward:
            with torch.no_grad():
                return contrastive_loss(x, y, s, backend=provider, gather=False)
        loss = contrastive_loss(x, y, s, backend=provider, gather=False)
        return torch.autograd.grad(loss, (x, y, s))
    return step


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_child(provider, n, d, dtype, repeats) -> dict:
    """One CPU point, in its own process (called with --child)."""
    x, y, s = _inputs(n, d, DTYPES[dtype], "cpu")
    step = _step_fn(provider, x, y, s)
    before = _rss_now()
    step()  # first call: the memory high-water mark
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = measure(step, warmup=1 if n < 16384 else 0, repeats=repeats)  # large N: the call above warmed up
    return {"median_ms": t["median_ms"], "peak_extra_mib": (peak - before) / 2**20, "peak_rss_mib": peak / 2**20}


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_cpu_point(provider, n, d, dtype, repeats) -> dict:
    if provider == "triton":
        return {"status": "interpreter only"}
    # eager keeps ~4.1 fp32 N x N buffers at its peak (measured at N=8192: 4.1 x 256 MiB)
    if provider == "eager" and 4.3 * 4 * n * n > _mem_available() - 2 * 2**30:
        return {"status": "too big"}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", provider, str(n), str(d), dtype, str(repeats)]
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["killed"]
        return {"status": f"failed rc={proc.returncode}: {tail[0][:80]}"}
    return {"status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}


def run_gpu_point(provider, n, d, dtype, repeats) -> dict:
    try:
        x, y, s = _inputs(n, d, DTYPES[dtype], "cuda")
        step = _step_fn(provider, x, y, s)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        t = measure(step, device="cuda", warmup=1, repeats=repeats)
        extra = {}
        if n <= 16384:  # where the device time goes, kernel by kernel (a few calls under the profiler)
            extra.update(op_times(step, "cuda", calls=3))
        if provider == "triton":  # where the time goes, and which paths ran
            from slpfast.kernels import contrastive as kc

            fwd = _step_fn(provider, x, y, s, backward=False)
            extra.update({"fwd_ms": measure(fwd, device="cuda", warmup=1, repeats=repeats)["median_ms"],
                     "products": kc.product_mode(x.dtype, x.device),
                     "configs": kc.chosen_configs(d, x.dtype, x.device, n)})
    except torch.cuda.OutOfMemoryError:
        return {"status": "OOM"}
    except Exception as exc:  # noqa: BLE001  a failed point is a row (bench/_goals.py: missed), not the end of
        # the run: a traceback here lost this N's rows of every provider and every larger N
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        return {"status": f"failed: {type(exc).__name__}: {first}"[:120]}
    finally:
        x = y = s = step = None  # noqa: F841
        try:
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001  (a CUDA error poisons the context: the next points say so)
            pass
    return {"status": "ok", "median_ms": t["median_ms"], "peak_extra_mib": peak / 2**20, **extra}


def main(argv=None):
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int_list(1), metavar="N,...",
                   help="comma-separated N >= 1 (default: by device)")
    p.add_argument("--dim", type=int_at_least(1), default=None, metavar="D",
                   help="D >= 1 (default 512; --quick on CPU: 128)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default bf16 on GPU, fp32 on CPU")
    p.add_argument("--providers", type=name_list(PROVIDERS), default=",".join(PROVIDERS), metavar="NAMES",
                   help="comma-separated subset of %(default)s (default: all)")
    p.add_argument("--child", nargs=5, metavar=("PROVIDER", "N", "D", "DTYPE", "REPEATS"), help=argparse_hide())
    args = p.parse_args(argv)
    if args.child:
        prov, n, d, dtype, reps = args.child
        print(json.dumps(cpu_child(prov, int(n), int(d), dtype, int(reps))))
        return

    gpu = torch.cuda.is_available()
    if args.sizes:
        sizes = args.sizes
    elif gpu:
        sizes = [4096, 16384, 65536] + ([] if args.quick else [262144])
    else:
        sizes = [512, 2048] if args.quick else [4096, 8192, 16384, 32768]
    d = args.dim or (128 if args.quick and not gpu else 512)
    dtype = args.dtype or ("bf16" if gpu else "fp32")
    providers = args.providers
    res = Results("contrastive", args.json, quick=args.quick)
    for n in sizes:
        rows = {}
        for prov in providers:
            if gpu and prov == "chunked" and n > 65536:
                out = {"status": "skipped (fp32 tiles, minutes)"}
            else:
                reps = args.repeats or (3 if (args.quick or n >= 65536) else 10)
                out = (run_gpu_point if gpu else run_cpu_point)(prov, n, d, dtype, reps)
            rows[prov] = out
        eager = rows.get("eager", {})
        for prov, out in rows.items():
            row = dict(N=n, D=d, dtype=dtype, provider=prov, **out)
            if out.get("status") == "ok" and eager.get("status") == "ok":
                row["time_vs_eager"] = out["median_ms"] / eager["median_ms"]
                row["mem_vs_eager"] = out["peak_extra_mib"] / max(eager["peak_extra_mib"], 1e-9)
            res.add(**row)
    cols = ["N", "D", "dtype", "provider", "status", "median_ms"] + (["fwd_ms"] if gpu else []) + ["peak_extra_mib"]
    cols += ([] if gpu else ["peak_rss_mib"]) + ["time_vs_eager", "mem_vs_eager"]
    res.print_table(cols)


def argparse_hide():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
