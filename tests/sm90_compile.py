"""Ahead-of-time compile of one Triton kernel for sm_90 (H100/H200) and its resource usage,
without a GPU: Triton's own ptxas builds the cubin and its bundled cuobjdump reads it.

Shared by tests/attention_sm90_compile.py and tests/contrastive_sm90_compile.py (each knows
its kernels' signatures). Run without ``TRITON_INTERPRET`` (interpreted functions cannot be
compiled).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


def aligned(fn, names) -> dict:
    """``tt.divisibility`` 16 attributes for the arguments of ``fn`` named in ``names`` (what the
    JIT finds at launch for aligned pointers and strides that are multiples of 16)."""
    return {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names) if name in names}


def compile_sm90(fn, signature: dict, attrs: dict, constexprs: dict, num_warps: int, num_stages: int) -> dict:
    """-> {regs, stack (spill/local bytes per thread), smem (bytes per block), wgmma, cp_async}."""
    src = ASTSource(fn=fn, signature=signature, attrs=attrs,
                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    return {"regs": int(re.search(r"REG:(\d+)", usage).group(1)),
            "stack": int(re.search(r"STACK:(\d+)", usage).group(1)),
            "smem": compiled.metadata.shared, "wgmma": "wgmma" in compiled.asm["ptx"],
            "cp_async": "cp.async" in compiled.asm["ptx"]}
