"""What the writer and the reader of a store agree on: the format constants and ``store.json``.

The layout of a store directory and of its clip shards is described in
:mod:`slpfast.data.store`. This module holds the format name and version, the pose channels,
the categorical clip columns, the float16 range that stored values are clamped to, and the
writing of the ``store.json`` listing.
"""
from __future__ import annotations

import os

from ..layouts import NUM_JOINTS
from .shard_format import atomic_write_json

STORE_FORMAT = "slpfast-store"
STORE_VERSION = 1
CHANNELS = 3  # x, y, z (z = 0 for 2-D sources)
CATEGORICAL = ("split", "source", "language", "signer")
_F16_MAX = 65504.0


def write_store_json(path: str, shards: list[dict], meta: dict, text_features: dict | None = None) -> None:
    atomic_write_json(os.path.join(path, "store.json"), {
        "format": STORE_FORMAT, "version": STORE_VERSION, "num_joints": NUM_JOINTS, "channels": CHANNELS,
        "num_clips": int(sum(s["num_clips"] for s in shards)), "shards": shards, "meta": meta,
        "text_features": text_features or {},
    })
