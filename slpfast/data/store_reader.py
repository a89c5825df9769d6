"""Opening a store: :class:`Store` validates the listing and the shards, builds the global
clip index and serves clips by id (per clip, by split/filters, cached text features).

Batched gathers come from :class:`~.store_gather._ClipSource`; the store layout is described
in :mod:`slpfast.data.store`.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..layouts import NUM_JOINTS
from .shard_format import CrcBudget, ShardError, ShardFile, reserve_open_files
from .store_format import CATEGORICAL, read_store_json
from .store_gather import _ClipSource
from .store_text_features import TextFeatureWriter

#: Opens of a text-feature set whose listing changed under them (each try reads it again).
_FEATURE_OPEN_TRIES = 8


class Store(_ClipSource):
    """A read-only clip store (see :mod:`slpfast.data.store`).

    Args:
        path: the store directory.
        verify: "fast" (default: sizes, header and index CRCs, and the pose / text-feature
            CRCs of the first shards, up to ``shard_format.FAST_VERIFY_BYTES`` in all: a small
            store is checked whole, a large one is not read whole on every open), "full"
            (every CRC: reads everything) or "none" (sizes only).

    Attributes: ``meta`` (store metadata dict), ``lengths`` (N,) frames per clip, ``labels``,
    ``fps``, ``dims``, and for each of split/source/language/signer a code array
    (``codes[name]``) with its string table (``tables[name]``).
    """

    def __init__(self, path: str, *, verify: str = "fast"):
        self.path = os.fspath(path)
        self.verify = verify
        info = read_store_json(self.path)
        self.info = info
        self.meta = info.get("meta", {})
        self.shards: list[ShardFile] = []
        self._crc_budget = CrcBudget()  # shared by the clip and text-feature shards of this open
        # every open shard holds a file descriptor (its memory map): room for the clip shards
        # here, for each text-feature set where it is opened
        reserve_open_files(len(info["shards"]), f"store {self.path}")
        for s in info["shards"]:
            sh = ShardFile(os.path.join(self.path, s["file"]), verify=verify, expect_kind="clips",
                           budget=self._crc_budget)
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
        sets = self.info.get("text_features") or {}
        if not isinstance(sets, dict):
            raise ShardError(f"{self.path}: store.json's text_features is not a mapping of sets")
        for name, tf in list(sets.items()):
            if not isinstance(tf, dict) or not isinstance(tf.get("files"), list):
                raise ShardError(f"{self.path}: store.json's text feature set {name!r} lists no files")
            self._open_text_feature_set(name, tf)

    def _open_text_feature_set(self, name: str, tf: dict) -> None:
        """Open (or re-open) the files of feature set ``name`` as the listing ``tf`` names them."""
        self._text_features.pop(name, None)  # a re-opened set lets go of its old files first
        reserve_open_files(len(tf["files"]), f"store {self.path}")  # one descriptor per file
        for attempt in range(_FEATURE_OPEN_TRIES):
            try:
                files = self._open_feature_files(tf["files"])
                break
            except ShardError:
                # a re-write of this set may have replaced the listing read above and removed the
                # files it named (store_text_features): read the listing again while it keeps
                # changing (re-writes back to back), a few times
                fresh = (read_store_json(self.path).get("text_features") or {}).get(name)
                if fresh is None or fresh["files"] == tf["files"] or attempt == _FEATURE_OPEN_TRIES - 1:
                    raise
                self.info.setdefault("text_features", {})[name] = tf = fresh
        for f, sh in zip(files, self.shards):
            if f["pooled"].shape[0] != sh.meta["num_clips"]:
                raise ShardError(f"{f.path}: {f['pooled'].shape[0]} rows, its clip shard has {sh.meta['num_clips']}")
        if len(files) != len(self.shards):
            raise ShardError(f"{self.path}: text features {name!r} have {len(files)} files for {len(self.shards)} shards")
        self._text_features[name] = files

    def _open_feature_files(self, names: list[str]) -> list[ShardFile]:
        return [ShardFile(os.path.join(self.path, f), verify=self.verify, expect_kind="text_features",
                          budget=getattr(self, "_crc_budget", None)) for f in names]

    @property
    def text_feature_names(self) -> list[str]:
        return list(self._text_features)

    def text_feature_dim(self, name: str) -> int:
        return int(self.info["text_features"][name]["dim"])

    def text_features(self, name: str, indices) -> tuple[np.ndarray, list[np.ndarray]]:
        """Pooled float32 (B, D) and a list of token-level float32 (L_i, D) for ``indices``."""
        files = self._text_features[name]
        idx = self._ids(indices)
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

    def pooled_text_features(self, name: str, indices) -> np.ndarray:
        """Pooled float32 (B, D) for ``indices``, without touching the token rows (one gather per
        shard)."""
        files = self._text_features[name]
        idx = self._ids(indices)
        out = np.empty((idx.shape[0], self.text_feature_dim(name)), np.float32)
        shard = self.shard_of[idx]
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            out[sel] = files[int(s)]["pooled"][idx[sel] - self.clip_offsets[s]]
        return out

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
