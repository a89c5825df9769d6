"""Turn a planned batch (clip ids + crops) into the batch dict of the loader contract.

Batch contract (numpy here; the loaders make torch tensors of the same names):

==========================  ==============================  =====================================
key                         dtype / shape                   content
==========================  ==============================  =====================================
pose                        float32 (B, T, J, C)            canonical layout, zero past lengths;
                            packed: (sum T, J, C)
conf                        float32 (B, T, J) / (sum T, J)  confidence (0 for missing joints)
lengths                     int64 (B,)                      frames per clip
cu_seqlens                  int32 (B+1,)                    packed form only
clip_id                     int64 (B,)                      global clip index (stable)
label                       int64 (B,)                      ISLR class or -1
gloss_ids / gloss_lengths   int64 (B, G) pad -1 / (B,)      gloss sequence (G may be 0)
text_ids / text_lengths     int64 (B, L) pad pad_id / (B,)  when a tokenizer is configured
text_features               float32 (B, D)                  cached pooled text features
text_token_features         float32 (B, L', D)              cached token features, zero padded;
                                                            lengths in text_token_lengths (and in
                                                            text_lengths when no tokenizer)
text                        list[str]                       the texts
==========================  ==============================  =====================================
"""
from __future__ import annotations

import numpy as np

from .samplers import is_int
from .store_format import CHANNELS

__all__ = ["Collator", "WordTokenizer", "pad_int"]


