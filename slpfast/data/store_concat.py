"""Several stores seen as one clip source (:class:`ConcatStore`), for :mod:`.mixing`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from .store_gather import _ClipSource

if TYPE_CHECKING:
    from .store_reader import Store


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
        """(store, its clip index) of global clip ``i``; negative ``i`` counts from the end, as
        in :meth:`Store.clip` (searchsorted mapped -1 to a wrong store and an id past the end
        to a bare list IndexError)."""
        n = len(self)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"clip index must be an int, got {type(i).__name__} {i!r}")
        if not -n <= i < n:
            raise IndexError(f"clip index {i} out of range for a source of {n} clips")
        i = int(i) % n
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
        """D of feature set ``name``, the same in every store (ValueError if not: the sets were
        cached by different encoders under one name, and a batch mixing clips of two stores
        failed in numpy with 'could not broadcast')."""
        dims = {s.path: s.text_feature_dim(name) for s in self.stores}
        if len(set(dims.values())) > 1:
            raise ValueError(f"text features {name!r} have different dims in the stores ({dims}): cached by "
                             "different text encoders under one name; cache them again with one encoder")
        return next(iter(dims.values()))

    def text_features(self, name, indices):
        idx = self._ids(indices)
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
        d["clip_id"] = int(i) % len(self)
        return d
