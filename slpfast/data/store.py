"""The clip store: sharded, memory-mapped, validated on open, O(1) random access.

A store is a directory::

    store.json                 listing: format/version, J, C, shards (file, clips, frames,
                               bytes), store metadata (e.g. the synthetic vocabulary) and the
                               cached text-feature sets
    shard-00000.slp ...        clip shards (:mod:`.shard_format`, kind "clips")
    textfeat-<name>-00000.slp  optional cached text features, one file per clip shard
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
"""
from __future__ import annotations

import json
import os
import threading
from typing import Sequence

import numpy as np

from ..layouts import NUM_JOINTS
from .shard_format import ShardError, ShardFile, atomic_write_json, write_shard

STORE_FORMAT = "slpfast-store"
STORE_VERSION = 1
CHANNELS = 3  # x, y, z (z = 0 for 2-D sources)
CATEGORICAL = ("split", "source", "language", "signer")
_F16_MAX = 65504.0

__all__ = ["Store", "StoreWriter", "ConcatStore", "ShardError", "CHANNELS", "TextFeatureWriter"]


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
    """

    def __init__(self, path: str, *, meta: dict | None = None, shard_clips: int = 4096,
                 shard_bytes: int = 256 << 20, shard_prefix: str = "shard", start_index: int = 0,
                 overwrite: bool = True):
        self.path = path
        os.makedirs(path, exist_ok=True)
        if not overwrite and os.path.exists(os.path.join(path, "store.json")):
            raise FileExistsError(f"{path} already holds a store")
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


def write_store_json(path: str, shards: list[dict], meta: dict, text_features: dict | None = None) -> None:
    atomic_write_json(os.path.join(path, "store.json"), {
        "format": STORE_FORMAT, "version": STORE_VERSION, "num_joints": NUM_JOINTS, "channels": CHANNELS,
        "num_clips": int(sum(s["num_clips"] for s in shards)), "shards": shards, "meta": meta,
        "text_features": text_features or {},
    })


def _typed_list(arrays):
    from numba.typed import List

    lst = List()
    for a in arrays:
        lst.append(a)
    return lst


class _ClipSource:
    """What the gather kernels need: the shard arrays and a flat per-clip index."""

    pose_arrays: list  # flat uint16 (frames*J*3,) per shard
    conf_arrays: list  # flat uint16 (frames*J,) per shard
    shard_of: np.ndarray  # int32 (N,)
    frame_start: np.ndarray  # int64 (N,) first frame of each clip inside its shard
    lengths: np.ndarray  # int64 (N,)

    _typed = None
    _lock = threading.Lock()

    def typed_shards(self):
        if self._typed is None:
            with self._lock:
                if self._typed is None:
                    self._typed = (_typed_list(self.pose_arrays), _typed_list(self.conf_arrays))
        return self._typed

    # ----------------------------------------------------------------------------- gathers
    def gather(self, indices, *, starts=None, lengths=None, max_len: int | None = None,
               channels: int = CHANNELS, packed: bool = False, out: dict | None = None) -> dict:
        """Gather clips into a float32 batch.

        Args:
            indices: (B,) clip indices.
            starts, lengths: optional (B,) crop of each clip (frame offset inside the clip and
                number of frames); default: whole clips.
            max_len: padded length (default: the longest clip of the batch).
            channels: 2 or 3 coordinates.
            packed: if True return {"pose": (sum T, J, C), "conf", "cu_seqlens" int32 (B+1,)};
                else {"pose": (B, T, J, C), "conf": (B, T, J)}. Both with "lengths" int64.
            out: optional dict of preallocated float32 arrays {"pose", "conf"} to fill.
        """
        from . import _kernels

        idx = np.asarray(indices, np.int64)
        B = idx.shape[0]
        full = self.lengths[idx]
        st = np.zeros(B, np.int64) if starts is None else np.asarray(starts, np.int64)
        ln = full.copy() if lengths is None else np.asarray(lengths, np.int64)
        if B and ((st < 0).any() or (ln < 0).any() or (st + ln > full).any()):
            raise IndexError("crop outside the clip")
        if channels not in (2, 3):
            raise ValueError(f"channels must be 2 or 3, got {channels}")
        sid = self.shard_of[idx].astype(np.int64)
        abs_start = self.frame_start[idx] + st
        J = NUM_JOINTS
        if packed:
            cu = np.zeros(B + 1, np.int64)
            cu[1:] = np.cumsum(ln)
            total = int(cu[-1])
            pose = out["pose"] if out else np.empty((total, J, channels), np.float32)
            conf = out["conf"] if out else np.empty((total, J), np.float32)
            p1 = pose.reshape(-1)
            c1 = conf.reshape(-1)
            if B:
                _kernels.gather_packed(*self.typed_shards(), J, sid, abs_start, ln, cu, channels,
                                       p1.view(np.uint32), p1, c1.view(np.uint32), c1)
            return {"pose": pose, "conf": conf, "lengths": ln, "cu_seqlens": cu.astype(np.int32)}
        T = int(ln.max()) if B else 0
        if max_len is not None:
            if max_len < T:
                raise ValueError(f"max_len={max_len} < longest clip {T}")
            T = max_len
        pose = out["pose"] if out else np.empty((B, T, J, channels), np.float32)
        conf = out["conf"] if out else np.empty((B, T, J), np.float32)
        p2 = pose.reshape(B, T * J * channels)
        c2 = conf.reshape(B, T * J)
        if B:
            _kernels.gather_padded(*self.typed_shards(), J, sid, abs_start, ln, channels,
                                   p2.view(np.uint32), p2, c2.view(np.uint32), c2)
        return {"pose": pose, "conf": conf, "lengths": ln}

    # ----------------------------------------------------------------------- texts, glosses
    def texts(self, indices) -> list[str]:
        """Texts of ``indices`` (vectorised index lookup, one decode per clip)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        sid, a, b = self.shard_of[idx], self.text_start[idx], self.text_end[idx]
        blobs = self.text_blobs
        return [bytes(blobs[k][x:y]).decode("utf-8") for k, x, y in zip(sid.tolist(), a.tolist(), b.tolist())]

    def gloss_lists(self, indices) -> list[np.ndarray]:
        idx = np.asarray(indices, np.int64).reshape(-1)
        sid, a, b = self.shard_of[idx], self.gloss_start[idx], self.gloss_end[idx]
        blobs = self.gloss_blobs
        return [blobs[k][x:y].astype(np.int64) for k, x, y in zip(sid.tolist(), a.tolist(), b.tolist())]

    def padded_glosses(self, indices, fill: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(B, G) int64 gloss ids padded with ``fill`` and (B,) lengths (numba gather)."""
        from . import _kernels

        idx = np.asarray(indices, np.int64).reshape(-1)
        a, b = self.gloss_start[idx], self.gloss_end[idx]
        lens = (b - a).astype(np.int64)
        G = int(lens.max()) if len(idx) else 0
        out = np.full((len(idx), G), fill, np.int64)
        if G:
            if self._typed_gloss is None:
                self._typed_gloss = _typed_list(self.gloss_blobs)
            _kernels.gather_ints(self._typed_gloss, self.shard_of[idx].astype(np.int64), a, lens, out)
        return out, lens

    _typed_gloss = None

    def raw(self, i: int, start: int = 0, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """float16 pose (T, J, 3) and confidence (T, J) views of clip ``i`` (no copy)."""
        i = int(i)
        L = int(self.lengths[i]) if length is None else int(length)
        s = int(self.frame_start[i]) + int(start)
        sh = int(self.shard_of[i])
        J = NUM_JOINTS
        p = self.pose_arrays[sh][s * J * 3: (s + L) * J * 3].view(np.float16).reshape(L, J, 3)
        c = self.conf_arrays[sh][s * J: (s + L) * J].view(np.float16).reshape(L, J)
        return p, c


class Store(_ClipSource):
    """A read-only clip store (see the module docstring).

    Args:
        path: the store directory.
        verify: "fast" (default: sizes, header and index CRCs), "full" (also the pose
            CRCs: reads everything) or "none" (sizes only).

    Attributes: ``meta`` (store metadata dict), ``lengths`` (N,) frames per clip, ``labels``,
    ``fps``, ``dims``, and for each of split/source/language/signer a code array
    (``codes[name]``) with its string table (``tables[name]``).
    """

    def __init__(self, path: str, *, verify: str = "fast"):
        self.path = os.fspath(path)
        self.verify = verify
        listing = os.path.join(self.path, "store.json")
        if not os.path.isfile(listing):
            raise ShardError(f"{self.path}: not a slpfast store (no store.json)")
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
        self.info = info
        self.meta = info.get("meta", {})
        self.shards: list[ShardFile] = []
        shards = info.get("shards")
        if not isinstance(shards, list) or not all(
                isinstance(s, dict) and isinstance(s.get("file"), str) and "num_clips" in s and "file_size" in s
                for s in shards):
            raise ShardError(f"{listing}: damaged store listing: 'shards' must be a list of "
                             "{file, num_clips, file_size} entries")
        for s in shards:
            sh = ShardFile(os.path.join(self.path, s["file"]), verify=verify, expect_kind="clips")
            if sh.meta.get("num_clips") != s["num_clips"] or sh.file_size != s["file_size"]:
                raise ShardError(f"{sh.path}: shard does not match store.json "
                                 f"({sh.meta.get('num_clips')} clips / {sh.file_size} bytes, listed "
                                 f"{s['num_clips']} / {s['file_size']})")
            self.shards.append(sh)
        self._build_index()
        self._text_features: dict[str, list[ShardFile]] = {}
        self._open_text_features()

    # ------------------------------------------------------------------------- index
    def _build_index(self) -> None:
        shards = self.shards
        counts = [sh.meta["num_clips"] for sh in shards]
        self.clip_offsets = np.zeros(len(shards) + 1, np.int64)
        self.clip_offsets[1:] = np.cumsum(counts)
        N = int(self.clip_offsets[-1])
        for sh in shards:
            if sh["pose"].shape[1:] != (NUM_JOINTS, 3) or sh["conf"].shape != sh["pose"].shape[:2]:
                raise ShardError(f"{sh.path}: pose {sh['pose'].shape} / conf {sh['conf'].shape} are not (F, {NUM_JOINTS}, 3) / (F, {NUM_JOINTS})")
        self.pose_arrays = [sh["pose"].view(np.uint16).reshape(-1) for sh in shards]
        self.conf_arrays = [sh["conf"].view(np.uint16).reshape(-1) for sh in shards]
        cat = lambda name, dt: (np.concatenate([sh[name] for sh in shards]).astype(dt)  # noqa: E731
                                if shards else np.zeros(0, dt))
        self.shard_of = np.repeat(np.arange(len(shards), dtype=np.int32), counts)
        self.frame_start = (np.concatenate([sh["frame_offsets"][:-1] for sh in shards]) if shards
                            else np.zeros(0, np.int64)).astype(np.int64)
        self.lengths = (np.concatenate([np.diff(sh["frame_offsets"]) for sh in shards]) if shards
                        else np.zeros(0, np.int64)).astype(np.int64)
        for sh, n in zip(shards, counts):
            fo = sh["frame_offsets"]
            if fo.shape[0] != n + 1 or (n and (fo[0] != 0 or fo[-1] != sh["pose"].shape[0] or (np.diff(fo) < 0).any())):
                raise ShardError(f"{sh.path}: corrupt frame index")
        self.text_blobs = [sh["text_blob"] for sh in shards]
        self.gloss_blobs = [np.ascontiguousarray(sh["gloss_blob"], np.int32) for sh in shards]
        self.text_start = np.concatenate([sh["text_offsets"][:-1] for sh in shards]) if shards else np.zeros(0, np.int64)
        self.text_end = np.concatenate([sh["text_offsets"][1:] for sh in shards]) if shards else np.zeros(0, np.int64)
        self.gloss_start = np.concatenate([sh["gloss_offsets"][:-1] for sh in shards]) if shards else np.zeros(0, np.int64)
        self.gloss_end = np.concatenate([sh["gloss_offsets"][1:] for sh in shards]) if shards else np.zeros(0, np.int64)
        self.labels = cat("label", np.int64)
        self.fps = cat("fps", np.float32)
        self.dims = cat("dims", np.uint8)
        self.tables: dict[str, list[str]] = {}
        self.codes: dict[str, np.ndarray] = {}
        for k in CATEGORICAL:
            table: dict[str, int] = {}
            parts = []
            for sh in shards:
                local = sh.meta["strings"][k]
                remap = np.array([table.setdefault(v, len(table)) for v in local] or [0], np.int32)
                parts.append(remap[sh[k]] if sh[k].size else np.zeros(0, np.int32))
            self.tables[k] = list(table)
            self.codes[k] = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        self._n = N

    def __len__(self) -> int:
        return self._n

    def __getstate__(self):  # pickles as its path (workers re-open and re-map)
        return {"path": self.path, "verify": "none"}

    def __setstate__(self, state):
        self.__init__(state["path"], verify=state["verify"])

    def _loc(self, i: int) -> tuple[ShardFile, int]:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"clip index must be an int, got {type(i).__name__} {i!r}")
        if not -self._n <= i < self._n:
            raise IndexError(f"clip index {i} out of range for a store of {self._n} clips")
        i = int(i) % self._n
        s = int(self.shard_of[i])
        return self.shards[s], i - int(self.clip_offsets[s])

    # ------------------------------------------------------------------------- per clip
    def text(self, i: int) -> str:
        sh, k = self._loc(i)
        o = sh["text_offsets"]
        return bytes(sh["text_blob"][o[k]: o[k + 1]]).decode("utf-8")

    def key(self, i: int) -> str:
        sh, k = self._loc(i)
        o = sh["key_offsets"]
        return bytes(sh["key_blob"][o[k]: o[k + 1]]).decode("utf-8")

    def glosses(self, i: int) -> np.ndarray:
        sh, k = self._loc(i)
        o = sh["gloss_offsets"]
        return np.asarray(sh["gloss_blob"][o[k]: o[k + 1]], np.int64)

    def category(self, name: str, i: int) -> str:
        return self.tables[name][int(self.codes[name][i])]

    def clip(self, i: int) -> dict:
        """Everything about clip ``i``: float32 pose (T, J, 3), conf (T, J), text, glosses, metadata."""
        self._loc(i)  # range check
        i = int(i) % self._n
        b = self.gather([i])
        d = {"pose": b["pose"][0], "conf": b["conf"][0], "clip_id": i, "text": self.text(i),
             "gloss_ids": self.glosses(i), "label": int(self.labels[i]), "fps": float(self.fps[i]),
             "dims": int(self.dims[i]), "key": self.key(i)}
        for k in CATEGORICAL:
            d[k] = self.category(k, i)
        for name in self._text_features:
            pooled, tokens = self.text_features(name, [i])
            d[f"text_features/{name}"] = pooled[0]
            d[f"text_token_features/{name}"] = tokens[0]
        return d

    def __getitem__(self, i: int) -> dict:
        return self.clip(i)

    def indices(self, split: str | Sequence[str] | None = None, **where) -> np.ndarray:
        """Clip indices of a split (or several), optionally filtered by source/language/signer."""
        mask = np.ones(self._n, bool)
        conds = dict(where)
        if split is not None:
            conds["split"] = split
        for k, v in conds.items():
            vals = [v] if isinstance(v, str) else list(v)
            codes = [self.tables[k].index(x) for x in vals if x in self.tables[k]]
            mask &= np.isin(self.codes[k], codes)
        return np.flatnonzero(mask).astype(np.int64)

    @property
    def splits(self) -> list[str]:
        return list(self.tables["split"])

    # ------------------------------------------------------------------------- text features
    def _open_text_features(self) -> None:
        for name, tf in self.info.get("text_features", {}).items():
            files = [ShardFile(os.path.join(self.path, f), verify=self.verify, expect_kind="text_features")
                     for f in tf["files"]]
            for f, sh in zip(files, self.shards):
                if f["pooled"].shape[0] != sh.meta["num_clips"]:
                    raise ShardError(f"{f.path}: {f['pooled'].shape[0]} rows, its clip shard has {sh.meta['num_clips']}")
            if len(files) != len(self.shards):
                raise ShardError(f"{self.path}: text features {name!r} have {len(files)} files for {len(self.shards)} shards")
            self._text_features[name] = files

    @property
    def text_feature_names(self) -> list[str]:
        return list(self._text_features)

    def text_feature_dim(self, name: str) -> int:
        return int(self.info["text_features"][name]["dim"])

    def text_features(self, name: str, indices) -> tuple[np.ndarray, list[np.ndarray]]:
        """Pooled float32 (B, D) and a list of token-level float32 (L_i, D) for ``indices``."""
        files = self._text_features[name]
        idx = np.asarray(indices, np.int64)
        D = self.text_feature_dim(name)
        pooled = np.empty((idx.shape[0], D), np.float32)
        toks = []
        for b, i in enumerate(idx):
            s = int(self.shard_of[i])
            k = int(i - self.clip_offsets[s])
            f = files[s]
            pooled[b] = f["pooled"][k]
            o = f["token_offsets"]
            toks.append(np.asarray(f["tokens"][o[k]: o[k + 1]], np.float32))
        return pooled, toks

    def text_feature_writer(self, name: str = "default", dim: int | None = None, meta: dict | None = None) -> "TextFeatureWriter":
        return TextFeatureWriter(self, name, dim, meta)

    def write_text_features(self, pooled: np.ndarray, token_features=None, *, name: str = "default",
                            meta: dict | None = None) -> None:
        """Cache text-encoder features for every clip (in clip order), atomically.

        Args:
            pooled: (N, D) pooled features, N = len(store).
            token_features: optional list of N arrays (L_i, D), or a tuple (padded (N, L, D),
                lengths (N,)). Stored as float16.
        After this call ``store.text_features(name, idx)`` serves them and the loaders can
        put them in batches. For stores too large for memory use :meth:`text_feature_writer`.
        """
        pooled = np.asarray(pooled)
        with self.text_feature_writer(name, pooled.shape[1], meta) as w:
            step = 4096
            for s in range(0, len(self), step):
                e = min(s + step, len(self))
                if token_features is None:
                    tok = None
                elif isinstance(token_features, tuple):
                    padded, lens = token_features
                    tok = [np.asarray(padded[i, : int(lens[i])]) for i in range(s, e)]
                else:
                    tok = token_features[s:e]
                w.add(pooled[s:e], tok)


class TextFeatureWriter:
    """Appends cached text features in clip order; writes one file per clip shard, atomically.

    ``add(pooled (b, D), tokens list of (L_i, D) or None)`` any number of times; ``close()``
    (or the end of a ``with`` block) checks that every clip got features and registers the set
    in ``store.json`` (atomically). Re-writing a name replaces it.
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
        self._done = 0

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
        fname = f"textfeat-{self.name}-{self._shard:05d}.slp"
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
        while self._shard < len(self.store.shards) and self.store.shards[self._shard].meta["num_clips"] == 0:
            self._flush()
        if self._shard != len(self.store.shards) or self._count:
            raise ValueError(f"text features for {sum(len(p) for p in [self._pooled])} + "
                             f"{int(self.store.clip_offsets[self._shard]) if self._shard < len(self.store.shards) else len(self.store)}"
                             f" clips given, the store has {len(self.store)}")
        listing = os.path.join(self.store.path, "store.json")
        with open(listing) as f:
            info = json.load(f)
        info.setdefault("text_features", {})[self.name] = {"files": self.files, "dim": int(self.dim), "meta": self.meta}
        atomic_write_json(listing, info)
        self.store.info = info
        self.store._open_text_features()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()


class ConcatStore(_ClipSource):
    """Several stores seen as one: clip ids are offset by the sizes of the stores before.

    Used by :mod:`.mixing` to sample several datasets with weights; serves the same gather /
    text / gloss API as :class:`Store`.
    """

    def __init__(self, stores: Sequence[Store]):
        self.stores = list(stores)
        self.store_offsets = np.zeros(len(self.stores) + 1, np.int64)
        self.store_offsets[1:] = np.cumsum([len(s) for s in self.stores])
        self.pose_arrays = [a for s in self.stores for a in s.pose_arrays]
        self.conf_arrays = [a for s in self.stores for a in s.conf_arrays]
        shard_base = np.cumsum([0] + [len(s.pose_arrays) for s in self.stores])
        self.shard_of = np.concatenate([s.shard_of + shard_base[k] for k, s in enumerate(self.stores)]).astype(np.int32)
        self.frame_start = np.concatenate([s.frame_start for s in self.stores])
        self.lengths = np.concatenate([s.lengths for s in self.stores])
        self.labels = np.concatenate([s.labels for s in self.stores])
        self.text_blobs = [a for s in self.stores for a in s.text_blobs]
        self.gloss_blobs = [a for s in self.stores for a in s.gloss_blobs]
        for name in ("text_start", "text_end", "gloss_start", "gloss_end"):
            setattr(self, name, np.concatenate([getattr(s, name) for s in self.stores]))
        self.meta = {"stores": [s.path for s in self.stores]}

    def __len__(self):
        return int(self.store_offsets[-1])

    def __getstate__(self):
        return {"stores": self.stores}

    def __setstate__(self, state):
        self.__init__(state["stores"])

    def _local(self, i):
        k = int(np.searchsorted(self.store_offsets, i, side="right") - 1)
        return self.stores[k], int(i - self.store_offsets[k])

    def text(self, i):
        s, k = self._local(i)
        return s.text(k)

    def glosses(self, i):
        s, k = self._local(i)
        return s.glosses(k)

    @property
    def text_feature_names(self):
        names = [set(s.text_feature_names) for s in self.stores]
        return sorted(set.intersection(*names)) if names else []

    def text_feature_dim(self, name):
        return self.stores[0].text_feature_dim(name)

    def text_features(self, name, indices):
        idx = np.asarray(indices, np.int64)
        D = self.text_feature_dim(name)
        pooled = np.empty((idx.shape[0], D), np.float32)
        toks = []
        for b, i in enumerate(idx):
            s, k = self._local(i)
            p, t = s.text_features(name, [k])
            pooled[b] = p[0]
            toks.append(t[0])
        return pooled, toks

    def clip(self, i):
        s, k = self._local(i)
        d = s.clip(k)
        d["clip_id"] = int(i)
        return d
