"""Loading of the compiled extension ``slpfast._C`` and a clear diagnosis when it is unusable.

The extension registers ``torch.ops.slpfast.*``. It can be:

- missing (never built),
- mismatched (built against another torch than the one running: loading it could crash), or
- stale (the C++/CUDA sources changed since it was built; still loads, with a warning).

``load()`` returns the status; ``require(op)`` raises ``RuntimeError`` with the rebuild
command when the extension cannot be used.
"""
from __future__ import annotations

import importlib
import json
import os
import warnings
from dataclasses import dataclass, field

import torch

from ._source_hash import csrc_hash

REBUILD = "pip install --no-build-isolation --no-deps -e .  (or: bash .ci/setup)"
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass
class ExtensionStatus:
    loaded: bool
    with_cuda: bool = False
    build_info: dict = field(default_factory=dict)
    problem: str | None = None  # why it is not loaded
    stale: bool = False


_STATUS: ExtensionStatus | None = None


def _read_build_info() -> dict:
    path = os.path.join(_PKG_DIR, "_build_info.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load() -> ExtensionStatus:
    """Import ``slpfast._C`` once (registering the ops) and return what happened."""
    global _STATUS
    if _STATUS is not None:
        return _STATUS
    info = _read_build_info()
    built_for = info.get("torch")
    if built_for and built_for != torch.__version__:
        _STATUS = ExtensionStatus(
            False, build_info=info,
            problem=f"slpfast._C was built for torch {built_for} but torch {torch.__version__} is running; rebuild: {REBUILD}",
        )
        return _STATUS
    try:
        importlib.import_module("slpfast._C")
    except ImportError as exc:
        problem = ("slpfast._C is not built" if "No module named" in str(exc) else f"slpfast._C failed to load ({exc})")
        _STATUS = ExtensionStatus(False, build_info=info, problem=f"{problem}; build it with: {REBUILD}")
        return _STATUS
    stale = False
    src = csrc_hash(os.path.join(os.path.dirname(_PKG_DIR), "csrc"))
    if src is not None and info.get("csrc_hash") not in (None, src):
        stale = True
        warnings.warn(f"slpfast._C is older than the sources in csrc/; rebuild: {REBUILD}", stacklevel=2)
    if "with_cuda" in info:
        with_cuda = bool(info["with_cuda"])
    else:  # no build record (a .so built or copied by other means): ask the dispatcher
        with_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("slpfast::augment_pose", "CUDA")
    _STATUS = ExtensionStatus(True, with_cuda=with_cuda, build_info=info, stale=stale)
    return _STATUS


def require(op_name: str, device: torch.device | None = None) -> None:
    """Raise ``RuntimeError`` (naming ``op_name``) unless the extension can run on ``device``."""
    status = load()
    if not status.loaded:
        raise RuntimeError(f"{op_name}: {status.problem}")
    if device is not None and device.type == "cuda" and not status.with_cuda:
        raise RuntimeError(
            f"{op_name}: slpfast._C was built without CUDA; rebuild with a CUDA torch and CUDA_HOME set: {REBUILD}"
        )


def unavailable_reasons(device_type: str = "cpu") -> list[str]:
    """Reasons the extension cannot run on ``device_type`` (empty list: it can)."""
    status = load()
    if not status.loaded:
        return [status.problem or "slpfast._C not loaded"]
    if device_type == "cuda" and not status.with_cuda:
        return ["slpfast._C was built without CUDA"]
    return []
