"""Writing cached text-encoder features next to a store's clip shards.

:class:`TextFeatureWriter` writes one ``textfeat-<name>-<write id>-NNNNN.slp`` file (kind
"text_features") per clip shard and registers the set in ``store.json``; :class:`Store`
reads them back (``Store.text_features``).

Every write uses fresh file names (the write id), so re-writing a name never touches the
files the current ``store.json`` lists: until the new listing is in place (one atomic
rename) readers see the old set whole, and a write that fails or is interrupted leaves the
old set valid. The old set's files are removed after the new listing is durable.
"""
from __future__ import annotations

import json
import os
import uuid
from typing import TYPE_CHECKING

import numpy as np

from .shard_format import ShardError, atomic_write_json, fsync_dir, write_shard
from .store_format import _F16_MAX, read_store_json

if TYPE_CHECKING:
    from .store_reader import Store


class TextFeatureWriter:
    """Appends cached text features in clip order; writes one file per clip shard, atomically.

    ``add(pooled (b, D), tokens list of (L_i, D) or None)`` any number of times; ``close()``
    (or the end of a ``with`` block) checks that every clip got features and registers the set
    in ``store.json`` (atomically). Re-writing a name replaces it; until ``close()`` has
    registered the new set, the old one stays listed and intact. An exception inside the
    ``with`` block (or a failing ``close()``) removes the files written so far.

    ``pooled`` rows are float (D,) per clip; ``tokens[i]`` is (L_i, D). Both are stored as
    float16 (values clipped to the float16 range).
    """

    def __init__(self, store: Store, name: str, dim: int | None, meta: dict | None = None):
        if not name or "/" in name or os.sep in name:
            raise ValueError(f"bad feature set name {name!r}")
        self.store = store
        self.name = name
        self.dim = dim
        self.meta = meta or {}
        self.files: list[str] = []
        self._shard = 0
        self._pooled: list[np.ndarray] = []
        self._tokens: list[np.ndarray] = []
        self._count = 0  # rows buffered for the current shard
        self._registered = False
        self._write_id = uuid.uuid4().hex[:12]  # fresh file names: the listed set is never overwritten

    def add(self, pooled, tokens=None) -> None:
        pooled = np.asarray(pooled, np.float32)
        if pooled.ndim != 2:
            raise ValueError(f"pooled must be (b, D), got {pooled.shape}")
        if self.dim is None:
            self.dim = pooled.shape[1]
        if pooled.shape[1] != self.dim:
            raise ValueError(f"pooled dim {pooled.shape[1]} != {self.dim}")
        if tokens is not None and len(tokens) != pooled.shape[0]:
            raise ValueError("tokens must have one array per pooled row")
        bad = ~np.isfinite(pooled).all(1)
        if tokens is not None:
            bad |= np.array([not np.isfinite(np.asarray(t, np.float32)).all() for t in tokens], bool)
        if bad.any():  # a cached NaN would turn every contrastive loss that meets it into NaN
            raise ValueError(f"text features of {int(bad.sum())} clip(s) contain NaN or inf (first: row "
                             f"{int(np.flatnonzero(bad)[0])} of this add() call); nothing of this call was kept")
        for r in range(pooled.shape[0]):
            if self._shard >= len(self.store.shards):
                raise ValueError(f"more feature rows than clips ({len(self.store)})")
            self._pooled.append(pooled[r])
            t = np.zeros((0, self.dim), np.float32) if tokens is None else np.asarray(tokens[r], np.float32).reshape(-1, self.dim)
            self._tokens.append(t)
            self._count += 1
            if self._count == self.store.shards[self._shard].meta["num_clips"]:
                self._flush()

    def _flush(self) -> None:
        fname = f"textfeat-{self.name}-{self._write_id}-{self._shard:05d}.slp"
        offs = np.zeros(len(self._tokens) + 1, np.int64)
        offs[1:] = np.cumsum([t.shape[0] for t in self._tokens])
        sections = {
            "pooled": np.clip(np.stack(self._pooled), -_F16_MAX, _F16_MAX).astype(np.float16),
            "tokens": (np.clip(np.concatenate(self._tokens), -_F16_MAX, _F16_MAX).astype(np.float16)
                       if offs[-1] else np.zeros((0, self.dim), np.float16)),
            "token_offsets": offs,
        }
        write_shard(os.path.join(self.store.path, fname), sections, kind="text_features",
                    meta={"name": self.name, "dim": self.dim, **self.meta})
        self.files.append(fname)
        self._shard += 1
        self._pooled, self._tokens, self._count = [], [], 0
        # skip empty shards
        while self._shard < len(self.store.shards) and self.store.shards[self._shard].meta["num_clips"] == 0:
            self._flush()

    def close(self) -> None:
        try:
            self._close()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove the files this writer has written (the listed set, if any, stays as it was).
        Does nothing once ``close()`` has registered them. A file that ``store.json`` lists is
        never removed: an interrupt can land after the listing was replaced and before
        ``close()`` learnt of it (in the directory fsync that follows the rename), and when the
        listing cannot be read nothing is removed (stray files cost disk space, not data)."""
        if self._registered:
            return
        try:
            sets = (read_store_json(self.store.path).get("text_features") or {}).values()
            listed = {fname for tf in sets for fname in tf.get("files", [])}
        except (ShardError, OSError, AttributeError, TypeError):
            return
        for fname in self.files:
            if fname in listed:
                continue
            try:
                os.unlink(os.path.join(self.store.path, fname))
            except FileNotFoundError:
                pass
        self.files = []

    def _close(self) -> None:
        while self._shard < len(self.store.shards) and self.store.shards[self._shard].meta["num_clips"] == 0:
            self._flush()
        if self._shard != len(self.store.shards) or self._count:
            given = int(self.store.clip_offsets[min(self._shard, len(self.store.shards))]) + self._count
            raise ValueError(f"text features for {given} clips given, the store has {len(self.store)}; "
                             f"nothing was registered")
        listing = os.path.join(self.store.path, "store.json")
        with open(listing) as f:
            info = json.load(f)
        old = (info.get("text_features") or {}).get(self.name) or {}
        info.setdefault("text_features", {})[self.name] = {"files": self.files, "dim": int(self.dim), "meta": self.meta}
        atomic_write_json(listing, info)  # fsyncs the directory: the new set is durable before the old goes
        self._registered = True
        stale = [f for f in old.get("files", []) if f not in self.files
                 and os.path.basename(f) == f and f.startswith("textfeat-")]
        for f in stale:
            try:
                os.unlink(os.path.join(self.store.path, f))
            except FileNotFoundError:
                pass
        if stale:
            fsync_dir(self.store.path)
        # only this set's entry and files change in the open store (the other sets stay as they
        # were opened, listing and files alike); re-opening lets go of its old files first and
        # makes room for the new ones (one descriptor per clip shard: thousands in a large store)
        self.store.info.setdefault("text_features", {})[self.name] = info["text_features"][self.name]
        self.store._open_text_feature_set(self.name, info["text_features"][self.name])

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