def pad_int(seqs, fill: int, max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """list of int sequences -> (B, L) int64 padded with ``fill`` and lengths (B,)."""
    lens = np.array([len(s) for s in seqs], np.int64)
    L = int(lens.max()) if len(seqs) else 0
    if max_len is not None:
        L = min(L, max_len)
        lens = np.minimum(lens, L)
    out = np.full((len(seqs), L), fill, np.int64)
    for i, s in enumerate(seqs):
        n = int(lens[i])
        if n:
            out[i, :n] = np.asarray(s[:n], np.int64)
    return out, lens


class WordTokenizer:
    """A small whitespace word tokenizer (pad 0, bos 1, eos 2, unk 3), picklable.

    ``WordTokenizer.from_store(store)`` builds the vocabulary from the store's texts (all
    clips); ``tok(list_of_texts) -> list of id lists`` adds bos/eos; ``decode(ids)``.
    """

    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    unk_token_id = 3

    def __init__(self, words):
        self.itos = list(self.SPECIALS) + [w for w in dict.fromkeys(words) if w not in self.SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def from_texts(cls, texts):
        vocab = sorted({w for t in texts for w in t.lower().split()})
        return cls(vocab)

    @classmethod
    def from_store(cls, store):
        return cls.from_texts(store.texts(range(len(store))))

    def __len__(self):
        return len(self.itos)

    @property
    def vocab_size(self):
        return len(self.itos)

    @staticmethod
    def normalize(text: str) -> str:
        """The form the vocabulary reads and writes text in: lower case, single spaces."""
        return " ".join(text.lower().split())

    def encode(self, text: str) -> list[int]:
        return [1] + [self.stoi.get(w, 3) for w in self.normalize(text).split()] + [2]

    def __call__(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_token_id:
                break
            if i in (self.pad_token_id, self.bos_token_id):
                continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else "<unk>")
        return " ".join(out)


def tokenize(tokenizer, texts, max_len: int | None = None) -> tuple[list[list[int]], int]:
    """Run a tokenizer: a callable returning id lists, or a Hugging Face tokenizer."""
    pad = getattr(tokenizer, "pad_token_id", 0)
    pad = 0 if pad is None else int(pad)
    if hasattr(tokenizer, "batch_decode"):  # Hugging Face
        kw = {"truncation": True, "max_length": max_len} if max_len else {}
        ids = tokenizer(list(texts), **kw)["input_ids"]
    else:
        ids = tokenizer(list(texts))
    return ids, pad


class Collator:
    """Builds batch dicts from a store (or :class:`~slpfast.data.store.ConcatStore`).

    Args:
        source: the store.
        packed: packed pose form (``cu_seqlens``) instead of padded.
        channels: 2 or 3 coordinates.
        tokenizer: optional callable ``list[str] -> list[list[int]]`` or HF tokenizer.
        max_text_len: truncate token ids (and token features) to this length (an int >= 1; None:
            no limit).
        text_features: name of a cached text-feature set in the store, ``"auto"`` (the only
            set if there is exactly one... else none) or None.
        pad_to: pad T to a multiple of this int >= 1 (padded form).
    """

    def __init__(self, source, *, packed: bool = False, channels: int = CHANNELS, tokenizer=None,
                 max_text_len: int | None = None, text_features: str | None = "auto", pad_to: int = 1):
        # checked here, where both loaders build their collator: the DALI source read
        # max_text_len=0 as "no limit" (``x[:m] if m``) while this one truncated to 0 tokens, and
        # a pad_to of 0 / -3 / 2.5 was quietly read as 1 or 2
        if channels not in (2, 3) or not is_int(channels):
            raise ValueError(f"Collator: channels must be 2 or 3, got {channels!r}")
        if max_text_len is not None and (not is_int(max_text_len) or max_text_len < 1):
            raise ValueError(f"Collator: max_text_len must be None (no limit) or an int >= 1, got {max_text_len!r}")
        if not is_int(pad_to) or pad_to < 1:
            raise ValueError(f"Collator: pad_to must be an int >= 1, got {pad_to!r}")
        self.source = source
        self.packed = packed
        self.channels = int(channels)
        self.tokenizer = tokenizer
        self.max_text_len = None if max_text_len is None else int(max_text_len)
        names = list(getattr(source, "text_feature_names", []))
        if text_features == "auto":
            text_features = names[0] if len(names) == 1 else None
        if text_features is not None and text_features not in names:
            raise ValueError(f"no cached text features named {text_features!r} (have {names})")
        if text_features is not None:
            source.text_feature_dim(text_features)  # a ConcatStore refuses sets of different dims here
        self.text_features = text_features
        self.pad_to = int(pad_to)

    def pose(self, idx, starts, lens, out=None) -> dict:
        max_len = None
        if not self.packed and len(idx) and self.pad_to > 1:
            m = int(np.max(lens))
            max_len = -(-m // self.pad_to) * self.pad_to
        return self.source.gather(idx, starts=starts, lengths=lens, channels=self.channels, packed=self.packed,
                                  max_len=max_len, out=out)

    def extras(self, idx) -> dict:
        """Everything but pose/conf/lengths/cu_seqlens."""
        src = self.source
        idx = np.asarray(idx, np.int64)
        texts = src.texts(idx)
        gl, gl_len = src.padded_glosses(idx, -1)
        out = {"clip_id": idx.copy(), "label": src.labels[idx].astype(np.int64), "gloss_ids": gl,
               "gloss_lengths": gl_len, "text": texts}
        if self.tokenizer is not None:
            ids, pad = tokenize(self.tokenizer, texts, self.max_text_len)
            out["text_ids"], out["text_lengths"] = pad_int(ids, pad, self.max_text_len)
        if self.text_features is not None:
            pooled, toks = src.text_features(self.text_features, idx)
            out["text_features"] = pooled
            D = pooled.shape[1]
            tl = np.array([t.shape[0] for t in toks], np.int64)
            if self.max_text_len is not None:
                tl = np.minimum(tl, self.max_text_len)
            L = int(tl.max()) if len(tl) else 0
            tf = np.zeros((len(toks), L, D), np.float32)
            for i, t in enumerate(toks):
                tf[i, : tl[i]] = t[: tl[i]]
            out["text_token_features"] = tf
            out["text_token_lengths"] = tl
            if "text_lengths" not in out:
                out["text_lengths"] = tl
        return out

    def __call__(self, idx, starts, lens, out=None) -> dict:
        b = self.pose(idx, starts, lens, out=out)
        b.update(self.extras(idx))
        return b


def to_torch(batch: dict) -> dict:
    """numpy batch -> torch tensors (no copy); lists stay lists."""
    import torch

    return {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in batch.items()}
