"""Writing a store: :class:`StoreWriter` buffers clips and writes them as clip shards.

:func:`sanitize_pose` cleans every clip on the way in (NaN/inf zeroed with confidence 0,
values clamped to the float16 range), :func:`write_clip_shard` lays out one clip shard
(sections in :mod:`slpfast.data.store`) and ``StoreWriter.close()`` lists the shards in
``store.json``.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from ..layouts import NUM_JOINTS
from .shard_format import fsync_dir, write_shard
from .store_format import _F16_MAX, CATEGORICAL, write_store_json


def _blob(strings: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offs = np.zeros(len(strings) + 1, np.int64)
    if strings:
        offs[1:] = np.cumsum([len(s) for s in strings])
    blob = np.frombuffer(b"".join(strings), np.uint8) if strings else np.zeros(0, np.uint8)
    return blob.copy(), offs


def sanitize_pose(pose: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (T, J, 3) / (T, J) with NaN/inf -> 0 (conf 0) and values clamped to float16 range."""
    pose = np.asarray(pose, np.float32)
    conf = np.asarray(conf, np.float32)
    bad = ~np.isfinite(pose).all(-1) | ~np.isfinite(conf)
    if bad.any():
        pose = np.where(bad[..., None], 0.0, pose).astype(np.float32)
        conf = np.where(bad, 0.0, conf).astype(np.float32)
    pose = np.clip(pose, -_F16_MAX, _F16_MAX)
    conf = np.clip(conf, 0.0, 1.0)
    return pose, conf


