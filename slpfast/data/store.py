"""The clip store: sharded, memory-mapped, validated on open, O(1) random access.

A store is a directory::

    store.json                 listing: format/version, J, C, shards (file, clips, frames,
                               bytes), store metadata (e.g. the synthetic vocabulary) and the
                               cached text-feature sets
    shard-00000.slp ...        clip shards (:mod:`.shard_format`, kind "clips")
    textfeat-<name>-<write id>-00000.slp  optional cached text features, one file per clip shard
                               (kind "text_features")

A clip shard holds, for its ``n`` clips:

==================  ===============  =================================================
section             dtype / shape    content
==================  ===============  =================================================
pose                f16 (F, J, 3)    every frame of every clip: x, y, z
conf                f16 (F, J)       confidence of every joint
frame_offsets       i64 (n+1,)       clip i is frames [frame_offsets[i], [i+1])
fps                 f32 (n,)         frames per second
label               i64 (n,)         ISLR class (gloss id of an isolated gloss) or -1
dims                u8 (n,)          spatial dims of the source (2: z is 0)
split/source/       i32 (n,)         codes into the shard's string tables (meta.strings)
language/signer
text_*, key_*       u8 blob + i64    UTF-8 text and the clip key (source id), by offsets
gloss_*             i32 blob + i64   gloss id sequence (may be empty)
==================  ===============  =================================================

Pose is canonical-layout (:mod:`slpfast.layouts`, J = 123) float16; joints a source lacks
have confidence 0 (and coordinates 0). NaN/inf never reach the store: the writer zeroes
them and their confidence, and clamps to the float16 range.

``Store(path)`` opens every shard (magic, version, size, CRCs of the index sections; see
:class:`~slpfast.data.shard_format.ShardFile`), builds a global index and serves ``clip(i)``
and batched gathers (:meth:`Store.gather`) with numba kernels. Clip ``i`` of the store is its
stable global clip id.

Modules: :mod:`.store_format` (format constants, ``store.json``), :mod:`.store_writer`
(:class:`StoreWriter`, :func:`write_clip_shard`, :func:`sanitize_pose`),
:mod:`.store_reader` (:class:`Store`), :mod:`.store_gather` (the batched gathers of
:class:`Store` and :class:`ConcatStore`), :mod:`.store_text_features`
(:class:`TextFeatureWriter`) and :mod:`.store_concat` (:class:`ConcatStore`). This module
re-exports their public names.
"""
from __future__ import annotations

from .shard_format import ShardError
from .store_concat import ConcatStore
from .store_format import CATEGORICAL, CHANNELS, STORE_FORMAT, STORE_VERSION, write_store_json  # noqa: F401
from .store_reader import Store
from .store_text_features import TextFeatureWriter
from .store_writer import StoreWriter, sanitize_pose, write_clip_shard  # noqa: F401

__all__ = ["Store", "StoreWriter", "ConcatStore", "ShardError", "CHANNELS", "TextFeatureWriter"]
