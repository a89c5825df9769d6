"""Batch samplers: fixed batch size and token budget (numba bin packing), distributed-aware.

A sampler turns (clip lengths, a set of clip indices, seed, epoch, rank, world size) into a
:class:`BatchPlan` for one epoch: which clips form each batch of this rank, and which frames
of each clip (crops of clips longer than ``max_frames``). The plan is a pure function of
those inputs, so every loader (torch, DALI, a resumed one) that builds it gets the same
batches, and it costs nothing to skip to the middle of an epoch.

Distributed: all ranks compute the same global order (same seed) and take disjoint parts.
Every rank gets the same number of batches: the fixed-size sampler gives each rank
``N // world_size`` clips (the < world_size left over are dropped, a different few each
epoch); the token-budget sampler packs globally and gives each rank ``num_bins //
world_size`` bins.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["BatchPlan", "FixedBatchSampler", "TokenBudgetSampler", "build_sampler", "dist_info", "pack_ffd",
           "pack_sorted_padded"]


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): as given, else from torch.distributed when initialised, else (0, 1)."""
    if rank is None or world_size is None:
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                rank = dist.get_rank() if rank is None else rank
                world_size = dist.get_world_size() if world_size is None else world_size
        except Exception:  # pragma: no cover
            pass
    rank = 0 if rank is None else int(rank)
    world_size = 1 if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, {world_size})")
    return rank, world_size


@dataclass
class BatchPlan:
    """The batches of one epoch on one rank: batch k is entries [offsets[k], offsets[k+1])."""

    indices: np.ndarray  # int64, clip ids
    starts: np.ndarray  # int64, first frame of the crop inside the clip
    lengths: np.ndarray  # int64, frames taken
    offsets: np.ndarray  # int64, (num_batches + 1,)
    epoch: int = 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not 0 <= k < len(self):
            raise IndexError(f"batch {k} out of range ({len(self)} batches)")
        s, e = self.offsets[k], self.offsets[k + 1]
        return self.indices[s:e], self.starts[s:e], self.lengths[s:e]