class StoreWriter:
    """Append clips and write shards atomically; ``close()`` writes ``store.json``.

    Use as a context manager. Shards are flushed every ``shard_clips`` clips or
    ``shard_bytes`` bytes of pose. ``close()`` (or leaving the ``with`` block normally) lists
    the shards in ``store.json`` (atomically); an exception inside the block leaves no
    ``store.json`` update, so a half-written store is never opened as complete.

    ``overwrite=True`` over an existing store first removes its ``store.json`` (one atomic
    unlink) and then its cached text-feature files, before any shard is written: until
    ``close()`` the directory is an incomplete store that :class:`Store` refuses, never the
    old listing over a mix of old and new shards (with the old texts' features attached).
    ``overwrite=False`` raises ``FileExistsError`` if ``path`` holds a store.
    """

    def __init__(self, path: str, *, meta: dict | None = None, shard_clips: int = 4096,
                 shard_bytes: int = 256 << 20, shard_prefix: str = "shard", start_index: int = 0,
                 overwrite: bool = True):
        self.path = path
        os.makedirs(path, exist_ok=True)
        if os.path.exists(os.path.join(path, "store.json")):
            if not overwrite:
                raise FileExistsError(f"{path} already holds a store")
            _unlist_store(path)
        self.meta = dict(meta or {})
        self.shard_clips = shard_clips
        self.shard_bytes = shard_bytes
        self.prefix = shard_prefix
        self.shards: list[dict] = []
        self._next_shard = start_index
        self._reset()
        self.num_clips = 0

    def _reset(self):
        self._pose: list[np.ndarray] = []
        self._cols: dict[str, list] = {k: [] for k in ("fps", "label", "dims", "text", "key", "gloss") + CATEGORICAL}
        self._bytes = 0

    def add(self, pose: np.ndarray, conf: np.ndarray, *, text: str = "", split: str = "train",
            source: str = "", language: str = "", signer: str = "", fps: float = 25.0,
            label: int = -1, glosses: Sequence[int] | None = None, key: str = "", dims: int | None = None) -> None:
        """Add one clip: ``pose`` (T, J, 2 or 3) canonical layout, ``conf`` (T, J)."""
        pose = np.asarray(pose)
        conf = np.asarray(conf)
        if pose.ndim != 3 or pose.shape[1] != NUM_JOINTS or pose.shape[2] not in (2, 3):
            raise ValueError(f"pose must be (T, {NUM_JOINTS}, 2 or 3), got {pose.shape}")
        if conf.shape != pose.shape[:2]:
            raise ValueError(f"conf must be {pose.shape[:2]}, got {conf.shape}")
        if pose.shape[0] == 0:
            raise ValueError("empty clip (T = 0)")
        d = pose.shape[2]
        pose, conf = sanitize_pose(pose, conf)
        rec = np.zeros((pose.shape[0], NUM_JOINTS, 3), np.float16)
        rec[..., :d] = pose
        self._pose.append((rec, conf.astype(np.float16)))
        c = self._cols
        c["fps"].append(float(fps))
        c["label"].append(int(label))
        c["dims"].append(int(dims if dims is not None else d))
        c["text"].append((text or "").encode("utf-8"))
        c["key"].append((key or "").encode("utf-8"))
        c["gloss"].append(np.asarray(glosses if glosses is not None else [], np.int32).reshape(-1))
        for k, v in (("split", split), ("source", source), ("language", language), ("signer", signer)):
            c[k].append(str(v))
        self._bytes += rec.nbytes * 4 // 3
        self.num_clips += 1
        if len(self._pose) >= self.shard_clips or self._bytes >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered clips as one shard (atomically)."""
        if not self._pose:
            return
        name = f"{self.prefix}-{self._next_shard:05d}.slp"
        info = write_clip_shard(os.path.join(self.path, name), self._pose, self._cols)
        self.shards.append({"file": name, **info})
        self._next_shard += 1
        self._reset()

    def close(self) -> "StoreWriter":
        self.flush()
        write_store_json(self.path, self.shards, self.meta)
        return self

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()


def _unlist_store(path: str) -> None:
    """Make the store at ``path`` incomplete before it is rewritten in place: the new shards
    replace the old ones file by file, so the old ``store.json`` would list (and a crash would
    leave) a mix of old and new clips. Its text-feature files are removed too: they belong to
    the old clips and would only be orphans (the new listing does not name them)."""
    listing = os.path.join(path, "store.json")
    try:
        with open(listing) as f:
            old = json.load(f)
        feats = [fn for tf in (old.get("text_features") or {}).values() for fn in tf.get("files", [])]
    except (OSError, ValueError, AttributeError, TypeError):  # an unreadable listing: nothing to clean
        feats = []
    os.unlink(listing)  # first: from here on no reader opens the store as complete
    fsync_dir(path)  # the unlink is durable before new shards land
    for fn in feats:
        if os.path.basename(fn) == fn and fn.startswith("textfeat-"):  # only files of this store
            try:
                os.unlink(os.path.join(path, fn))
            except FileNotFoundError:
                pass


def write_clip_shard(path: str, poses: list[tuple[np.ndarray, np.ndarray]], cols: dict) -> dict:
    """Write one clip shard from float16 ((T, J, 3), (T, J)) pose/confidence pairs and column
    lists. Returns its listing."""
    n = len(poses)
    lengths = np.array([p.shape[0] for p, _ in poses], np.int64)
    offs = np.zeros(n + 1, np.int64)
    offs[1:] = np.cumsum(lengths)
    strings = {}
    codes = {}
    for k in CATEGORICAL:
        table: dict[str, int] = {}
        codes[k] = np.array([table.setdefault(v, len(table)) for v in cols[k]], np.int32)
        strings[k] = list(table)
    text_blob, text_offs = _blob(cols["text"])
    key_blob, key_offs = _blob(cols["key"])
    gl = cols["gloss"]
    gloss_offs = np.zeros(n + 1, np.int64)
    gloss_offs[1:] = np.cumsum([len(g) for g in gl])
    gloss_blob = np.concatenate(gl).astype(np.int32) if n and gloss_offs[-1] else np.zeros(0, np.int32)
    sections = {
        "pose": np.concatenate([p for p, _ in poses], 0) if n else np.zeros((0, NUM_JOINTS, 3), np.float16),
        "conf": np.concatenate([c for _, c in poses], 0) if n else np.zeros((0, NUM_JOINTS), np.float16),
        "frame_offsets": offs,
        "fps": np.array(cols["fps"], np.float32),
        "label": np.array(cols["label"], np.int64),
        "dims": np.array(cols["dims"], np.uint8),
        **codes,
        "text_blob": text_blob, "text_offsets": text_offs,
        "key_blob": key_blob, "key_offsets": key_offs,
        "gloss_blob": gloss_blob, "gloss_offsets": gloss_offs,
    }
    size = write_shard(path, sections, kind="clips", meta={"strings": strings, "num_clips": n, "num_joints": NUM_JOINTS})
    return {"num_clips": n, "num_frames": int(offs[-1]), "file_size": size}
