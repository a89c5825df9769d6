"""Public functional API of slpfast.

    from slpfast.ops import masked_attention, contrastive_loss, normalize_pose, augment_pose

Each op validates its input (``ValueError`` naming the argument), then dispatches to the
fastest backend that supports it (``backend="auto"``) or to the named one. Ops are imported
lazily so that ``import slpfast.ops`` stays cheap.
"""
from __future__ import annotations

import importlib

# public name -> submodule that defines it
_OPS = {
    "pack_padded": "packing",
    "unpack_packed": "packing",
    "lengths_to_cu_seqlens": "_validate",
    "masked_attention": "attention",
    "contrastive_loss": "contrastive",
    "normalize_pose": "pose",
    "augment_pose": "pose",
    "sample_augment_params": "pose",
    "AugmentConfig": "pose",
}
#: submodules that register an op's dispatcher (imported by ``python -m slpfast.info``)
OP_MODULES = ("packing", "attention", "contrastive", "pose")

__all__ = sorted(_OPS)


def __getattr__(name: str):
    if name in _OPS:
        value = getattr(importlib.import_module(f".{_OPS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slpfast.ops' has no attribute {name!r}")


def __dir__():
    return __all__
