"""What the writer and the reader of a store agree on: the format constants and ``store.json``.

The layout of a store directory and of its clip shards is described in
:mod:`slpfast.data.store`. This module holds the format name and version, the pose channels,
the categorical clip columns, the float16 range that stored values are clamped to, and the
``store.json`` listing: writing it, and reading it back validated.
"""
from __future__ import annotations

import json
import os

from ..layouts import NUM_JOINTS
from .shard_format import ShardError, atomic_write_json

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


def read_store_json(path: str) -> dict:
    """The ``store.json`` listing of the store directory ``path``, validated.

    Raises :class:`~.shard_format.ShardError` if it is missing or unreadable, of another
    format, version or joint count, or if its ``shards`` entry is not a list of
    {file, num_clips, file_size} entries. The shards themselves are checked on opening.
    """
    listing = os.path.join(path, "store.json")
    if not os.path.isfile(listing):
        raise ShardError(f"{path}: not a slpfast store (no store.json; a store whose writing or "
                         "overwriting did not finish has none either)")
    try:
        with open(listing) as f:
            info = json.load(f)
    except ValueError as e:
        raise ShardError(f"{listing}: unreadable store listing: {e}") from e
    if not isinstance(info, dict):
        raise ShardError(f"{listing}: not a slpfast store listing (a JSON {type(info).__name__}, not an object)")
    if info.get("format") != STORE_FORMAT:
        raise ShardError(f"{listing}: not a slpfast store listing (format {info.get('format')!r})")
    if info.get("version") != STORE_VERSION:
        raise ShardError(f"{listing}: unsupported store version {info.get('version')} (this slpfast reads {STORE_VERSION})")
    if info.get("num_joints") != NUM_JOINTS:
        raise ShardError(f"{listing}: store has J={info.get('num_joints')}, the canonical layout has {NUM_JOINTS}")
    shards = info.get("shards")
    if not isinstance(shards, list) or not all(
            isinstance(s, dict) and isinstance(s.get("file"), str) and "num_clips" in s and "file_size" in s
            for s in shards):
        raise ShardError(f"{listing}: damaged store listing: 'shards' must be a list of "
                         "{file, num_clips, file_size} entries")
    return info
