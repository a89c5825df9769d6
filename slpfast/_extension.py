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

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def _checkout_root() -> str | None:
    """The source checkout this package is imported from (in place or editable), or None for an
    installed wheel (whose parent folder is site-packages: a ``csrc`` there is someone else's)."""
    root = os.path.dirname(_PKG_DIR)
    if os.path.isdir(os.path.join(root, "csrc")) and os.path.isfile(os.path.join(root, "setup.py")):
        return root
    return None


def rebuild_command() -> str:
    """How to (re)build the extension for this copy of slpfast: from its checkout when it is one,
    else by reinstalling it (``-e .`` in the user's own project folder would install that project)."""
    root = _checkout_root()
    if root is not None:
        return f"cd {root} && pip install --no-build-isolation --no-deps -e .  (or: bash .ci/setup)"
    return ("reinstall slpfast against the running torch, from its checkout or sdist: "
            "pip install --no-build-isolation --no-deps --force-reinstall <slpfast checkout or sdist>")


REBUILD = rebuild_command()


def _source_hash() -> str | None:
    root = _checkout_root()
    if root is None:
        return None
    return csrc_hash(os.path.join(root, "csrc"))


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
    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):  # cut short by an interrupted build, say: as if missing
        return {}
    return info if isinstance(info, dict) else {}


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
    except Exception as exc:  # ImportError (missing, undefined symbol), or a registration error of a bad build
        missing = isinstance(exc, ModuleNotFoundError) and exc.name == "slpfast._C"
        problem = "slpfast._C is not built" if missing else f"slpfast._C failed to load ({type(exc).__name__}: {exc})"
        _STATUS = ExtensionStatus(False, build_info=info, problem=f"{problem}; build it with: {REBUILD}")
        return _STATUS
    stale = False
    src = _source_hash()
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


def rebuild_reason() -> str | None:
    """Why ``bash .ci/setup`` should (re)build the extension now, or None when the build is current:
    missing, unloadable or built for another torch; stale; built without CUDA although a CUDA
    torch and toolkit are there now (and ``SLPFAST_NO_CUDA`` is not 1); built for other CUDA
    architectures than ``TORCH_CUDA_ARCH_LIST`` asks for."""
    status = load()
    if not status.loaded:
        return status.problem
    if status.stale:
        return "csrc/ changed since the build"
    if not status.with_cuda and torch.version.cuda is not None and os.environ.get("SLPFAST_NO_CUDA") != "1":
        from torch.utils import cpp_extension

        if cpp_extension.CUDA_HOME is not None:
            return f"built without CUDA, but torch {torch.__version__} and the CUDA toolkit in {cpp_extension.CUDA_HOME} are there now"
    want_arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if status.with_cuda and want_arch and status.build_info.get("cuda_arch_list") != want_arch:
        return f"built for CUDA archs {status.build_info.get('cuda_arch_list')}, TORCH_CUDA_ARCH_LIST={want_arch} now"
    return None
