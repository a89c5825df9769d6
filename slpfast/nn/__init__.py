"""Modules built on :mod:`slpfast.ops` (imported lazily).

- ``MaskedSelfAttention``: qkv + output projections around ``masked_attention``.
- ``ContrastiveLoss``: learnable temperature around ``contrastive_loss``.
"""
from __future__ import annotations

import importlib

_MODULES = {"MaskedSelfAttention": "attention", "ContrastiveLoss": "contrastive"}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        value = getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slpfast.nn' has no attribute {name!r}")
