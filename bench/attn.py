"""Benchmark of masked_attention on pose-shaped ragged batches: every provider, fwd and fwd+bwd.

    python bench/attn.py                       # GPU: the named shapes in bf16
    python bench/attn.py --quick               # CI / GPU check: tiny shapes (CPU: fp32; GPU: fwd+bwd,
                                               # no autotuning, so it fits the check's time box)
    python bench/attn.py --quick --interpret   # CPU: also triton, in the Triton interpreter
    python bench/attn.py --shapes ragged --causal --json bench/results/attn.jsonl

Shapes (lengths drawn once from a seeded generator):
  ragged       B=64, T~U(32,256),  H=8,  D=64
  ragged_long  B=32, T~U(64,512),  H=12, D=64
  dense        B=32, T=256,        H=8,  D=64 (no lengths: SDPA takes its flash backend)

Layouts: ``packed`` (total, H, D) + cu_seqlens and ``padded`` (B, T, H, D) + seq_lens; every
call passes ``max_seqlen`` (no host sync). TFLOP/s count real tokens only: 4*sum(L^2)*H*D per
forward, 2.5x that for the backward, halved when causal. ``vs_sdpa`` is the speed-up over SDPA
on the padded layout (with its boolean padding mask; unmasked on ``dense``) in the same mode.
GPU timing: ``triton.testing.do_bench`` (CUDA events, L2 flushed), median and p20-p80; the first
call (autotuning, compiles) is not timed, and flex is compiled afresh for each point. ``host_ms``
(GPU only) is the CPU time to enqueue one call: where it nears ``median_ms`` the point is
host-bound (the H200 run of 2026-11-26 suggests the ragged shapes are). ``device_ms`` (GPU only)
is the kernels' own time per call (torch profiler), ``kernels_us`` its largest kernels (JSON).
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Results, base_parser, measure, name_list, op_times  # noqa: E402

PROVIDERS = ("triton", "flex", "sdpa", "xformers", "eager")
MODES = ("fwd", "fwd+bwd")
LAYOUTS = ("packed", "padded")
# name -> (B, T_min, T_max, H, D); T_min == T_max means dense (no lengths)
SHAPES = {
    "ragged": (64, 32, 256, 8, 64),
    "ragged_long": (32, 64, 512, 12, 64),
    "dense": (32, 256, 256, 8, 64),
}
QUICK_SHAPES = {
    "ragged": (4, 8, 40, 2, 32),
    "dense": (2, 32, 32, 2, 32),
}
# CPU with --interpret: the interpreter costs ~ms per program, so triton gets its own tiny shape
INTERPRET_SHAPES = {"ragged": (2, 4, 20, 1, 16), "dense": (1, 16, 16, 1, 16)}


def build_parser():
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--shapes", type=name_list(SHAPES), default=None, metavar="NAMES",
                   help="comma-separated subset of " + ",".join(SHAPES) + " (default: all; --quick and CPU: "
                        + ",".join(QUICK_SHAPES) + ", the others are skipped)")
    p.add_argument("--providers", type=name_list(PROVIDERS), default=",".join(PROVIDERS), metavar="NAMES",
                   help="comma-separated subset of %(default)s (default: all)")
    p.add_argument("--modes", type=name_list(MODES), default=None, metavar="NAMES",
                   help="comma-separated subset of " + ",".join(MODES) + " (default: both; GPU --quick: fwd+bwd)")
    p.add_argument("--layouts", type=name_list(LAYOUTS), default=",".join(LAYOUTS), metavar="NAMES",
                   help="comma-separated subset of %(default)s (default: both; dense shapes are always padded)")
    p.add_argument("--causal", action="store_true")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"], help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--interpret", action="store_true",
                   help="CPU: run triton in the Triton interpreter (tiny sizes only; sets TRITON_INTERPRET=1)")
    return p


def make_batch(shape, layout, dtype, device, seed=0):
    """-> (q, k, v, kwargs for masked_attention, lengths list)."""
    import torch

    from slpfast.ops import lengths_to_cu_seqlens

    B, lo, hi, H, D = shape
    g = torch.Generator().manual_seed(seed)
    dense = lo == hi
    lens = torch.full((B,), hi) if dense else torch.randint(lo, hi + 1, (B,), generator=g)
    lengths = lens.tolist()
    T = max(lengths)
    if layout == "packed":
        cu = lengths_to_cu_seqlens(lens, torch.int32)
        shp, kw = (int(cu[-1]), H, D), dict(cu_seqlens=cu.to(device), max_seqlen=T)
    else:
        shp, kw = (B, T, H, D), (dict() if dense else dict(seq_lens=lens.to(device, torch.int32), max_seqlen=T))
    qkv = [(torch.randn(shp, generator=g) * 0.5).to(device, dtype).requires_grad_() for _ in range(3)]
    return (*qkv, kw, lengths)


def flops(lengths, H, D, mode, causal):
    fwd = 4.0 * sum(n * n for n in lengths) * H * D * (0.5 if causal else 1.0)
    return fwd * (3.5 if mode == "fwd+bwd" else 1.0)


def step_fn(provider, q, k, v, kw, mode, causal):
    import torch

    from slpfast.ops import masked_attention

    if mode == "fwd":
        def step():
            with torch.no_grad():
                return masked_attention(q, k, v, causal=causal, backend=provider, **kw)
        return step
    grad = torch.randn_like(q)

    def step():
        out = masked_attention(q, k, v, causal=causal, backend=provider, **kw)
        return torch.autograd.grad(out, (q, k, v), grad)
    return step


def time_step(step, device, repeats):
    if device == "cuda":
        import triton.testing

        ms = triton.testing.do_bench(step, warmup=25, rep=repeats, quantiles=[0.5, 0.2, 0.8])
        return {"median_ms": ms[0], "p20_ms": ms[1], "p80_ms": ms[2], "host_ms": host_ms(step), **op_times(step, device)}
    t = measure(step, device=device, warmup=1, repeats=repeats)
    return {k: t[k] for k in ("median_ms", "p20_ms", "p80_ms")}


def host_ms(step, calls: int = 20) -> float:
    """CPU time to enqueue one ``step`` (no sync inside the loop; few calls, so the launch queue
    never fills and blocks). When it is close to ``median_ms`` the provider is host-bound at this
    size: the GPU waits for the Python side, and ``median_ms`` measures that, not the kernels."""
    import torch

    step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        step()
    host = (time.perf_counter() - t0) / calls * 1e3
    torch.cuda.synchronize()
    return host


def why_not(provider, q, k, v, kw, mode, causal, device, interpret):
    """Reasons a provider cannot run this point (empty: it can)."""
    from slpfast.ops.attention import DISPATCHER

    if device == "cpu" and provider == "triton" and not interpret:
        return ["triton on CPU runs only in the interpreter: pass --interpret"]
    inputs = dict(q=q, k=k, v=v, seq_lens=kw.get("seq_lens"), cu_seqlens=kw.get("cu_seqlens"),
                  max_seqlen=kw.get("max_seqlen", q.shape[1]), causal=causal, scale=1.0, forced=True)
    if mode == "fwd":
        q, k, v = (t.detach() for t in (q, k, v))
        inputs.update(q=q, k=k, v=v)
    return DISPATCHER.backends[provider].reasons(**inputs)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    quick_gpu = args.quick and device == "cuda"
    if quick_gpu:  # the GPU check's time box: first fitting config, no tuning runs
        os.environ.setdefault("SLPFAST_ATTN_AUTOTUNE", "0")
    modes = args.modes or (["fwd+bwd"] if quick_gpu else list(MODES))
    if args.interpret and device == "cuda":
        parser.error("argument --interpret: is for CPU machines (this one has a CUDA GPU)")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device == "cuda" else "fp32")]
    shapes = QUICK_SHAPES if (args.quick or device == "cpu") else SHAPES
    names = args.shapes or list(shapes)
    repeats = args.repeats or (100 if device == "cuda" else (3 if args.quick else 5))
    res = Results("attn", args.json, quick=args.quick)
    skipped = {}
    for name in names:
        if name not in shapes:
            print(f"# shape {name}: not run (--quick and CPU runs take {','.join(shapes)} only)")
            continue
        dense = SHAPES[name][1] == SHAPES[name][2]
        for layout in (["padded"] if dense else args.layouts):
            for mode in modes:
                for provider in args.providers:
                    shape = INTERPRET_SHAPES.get(name, shapes[name]) if provider == "triton" and device == "cpu" \
                        else shapes[name]
                    q, k, v, kw, lengths = make_batch(shape, layout, dtype, device)
                    why = why_not(provider, q, k, v, kw, mode, args.causal, device, args.interpret)
                    if why:
                        skipped[(provider, mode)] = why[0]
                        continue
                    if provider == "flex" and device == "cuda" and not args.quick:
                        torch._dynamo.reset()  # flex gets a fresh static-shape compile per point (its best case)
                    t = time_step(step_fn(provider, q, k, v, kw, mode, args.causal), device,
                                  repeats if not (provider == "triton" and device == "cpu") else 1)
                    B, _, _, H, D = shape
                    res.add(shape=name, layout="dense" if dense else layout, mode=mode, provider=provider,
                            B=B, H=H, D=D, max_len=max(lengths), tokens=sum(lengths), causal=args.causal,
                            dtype=str(dtype).replace("torch.", ""), **t,
                            tflops=flops(lengths, H, D, mode, args.causal) / t["median_ms"] / 1e9)
    _add_speedups(res.rows)
    res.print_table(["shape", "layout", "mode", "provider", "max_len", "tokens", "median_ms", "p20_ms", "p80_ms",
                     "host_ms", "device_ms", "tflops", "vs_sdpa"])
    for (provider, mode), why in sorted(skipped.items()):
        print(f"skipped {provider} ({mode}): {why}")
    if device == "cuda":
        _print_goals(res.rows)


def _add_speedups(rows):
    """vs_sdpa: sdpa on the padded layout (same shape, mode, sizes) over this row."""
    base = {(r["shape"], r["mode"], r["tokens"]): r["median_ms"] for r in rows
            if r["provider"] == "sdpa" and r["layout"] in ("padded", "dense")}
    for r in rows:
        b = base.get((r["shape"], r["mode"], r["tokens"]))
        r["vs_sdpa"] = b / r["median_ms"] if b else None


def _print_goals(rows):
    """The issue's goals (bf16, fwd+bwd): ragged >= 1.3x flex and >= 2x sdpa; dense >= 0.9x sdpa."""
    def best(shape, provider):
        ms = [r["median_ms"] for r in rows if r["shape"] == shape and r["provider"] == provider
              and r["mode"] == "fwd+bwd"]
        return min(ms) if ms else None

    print("\ngoals (fwd+bwd, best layout of each provider):")
    for shape in ("ragged", "ragged_long", "dense"):
        tri = best(shape, "triton")
        for other, goal in ((("flex", 1.3), ("sdpa", 2.0)) if shape != "dense" else (("sdpa", 0.9),)):
            ref = best(shape, other)
            if tri and ref:
                ratio = ref / tri
                print(f"  {shape:12s} triton vs {other:5s}: {ratio:5.2f}x (goal >= {goal}x) "
                      f"{'PASS' if ratio >= goal else 'MISS'}")


if __name__ == "__main__":
    main()
