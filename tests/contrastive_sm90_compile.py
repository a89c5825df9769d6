"""Ahead-of-time compile of the contrastive kernels' GPU tile candidates for sm_90, no GPU needed.

Run by tests/test_contrastive_triton.py in a subprocess WITHOUT ``TRITON_INTERPRET``. Prints one
JSON line per (kernel, candidate): registers, spill stack bytes, shared memory, wgmma. A
candidate that needs more shared memory than an H100/H200 block may use can never launch
there; the CPU interpreter tests cannot see that.

    python tests/contrastive_sm90_compile.py [bf16:512[:fp64scale] ...]
        :fp64scale  ``scale_log2`` typed fp64, as torch.compile's inductor passes a Python float
"""
from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sm90_compile import aligned, compile_sm90  # noqa: E402
from slpfast.kernels import contrastive as kern  # noqa: E402  (maps kernels/ in a source checkout)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
KERNELS = {"lse": kern._lse_tile_kernel, "bwd": kern._grad_tile_kernel}
#: rows, columns of the problem the candidates are drawn for (large enough to be autotuned)
SIZE = 16384


def _signature(fn, dtype: str, scale_type: str) -> dict:
    return {name: "constexpr" if param.is_constexpr else kern.kernel_arg_type(name, dtype, scale_type)
            for name, param in zip(fn.arg_names, fn.params)}


#: divisible by 16: the pointers, D and the row strides (contiguous (N, D) inputs, D a multiple of
#: 16; G's rows hold K elements, a multiple of 16 in the benchmarks)
ALIGNED = {"A", "B", "G", "LSE_R", "LSE_C", "PS", "ROW_PART", "COL_PART", "D", "stride_a", "stride_b", "stride_g"}


def check(dtype: str, D: int, scale_type: str = "fp32") -> None:
    device = torch.device("cuda")  # the GPU candidates (no GPU is touched)
    prec = "tf32" if dtype != "fp32" else "ieee"
    for kind, fn in KERNELS.items():
        configs = kern._configs(kind, SIZE, SIZE, D, DTYPES[dtype], device)
        for i, cfg in enumerate(configs[:1] if scale_type == "fp64" else configs):
            cfg = dict(cfg)
            warps, stages = cfg.pop("num_warps"), cfg.pop("num_stages")
            meta = dict(cfg, PREC=prec)
            meta.update(COLS=True) if kind == "lse" else meta.update(HAS_R=True, HAS_C=True)
            info = compile_sm90(fn, _signature(fn, dtype, scale_type), aligned(fn, ALIGNED), meta, warps, stages)
            print(json.dumps({"kernel": kind, "dtype": dtype, "D": D, "scale": scale_type, "candidate": i, **cfg,
                              "warps": warps, "stages": stages, **info}), flush=True)


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") != "1", "run without TRITON_INTERPRET=1"
    for spec in sys.argv[1:] or ["bf16:512"]:
        dtype, D, *extra = spec.split(":")
        check(dtype, int(D), "fp64" if "fp64scale" in extra else "fp32")
