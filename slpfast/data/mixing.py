"""Mixing several stores (datasets) with sampling weights.

``mix_stores([store_a, store_b], weights=[3, 1])`` returns ``(ConcatStore, MixtureIndices)``:
pass both to a loader (``TorchLoader(concat, mixture=mixture, ...)``). Each epoch draws
``num_samples`` clips (default: the total size), ``round(num_samples * w_k / sum w)`` from
source k: a fresh permutation of that source per epoch, repeated as often as needed when the
source is up-sampled and cut when it is down-sampled, then all are shuffled together. Clip
ids are global ids of the concatenation (store k's clip i is ``offsets[k] + i``).

The draws of an epoch are a pure function of (the mixture's ``seed``, ``epoch``, and the
``seed`` passed to :meth:`MixtureIndices.epoch_indices`): the samplers pass the loader's seed,
so a loader's ``seed`` changes the order of a mixture as it does that of one store. A mixture
has no unshuffled order: the samplers refuse ``shuffle=False`` with one.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["MixtureIndices", "mix_stores"]


class MixtureIndices:
    def __init__(self, sizes: Sequence[int], weights: Sequence[float], *, num_samples: int | None = None,
                 seed: int = 0, subsets: Sequence[np.ndarray] | None = None):
        """sizes: clips per source; subsets: optional per-source local index arrays (e.g. a split)."""
        self.sizes = [int(s) for s in sizes]
        w = np.asarray(weights, np.float64)
        if w.ndim != 1 or len(w) != len(self.sizes) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mix weights: need one finite non-negative weight per source ({len(self.sizes)}), "
                             f"not all zero, got {list(np.atleast_1d(w))}")
        self.weights = w / w.sum()
        self.offsets = np.zeros(len(self.sizes) + 1, np.int64)
        self.offsets[1:] = np.cumsum(self.sizes)
        self.subsets = [np.arange(n, dtype=np.int64) if subsets is None else np.asarray(subsets[k], np.int64)
                        for k, n in enumerate(self.sizes)]
        total = sum(len(s) for s in self.subsets)
        self.num_samples = int(num_samples if num_samples is not None else total)
        if self.num_samples < 1:
            raise ValueError(f"mix num_samples must be >= 1 (clips drawn per epoch), got {num_samples!r}")
        self.seed = int(seed)
        counts = np.floor(self.weights * self.num_samples).astype(np.int64)
        rem = self.num_samples - counts.sum()  # largest remainders get the rest
        frac = self.weights * self.num_samples - counts
        counts[np.argsort(-frac, kind="stable")[:rem]] += 1
        self.counts = counts

    def epoch_indices(self, epoch: int, seed: int | None = None) -> np.ndarray:
        """Global clip ids drawn for ``epoch`` (``num_samples`` of them, shuffled together).

        ``seed``: a second seed (the loader's) mixed with the mixture's own; None: the mixture's
        seed alone."""
        rng = np.random.default_rng([self.seed, epoch, 0x313] if seed is None
                                    else [self.seed, int(seed), epoch, 0x314])
        parts = []
        for k, (sub, n) in enumerate(zip(self.subsets, self.counts)):
            if n == 0:
                continue
            if len(sub) == 0:
                raise ValueError(f"mixture source {k} is empty but has weight {self.weights[k]:.3f}")
            reps = -(-int(n) // len(sub))
            draw = np.concatenate([sub[rng.permutation(len(sub))] for _ in range(reps)])[:n]
            parts.append(draw + self.offsets[k])
        out = np.concatenate(parts)
        return out[rng.permutation(len(out))]

    def fingerprint(self, crc: int = 0) -> int:
        """CRC-32 (continuing ``crc``) of everything that decides the draws besides the epoch
        and the loader's seed: seed, weights, sizes, counts and each source's subset."""
        import zlib

        h = zlib.crc32(np.asarray([self.seed, self.num_samples, len(self.sizes), *self.counts, *self.sizes],
                                  np.int64).tobytes(), crc)
        h = zlib.crc32(np.ascontiguousarray(self.weights, np.float64).tobytes(), h)
        for sub in self.subsets:
            h = zlib.crc32(np.asarray([len(sub)], np.int64).tobytes(), h)
            h = zlib.crc32(np.ascontiguousarray(sub, np.int64).tobytes(), h)
        return h


def mix_stores(stores, weights=None, *, splits=None, num_samples=None, seed=0):
    """(ConcatStore, MixtureIndices) for ``stores`` mixed by ``weights`` (None: in proportion to
    the clips each store takes part with), optionally per-store ``splits`` (one split name for
    all, or one entry per store: a name, a list of names, or None for every clip)."""
    from .store_concat import ConcatStore

    subsets = None
    if splits is not None:
        splits = [splits] * len(stores) if isinstance(splits, str) else splits
        subsets = [s.indices(sp) if sp is not None else np.arange(len(s)) for s, sp in zip(stores, splits)]
    if weights is None:
        weights = [len(s) for s in (subsets if subsets is not None else stores)]
    cat = ConcatStore(stores)
    return cat, MixtureIndices([len(s) for s in stores], weights, num_samples=num_samples, seed=seed, subsets=subsets)
