"""The work that ``bench/gpu_check.sh``'s ``ncu`` stage hands to Nsight Compute: one call of each
op at a benchmark shape between ``cudaProfilerStart`` and ``cudaProfilerStop`` (warm-up calls,
autotuning and compilation happen before, outside that window), so that

    ncu --profile-from-start off ... python bench/_ncu_target.py

reports exactly the kernels of those calls: achieved DRAM throughput, occupancy, stall reasons.
Where the benchmarks say *how fast*, this says *why*: what the next optimization must attack.
The window is process-wide on purpose: the backward kernels of attention and the contrastive
loss are launched by autograd's CUDA device thread, outside any NVTX push/pop range of the
calling thread (an ``--nvtx-include "profile/"`` filter profiled the forward kernels only).
Each call also sits in an NVTX range ``profile <op>`` (a label in the report, not a filter).

    python bench/_ncu_target.py [--ops pose,attn,contrastive]
    python bench/_ncu_target.py --ops pose --device cpu     # a smoke test of the script (CI)
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OPS = ("pose", "attn", "contrastive")


def pose_calls(device: str):
    """The B=256 ``ext-cuda-op`` calls of bench/pose.py, affine and full workloads."""
    import torch
    from pose import WORKLOADS, make_batch, raw_augment

    from slpfast.reference import pose as R

    pose, conf, lengths = make_batch(256, 32, 256, 3, torch.float16)
    x, c, n, i = (t.to(device) for t in (pose, conf, lengths, torch.arange(256) + 1000))
    return [raw_augment(x, c, n, i, 17, WORKLOADS[wl], R.canonical_spec())[0] for wl in ("affine", "full")]


def attn_calls(device: str):
    """bench/attn.py's ragged shape, padded, bf16, forward + backward with the triton backend."""
    import torch
    from attn import SHAPES, make_batch, step_fn

    q, k, v, kw, _ = make_batch(SHAPES["ragged"], "padded", torch.bfloat16, device)
    return [step_fn("triton", q, k, v, kw, "fwd+bwd", False)]


def contrastive_calls(device: str):
    """bench/contrastive.py at N=16k, D=512, bf16, forward + backward with the triton backend."""
    import torch
    from contrastive import _inputs, _step_fn

    x, y, s = _inputs(16384, 512, torch.bfloat16, device)
    return [_step_fn("triton", x, y, s)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated subset of " + ",".join(OPS))
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cpu: a smoke test of this script (pose only; triton needs a GPU at these sizes)")
    args = p.parse_args(argv)
    ops = args.ops.split(",")
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise SystemExit(f"bench/_ncu_target.py: unknown --ops {unknown}; choose from {', '.join(OPS)}")
    import torch

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("bench/_ncu_target.py: needs a CUDA GPU (it is the target of Nsight Compute)")
    if not cuda and ops != ["pose"]:
        raise SystemExit("bench/_ncu_target.py: --device cpu runs --ops pose only")
    # one fixed config per kernel: autotuning would launch every candidate, inside ncu too
    os.environ.setdefault("SLPFAST_ATTN_AUTOTUNE", "0")
    builders = {"pose": pose_calls, "attn": attn_calls, "contrastive": contrastive_calls}
    calls = [(name, fn) for name in ops for fn in builders[name](args.device)]
    for _, fn in calls:  # warm-up: compiles, tunes, caches the layout table
        fn()
    for name, fn in calls:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.profiler.start()  # every thread's kernels from here: autograd's included
            try:
                with torch.cuda.nvtx.range(f"profile {name}"):
                    fn()
                torch.cuda.synchronize()
            finally:
                torch.cuda.profiler.stop()
        else:
            fn()
        print(f"profiled one call of {name}", flush=True)


if __name__ == "__main__":
    main()
