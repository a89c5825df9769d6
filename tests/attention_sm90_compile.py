"""Ahead-of-time compile of the attention kernels for sm_90 (H100/H200), no GPU needed.

Run by tests/test_attention_triton.py in a subprocess WITHOUT ``TRITON_INTERPRET`` (under the
interpreter ``@triton.jit`` gives interpreted functions that cannot be compiled). Prints one JSON
line per kernel: registers, spill stack bytes, shared memory, whether it uses wgmma. Triton's
bundled ptxas/cuobjdump do the work; the CPU interpreter tests cannot catch what only the GPU
compiler rejects (or compiles into spills).

    python tests/attention_sm90_compile.py [bf16:64:varlen:causal[:all][:fp64scale] ...]
        :all        every kept config (default: the first, what runs with autotuning off)
        :fp64scale  ``scale`` typed fp64, as torch.compile's inductor passes a Python float
"""
from __future__ import annotations

import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sm90_compile import aligned, compile_sm90  # noqa: E402
from slpfast.kernels import attention as kern  # noqa: E402  (maps kernels/ in a source checkout)

POINTERS = {"Q", "K", "V", "O", "DO", "DK", "DV", "DQ"}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _signature(fn, dtype: str, scale_type: str = "fp32") -> dict:
    sig = {}
    for name, param in zip(fn.arg_names, fn.params):
        if param.is_constexpr:
            sig[name] = "constexpr"
        elif name in POINTERS:
            sig[name] = "*" + dtype
        elif name == "LSE":
            sig[name] = "*fp32"
        elif name == "LENS":
            sig[name] = "*i32"
        elif name == "scale":
            sig[name] = scale_type
        else:
            sig[name] = "i32"
    return sig


def _aligned(fn) -> dict:
    """The divisibility-by-16 facts the JIT finds at launch for aligned tensors whose strides are
    multiples of 16 elements (head dims are multiples of 16): every pointer and every tensor
    stride except the rows of the fp32 LSE buffer. Without them no cp.async pipelining."""
    names = {name for name, param in zip(fn.arg_names, fn.params) if not param.is_constexpr and (
        name in POINTERS or name in ("LSE", "LENS") or (name.startswith("s_") and name != "s_lh"))}
    return aligned(fn, names)


def compile_one(fn, dtype: str, constexprs: dict, num_warps: int, num_stages: int, scale_type: str = "fp32") -> dict:
    return compile_sm90(fn, _signature(fn, dtype, scale_type), _aligned(fn), constexprs, num_warps, num_stages)


def check(dtype: str, D: int, varlen: bool, causal: bool, rows: str = "first", scale_type: str = "fp32") -> None:
    block_d = max(16, triton.next_power_of_2(D))
    meta = dict(D=D, VARLEN=varlen, HAS_LENS=True, CAUSAL=causal, BLOCK_D=block_d, EVEN_D=block_d == D,
                DOT_PREC="ieee" if dtype == "fp32" else "tf32")
    probe = torch.empty(1, dtype=DTYPES[dtype])
    for name, table in kern.TABLES.items():
        configs = kern._configs([row[:4] for row in table])
        kept = kern._pruner(table)(configs, {"Q": probe}, D=D)
        for cfg in kept[:1] if rows == "first" else kept:  # the first: what runs with autotuning off
            info = compile_one(kern.KERNELS[name], dtype, {**meta, **cfg.kwargs}, cfg.num_warps, cfg.num_stages,
                               scale_type)
            print(json.dumps({"kernel": name, "dtype": dtype, "D": D, "varlen": varlen, "causal": causal,
                              "scale": scale_type,
                              **cfg.kwargs, "warps": cfg.num_warps, "stages": cfg.num_stages, **info}), flush=True)


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") != "1", "run without TRITON_INTERPRET=1"
    for spec in sys.argv[1:] or ["bf16:64:varlen:causal"]:
        dtype, D, layout, mask, *extra = spec.split(":")
        check(dtype, int(D), layout == "varlen", mask == "causal", "all" if "all" in extra else "first",
              "fp64" if "fp64scale" in extra else "fp32")
