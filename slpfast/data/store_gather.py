"""Batched reads over the shard arrays, shared by :class:`~.store_reader.Store` and
:class:`~.store_concat.ConcatStore`.

:class:`_ClipSource` holds what the numba kernels of :mod:`._kernels` need (the shard arrays
and a flat per-clip index) and serves padded or packed pose batches with optional crops,
texts, gloss-id lists and zero-copy float16 views of a clip.
"""
from __future__ import annotations

import threading

import numpy as np

from ..layouts import NUM_JOINTS
from .store_format import CHANNELS


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

    def _ids(self, indices, *, flat: bool = False) -> np.ndarray:
        """``indices`` as a checked int64 (B,) array of clip ids (``flat``: any shape, flattened).

        TypeError for ids that are not integers (``np.asarray([0.7], np.int64)`` read clip 0),
        ValueError for a 0-d or 2-D array (the numba kernels failed to type it), IndexError
        from :meth:`_check_ids`. An empty list is an empty batch."""
        a = np.asarray(indices)
        if flat:
            a = a.reshape(-1)
        elif a.ndim != 1:
            raise ValueError(f"clip ids must be 1-D (B,), got shape {a.shape}")
        if a.size == 0:
            return np.zeros(0, np.int64)
        if a.dtype.kind not in "iu":
            raise TypeError(f"clip ids must be integers, got {a.dtype} {a.reshape(-1)[:4].tolist()}")
        if a.dtype.kind == "u" and a.max() > np.iinfo(np.int64).max:
            raise IndexError(f"clip index {int(a.max())} out of range: batched reads take clip ids in "
                             f"[0, {len(self.lengths)})")
        return self._check_ids(a.astype(np.int64, copy=False))

    def _check_ids(self, idx: np.ndarray) -> np.ndarray:
        """``idx`` unchanged if every id is a clip of this source, else IndexError naming the
        first bad one. Batched reads do not wrap negative ids: numpy indexing would silently
        read clip N-1 for -1. One min/max pass (hot path)."""
        n = len(self.lengths)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = int(idx[(idx < 0) | (idx >= n)][0])
            raise IndexError(f"clip index {bad} out of range: batched reads take clip ids in [0, {n}) "
                             "(negative ids are not wrapped)")
        return idx

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

        idx = self._ids(indices)
        B = idx.shape[0]
        full = self.lengths[idx]
        st = np.zeros(B, np.int64) if starts is None else np.asarray(starts, np.int64)
        ln = full.copy() if lengths is None else np.asarray(lengths, np.int64)
        # the kernels index starts / lengths by clip without bounds checks: a shorter array
        # was read past its end (garbage crops), so the shapes are checked here
        for name, v in (("starts", st), ("lengths", ln)):
            if v.shape != (B,):
                raise ValueError(f"gather: {name} must be (B,)=({B},) like indices, got shape {v.shape}")
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
        idx = self._ids(indices, flat=True)
        sid, a, b = self.shard_of[idx], self.text_start[idx], self.text_end[idx]
        blobs = self.text_blobs
        return [bytes(blobs[k][x:y]).decode("utf-8") for k, x, y in zip(sid.tolist(), a.tolist(), b.tolist())]

    def gloss_lists(self, indices) -> list[np.ndarray]:
        idx = self._ids(indices, flat=True)
        sid, a, b = self.shard_of[idx], self.gloss_start[idx], self.gloss_end[idx]
        blobs = self.gloss_blobs
        return [blobs[k][x:y].astype(np.int64) for k, x, y in zip(sid.tolist(), a.tolist(), b.tolist())]

    def padded_glosses(self, indices, fill: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(B, G) int64 gloss ids padded with ``fill`` and (B,) lengths (numba gather)."""
        from . import _kernels

        idx = self._ids(indices, flat=True)
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
        """float16 pose (L, J, 3) and confidence (L, J) views of frames [start, start + L) of clip
        ``i`` (no copy; ``length`` None: to the clip's end; negative ``i`` counts from the end, as
        in ``clip``). IndexError for a crop outside the clip."""
        n = len(self.lengths)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"clip index must be an int, got {type(i).__name__} {i!r}")
        if not -n <= i < n:
            raise IndexError(f"clip index {i} out of range for a source of {n} clips")
        i = int(i) % n
        T = int(self.lengths[i])
        start = int(start)
        L = T - start if length is None else int(length)
        # the shard arrays hold every clip back to back: a crop past either end of this clip
        # was a view of its neighbours' frames
        if start < 0 or L < 0 or start + L > T:
            raise IndexError(f"raw: frames [{start}, {start + L}) outside clip {i} of {T} frames")
        s = int(self.frame_start[i]) + start
        sh = int(self.shard_of[i])
        J = NUM_JOINTS
        p = self.pose_arrays[sh][s * J * 3: (s + L) * J * 3].view(np.float16).reshape(L, J, 3)
        c = self.conf_arrays[sh][s * J: (s + L) * J].view(np.float16).reshape(L, J)
        return p, c