# ------------------------------------------------------------------------------ numba packing
@njit(cache=True)
def pack_sorted_padded(lengths_desc, max_tokens, max_batch):
    """Greedy packing of lengths sorted in decreasing order under a *padded* cost
    (batch size x longest clip <= max_tokens). Returns bin id per item."""
    n = lengths_desc.shape[0]
    out = np.empty(n, np.int64)
    b = -1
    i = 0
    while i < n:
        b += 1
        longest = max(lengths_desc[i], 1)
        cap = max(1, min(max_batch, max_tokens // longest))
        for k in range(cap):
            if i >= n:
                break
            out[i] = b
            i += 1
    return out


@njit(cache=True)
def pack_ffd(lengths_desc, max_tokens, max_batch):
    """First-fit-decreasing packing under a *packed* cost (sum of lengths <= max_tokens, at most
    ``max_batch`` clips per bin). Items must be sorted in decreasing order. Returns bin id per item."""
    n = lengths_desc.shape[0]
    out = np.empty(n, np.int64)
    load = np.empty(n, np.int64)
    count = np.empty(n, np.int64)
    nb = 0
    first_open = 0  # bins before this one cannot take even the shortest item
    smallest = lengths_desc[n - 1] if n else 0
    for i in range(n):
        L = lengths_desc[i]
        placed = False
        for b in range(first_open, nb):
            if load[b] + L <= max_tokens and count[b] < max_batch:
                load[b] += L
                count[b] += 1
                out[i] = b
                placed = True
                break
        if not placed:
            load[nb] = L
            count[nb] = 1
            out[i] = nb
            nb += 1
        while first_open < nb and (max_tokens - load[first_open] < smallest or count[first_open] >= max_batch):
            first_open += 1
    return out


# ------------------------------------------------------------------------------ samplers
def is_int(x) -> bool:
    """A host integer (Python or numpy), not a bool: the data modules' argument checks."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


class _Sampler:
    def __init__(self, lengths, indices=None, *, shuffle: bool = True, seed: int = 0, rank=None, world_size=None,
                 max_frames: int | None = None, crop: str = "random", mixture=None):
        self.all_lengths = np.asarray(lengths, np.int64)
        if mixture is not None and indices is not None:
            raise ValueError("give either indices or mixture")
        self.indices = (np.arange(len(self.all_lengths), dtype=np.int64) if indices is None and mixture is None
                        else None if mixture is not None else np.asarray(indices, np.int64))
        if self.indices is not None and len(self.indices) and (
                self.indices.min() < 0 or self.indices.max() >= len(self.all_lengths)):
            raise ValueError(f"indices must lie in [0, {len(self.all_lengths)}) (the clips of the source), got values "
                             f"in [{self.indices.min()}, {self.indices.max()}]")
        if max_frames is not None and (not is_int(max_frames) or max_frames < 1):
            raise ValueError(f"max_frames must be None or an int >= 1 (longest crop in frames), got {max_frames!r}")
        if mixture is not None and not shuffle:
            raise ValueError("shuffle=False cannot be honoured with a mixture: its epochs are random draws from "
                             "the sources (seeded by the mixture's seed and this seed); give indices for a fixed "
                             "order")
        self.mixture = mixture
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank, self.world_size = dist_info(rank, world_size)
        if crop not in ("random", "start", "center"):
            raise ValueError(f"crop must be random/start/center, got {crop!r}")
        self.max_frames = max_frames
        self.crop = crop

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Global (all ranks) clip order of an epoch."""
        if self.mixture is not None:  # the draws depend on this seed too, as a single store's order does
            return self.mixture.epoch_indices(epoch, seed=self.seed)
        if not self.shuffle:
            return self.indices.copy()
        rng = np.random.default_rng([self.seed, epoch, 0x5A11])
        return self.indices[rng.permutation(len(self.indices))]

    def _crops(self, idx: np.ndarray, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        full = self.all_lengths[idx]
        if self.max_frames is None:
            return np.zeros_like(full), full.copy()
        ln = np.minimum(full, self.max_frames)
        room = full - ln
        if self.crop == "start":
            st = np.zeros_like(full)
        elif self.crop == "center":
            st = room // 2
        else:
            # per (seed, epoch, clip): the same crop whatever the batching or rank
            h = (idx.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
                 ^ np.uint64((self.seed * 1000003 + epoch * 7919) & 0xFFFFFFFFFFFFFFFF))
            h ^= h >> np.uint64(31)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(29)
            st = (h % (room.astype(np.uint64) + np.uint64(1))).astype(np.int64)
        return st, ln

    def _plan(self, groups: list[np.ndarray], epoch: int) -> BatchPlan:
        idx = np.concatenate(groups).astype(np.int64) if groups else np.zeros(0, np.int64)
        offs = np.zeros(len(groups) + 1, np.int64)
        offs[1:] = np.cumsum([len(g) for g in groups])
        st, ln = self._crops(idx, epoch)
        return BatchPlan(idx, st, ln, offs, epoch)

    def __len__(self) -> int:
        return len(self.plan(0))

    def batching(self) -> dict:
        """The settings that decide which clips form the k-th batch of an epoch (and their crops)."""
        return {"max_frames": self.max_frames, "crop": self.crop, "shuffle": self.shuffle}

    def loader_state(self, epoch: int, step: int) -> dict:
        """A loader's resumable state: its position (epoch, batches taken) and what that position
        means (seed, ranks, data, batching), checked by :func:`check_loader_state` on load."""
        return {"epoch": int(epoch), "step": int(step), "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "data": self.data_fingerprint(), "batching": self.batching()}

    def data_fingerprint(self) -> str:
        """CRC-32 of the clip lengths and the selected clips (or the mixture: its seed, weights,
        sample count and each source's subset): a loader state saved over other data (a
        re-converted or grown store, another split, another mixture) cannot resume mid-epoch."""
        if getattr(self, "_fingerprint", None) is None:
            import zlib

            h = zlib.crc32(np.ascontiguousarray(self.all_lengths, np.int64).tobytes())
            if self.indices is not None:
                h = zlib.crc32(np.ascontiguousarray(self.indices, np.int64).tobytes(), h)
            else:
                h = self.mixture.fingerprint(h)
            self._fingerprint = f"{len(self.all_lengths)}:{h & 0xFFFFFFFF:08x}"
        return self._fingerprint


def check_loader_state(state: dict, sampler: "_Sampler") -> None:
    """ValueError unless a loader ``state`` fits ``sampler`` (seed, world size, data)."""
    if state.get("seed", sampler.seed) != sampler.seed:
        raise ValueError(f"loader state was saved with seed {state['seed']}, this loader has {sampler.seed}")
    if state.get("world_size", sampler.world_size) != sampler.world_size:
        raise ValueError(f"loader state was saved with world size {state['world_size']}, this loader has "
                         f"{sampler.world_size}")
    if "data" in state and state["data"] != sampler.data_fingerprint():
        raise ValueError(f"loader state was saved over other data (clips:fingerprint {state['data']}, now "
                         f"{sampler.data_fingerprint()}): the store or the selected clips changed, so the "
                         "saved position in the epoch means nothing")
    mine = sampler.batching()
    changed = [f"{k} {v!r} (now {mine.get(k)!r})" for k, v in state.get("batching", {}).items() if mine.get(k) != v]
    if changed:
        raise ValueError(f"loader state was saved with other batching: {', '.join(changed)}; its position "
                         f"(batch {state.get('step')} of epoch {state.get('epoch')}) counts those batches, so "
                         "resume with the same settings (or start a fresh run)")


class FixedBatchSampler(_Sampler):
    """Batches of ``batch_size`` clips. Each rank gets ``N // world_size`` clips of the epoch's
    global order (disjoint, interleaved), then batches of them; ``drop_last`` drops a final
    partial batch (same on all ranks)."""

    def __init__(self, lengths, indices=None, *, batch_size: int, drop_last: bool = False, **kw):
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        super().__init__(lengths, indices, **kw)
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def batching(self) -> dict:
        return {**super().batching(), "batch_size": self.batch_size, "drop_last": bool(self.drop_last)}

    def plan(self, epoch: int) -> BatchPlan:
        order = self.epoch_order(epoch)
        n = len(order) // self.world_size
        part = order[self.rank::self.world_size][:n]
        B = self.batch_size
        nb = n // B if self.drop_last else -(-n // B)
        return self._plan([part[k * B:(k + 1) * B] for k in range(nb)], epoch)


class TokenBudgetSampler(_Sampler):
    """Batches of at most ``max_tokens`` frames (numba bin packing).

    The epoch's global order is cut into buckets of ``bucket_size`` clips; each bucket is
    sorted by length and packed (``packed=False``: padded cost ``B * max(T) <= max_tokens``,
    greedy over sorted lengths; ``packed=True``: ``sum(T) <= max_tokens``, first-fit
    decreasing). The bins of all buckets are shuffled and dealt to ranks: each rank gets
    ``num_bins // world_size``. Clips longer than ``max_frames`` (default ``max_tokens``)
    are cropped.
    """

    def __init__(self, lengths, indices=None, *, max_tokens: int, packed: bool = False, max_batch_size: int = 1 << 30,
                 bucket_size: int = 4096, **kw):
        for name, v in (("max_tokens", max_tokens), ("max_batch_size", max_batch_size), ("bucket_size", bucket_size)):
            if not is_int(v) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if kw.get("max_frames") is None:
            kw["max_frames"] = max_tokens
        if kw["max_frames"] > max_tokens:
            raise ValueError(f"max_frames {kw['max_frames']} > max_tokens {max_tokens}")
        super().__init__(lengths, indices, **kw)
        self.max_tokens = int(max_tokens)
        self.packed = packed
        self.max_batch_size = int(max_batch_size)
        self.bucket_size = int(bucket_size)

    def batching(self) -> dict:
        return {**super().batching(), "max_tokens": self.max_tokens, "packed": bool(self.packed),
                "max_batch_size": self.max_batch_size, "bucket_size": self.bucket_size}

    def plan(self, epoch: int) -> BatchPlan:
        order = self.epoch_order(epoch)
        eff = np.minimum(self.all_lengths[order], self.max_frames)
        bins: list[np.ndarray] = []
        for s in range(0, len(order), self.bucket_size):
            o = order[s:s + self.bucket_size]
            L = eff[s:s + self.bucket_size]
            srt = np.argsort(-L, kind="stable")
            fn = pack_ffd if self.packed else pack_sorted_padded
            bid = fn(L[srt], self.max_tokens, self.max_batch_size)
            # First-fit revisits earlier bins, so pack_ffd's ids are not in runs (e.g. [0 1 0 1]):
            # group the items of each bin (stable: longest first within a bin) before cutting,
            # else one bin is cut into several small batches.
            grp = np.argsort(bid, kind="stable")
            items, bid = o[srt][grp], bid[grp]
            cuts = np.flatnonzero(np.diff(bid)) + 1
            bins.extend(np.split(items, cuts))
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, 0xB175])
            bins = [bins[i] for i in rng.permutation(len(bins))]
        per_rank = len(bins) // self.world_size
        mine = bins[self.rank::self.world_size][:per_rank]
        return self._plan(mine, epoch)


def build_sampler(source, *, split=None, indices=None, mixture=None, batch_size=None, max_tokens=None,
                  packed=False, shuffle=True, seed=0, drop_last=False, rank=None, world_size=None,
                  max_frames=None, crop="random", max_batch_size=None, bucket_size=4096):
    if split is not None:
        if indices is not None:
            raise ValueError("give split or indices, not both")
        indices = source.indices(split)
        if len(indices) == 0:
            raise ValueError(f"split {split!r} is empty (splits: {getattr(source, 'splits', None)})")
    common = dict(shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, max_frames=max_frames, crop=crop,
                  mixture=mixture)
    if (batch_size is None) == (max_tokens is None):
        raise ValueError("give exactly one of batch_size and max_tokens")
    if batch_size is not None:
        return FixedBatchSampler(source.lengths, indices, batch_size=batch_size, drop_last=drop_last, **common)
    return TokenBudgetSampler(source.lengths, indices, max_tokens=max_tokens, packed=packed,
                              max_batch_size=max_batch_size or (1 << 30), bucket_size=bucket_size, **common)
