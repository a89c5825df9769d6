"""Builds the extension ``slpfast._C`` (torch custom ops from csrc/) with torch's cpp_extension.

- C++ sources always; CUDA sources (csrc/core/*.cu, csrc/ops/cuda_impl.cpp) whenever the
  installed torch was built with CUDA and a CUDA toolkit is found (``CUDA_HOME``). Set
  ``SLPFAST_NO_CUDA=1`` to force a CPU-only build.
- ``TORCH_CUDA_ARCH_LIST`` is respected; with no GPU visible it defaults to 9.0 (H100/H200).
- Parallel compile jobs (``MAX_JOBS``) are capped by cores and by memory (~2 GiB per job).
- What the extension was built against is written to ``slpfast/_build_info.json`` so that
  ``import slpfast`` can tell a missing, stale or mismatched build apart and say how to rebuild.

Install with ``pip install --no-build-isolation -e .`` (build isolation would fetch a second,
CUDA, torch) or ``python setup.py build_ext --inplace``.
"""
from __future__ import annotations

import glob
import json
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "slpfast"))
from _source_hash import csrc_hash  # noqa: E402  (tiny torch-free helper shared with the runtime check)

sys.path.pop(0)

try:
    import torch
    from torch.utils import cpp_extension
except ImportError as exc:  # pragma: no cover - exercised only on a broken setup
    raise SystemExit(
        f"slpfast: building the extension needs torch, which {sys.executable} cannot import ({exc}). "
        "Install torch first (CPU machines: pip install torch==2.13.0), then build without pip's build "
        "isolation, which hides the installed torch: pip install --no-build-isolation -e ."
    ) from exc


def _want_cuda() -> bool:
    if os.environ.get("SLPFAST_NO_CUDA") == "1":
        return False
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def _cap_jobs() -> None:
    if "MAX_JOBS" in os.environ:
        return
    cores = os.cpu_count() or 1
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 4.0
    os.environ["MAX_JOBS"] = str(max(1, min(cores, int(mem_gib // 2))))


def _sources(with_cuda: bool) -> list[str]:
    srcs = sorted(glob.glob("csrc/core/*.cpp")) + ["csrc/ops/schemas.cpp", "csrc/ops/cpu_impl.cpp"]
    if with_cuda:
        srcs += sorted(glob.glob("csrc/core/*.cu")) + ["csrc/ops/cuda_impl.cpp"]
    return srcs


class BuildExt(cpp_extension.BuildExtension):
    """BuildExtension that also records what the extension was built against."""

    def run(self):
        super().run()
        info = {
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "with_cuda": WITH_CUDA,
            "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if WITH_CUDA else None,
            "python": sys.version.split()[0],
            "csrc_hash": csrc_hash(os.path.join(ROOT, "csrc")),
        }
        # Next to the built library: the source tree for in-place/editable builds, else build_lib.
        target = os.path.join(ROOT, "slpfast") if self.inplace else os.path.join(self.build_lib, "slpfast")
        for d in (target,):
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "_build_info.json"), "w") as f:
                json.dump(info, f, indent=1)


WITH_CUDA = _want_cuda()
_cap_jobs()
if WITH_CUDA and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
    visible = torch.cuda.is_available() and torch.cuda.device_count() > 0
    if not visible:
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"

cxx_flags = ["-O3"]  # the C++ standard is the one torch requires (cpp_extension sets it)
link_flags: list[str] = []
if sys.platform.startswith("linux"):
    # at::parallel_for is a header template: without OpenMP here it runs serially, whatever
    # torch's own thread pool is. torch's Linux wheels use OpenMP (libgomp), so match them.
    cxx_flags.append("-fopenmp")
    link_flags.append("-fopenmp")
if WITH_CUDA:
    ext = cpp_extension.CUDAExtension(
        "slpfast._C",
        _sources(True),
        define_macros=[("SLPFAST_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
        extra_link_args=link_flags,
    )
else:
    ext = cpp_extension.CppExtension("slpfast._C", _sources(False), extra_compile_args={"cxx": cxx_flags},
                                     extra_link_args=link_flags)

setup(
    packages=find_packages(include=["slpfast", "slpfast.*"]) + ["slpfast.kernels"],
    package_dir={"slpfast.kernels": "kernels"},
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=True)},
)
