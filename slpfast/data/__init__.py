"""slpfast.data: keypoint store, converters, synthetic corpus, samplers and loaders.

- :class:`Store` (``slpfast.data.Store(path)``): open + validate a sharded clip store; O(1)
  ``clip(i)``, batched ``gather``; :class:`StoreWriter` writes one (atomic shards).
- :func:`slpfast.data.synthetic.generate_corpus`: the procedural sign-language corpus.
- :mod:`slpfast.data.samplers`: fixed-batch and token-budget samplers (distributed-aware).
- :class:`TorchLoader` / :class:`DaliLoader`: batches of torch tensors (same batches for the
  same seed), resumable from ``state_dict()``; ``make_loader(store, backend="auto", ...)``
  picks one. The batch contract (keys, dtypes, shapes) is in :mod:`slpfast.data.collate`.
- :mod:`slpfast.data.mixing`: several stores mixed with sampling weights.
- ``python -m slpfast.data.convert SRC... --out DIR``: convert .pose / MMPose JSON / npy /
  npz / pickles (+ a CSV/TSV/JSONL manifest) into a store.

Attributes are imported lazily so that ``import slpfast.data`` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Store": "store_reader", "StoreWriter": "store_writer", "ConcatStore": "store_concat",
    "TextFeatureWriter": "store_text_features",
    "ShardError": "shard_format",
    "generate_corpus": "synthetic_corpus", "default_corpus": "synthetic_corpus",
    "FixedBatchSampler": "samplers", "TokenBudgetSampler": "samplers", "BatchPlan": "samplers",
    "MixtureIndices": "mixing", "mix_stores": "mixing",
    "Collator": "collate",
    "TorchLoader": "loader_torch", "DaliLoader": "loader_dali", "make_loader": "loader_torch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slpfast.data' has no attribute {name!r}")


def __dir__():
    return __all__
