"""Synthetic corpus: determinism, splits, vocabulary metadata, richness."""
from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import pytest

from slpfast.data.synthetic import SyntheticLanguage, generate_corpus, _FEATURES
from slpfast.layouts import PART_SLICES


def _digest(path):
    h = hashlib.sha256()
    for f in sorted(os.listdir(path)):
        if f.endswith(".slp") or f == "store.json":
            h.update(open(os.path.join(path, f), "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    t0 = time.perf_counter()
    st = generate_corpus(str(d / "a"), num_clips=400, seed=3, num_glosses=40)
    return st, time.perf_counter() - t0


def test_deterministic(corpus, tmp_path):
    st, _ = corpus
    st2 = generate_corpus(str(tmp_path / "b"), num_clips=400, seed=3, num_glosses=40)
    assert _digest(st.path) == _digest(st2.path)
    st3 = generate_corpus(str(tmp_path / "c"), num_clips=40, seed=4, num_glosses=40)
    assert not np.array_equal(st3.clip(0)["pose"], st.clip(0)["pose"])
    # a clip depends on (seed, index) only: a smaller corpus shares its first clips
    st4 = generate_corpus(str(tmp_path / "d"), num_clips=30, seed=3, num_glosses=40, islr_fraction=1.0)
    np.testing.assert_array_equal(st4.clip(7)["pose"], st.clip(7)["pose"])


def test_parallel_generation_identical(tmp_path, corpus):
    st, _ = corpus
    a = generate_corpus(str(tmp_path / "w1"), num_clips=60, seed=3, num_glosses=40)
    b = generate_corpus(str(tmp_path / "w2"), num_clips=60, seed=3, num_glosses=40, workers=2)
    assert _digest(a.path) == _digest(b.path)


def test_fast_enough(corpus):
    _, seconds = corpus
    assert seconds < 60  # 400 clips; a few thousand take seconds on an idle machine


def test_splits_and_metadata(corpus):
    st, _ = corpus
    assert set(st.splits) == {"islr_train", "islr_val", "islr_test", "sentence_train", "sentence_val", "sentence_test"}
    meta = st.meta["synthetic"]
    assert len(meta["vocab"]) == 40 and meta["gloss_to_text"][meta["vocab"][5]] == meta["words"][5]
    for sp in ("islr_train", "islr_val", "islr_test"):
        idx = st.indices(sp)
        assert len(idx) > 0
        assert (st.labels[idx] >= 0).all()
        for i in idx[:20]:
            assert st.glosses(i).tolist() == [st.labels[i]]
            assert st.text(i) == meta["words"][st.labels[i]]
    assert len(set(st.labels[st.indices("islr_train")])) == 40  # every gloss in training
    sent = st.indices("sentence_train")
    assert (st.labels[sent] == -1).all()
    lens = [len(st.glosses(i)) for i in sent]
    assert min(lens) >= 2 and max(lens) >= 4
    # sentence text is a reordering with function words, not the gloss words in order
    i = sent[0]
    words = [meta["words"][g] for g in st.glosses(i)]
    assert set(words) <= set(st.text(i).split()) and st.text(i).split() != words
    assert len(set(st.tables["signer"])) > 3


def test_rich_language():
    lang = SyntheticLanguage(seed=0, num_glosses=100)
    keys = [tuple(p[f] for f in _FEATURES) for p in lang.params]
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            assert sum(x != y for x, y in zip(keys[a], keys[b])) >= 2
    for f in _FEATURES:  # no single parameter identifies a gloss
        vals = [p[f] for p in lang.params]
        assert len(set(vals)) <= 20, f
    # hands, face and mouth all carry signal
    c = lang.clip(0, "sentence")
    pose = c["pose"]
    for part in ("right_hand", "left_hand", "face", "mouth", "body"):
        assert np.isfinite(pose[:, PART_SLICES[part]]).all()
    assert pose[:, PART_SLICES["right_hand"]].std(0).mean() > 0.01
    assert 0.0 < pose[..., 0].mean() < 1.0 and 0.0 < pose[..., 1].mean() < 1.0
    # the same gloss by two signers differs; two glosses by one signer differ
    g0 = lang.render([0], 0, np.random.default_rng(1))[0]
    g0b = lang.render([0], 1, np.random.default_rng(1))[0]
    g1 = lang.render([1], 0, np.random.default_rng(1))[0]
    for other in (g0b, g1):
        assert other.shape != g0.shape or not np.allclose(other, g0, atol=1e-3)


def test_finger_configurations_differ():
    from slpfast.data.synthetic import HANDSHAPES, _hand

    T = 1
    out = {}
    for name, (fl, sp) in HANDSHAPES.items():
        flex = np.array(fl, float).reshape(1, 5, 2)
        out[name] = _hand(np.zeros((T, 3)), np.zeros((T, 3)), flex, np.full(T, sp), 1.0)[0]
    names = list(out)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            assert np.abs(out[names[a]] - out[names[b]]).max() > 0.01, (names[a], names[b])


def test_bad_arguments_name_them(tmp_path):
    """num_clips=0 or -5 wrote an empty store silently; seed=-1 failed with numpy's unnamed
    'expected non-negative integer'."""
    for kw, name in ((dict(num_clips=0), "num_clips"), (dict(num_clips=-5), "num_clips"),
                     (dict(num_clips=10, seed=-1), "seed"), (dict(num_clips=10, num_signers=0), "num_signers"),
                     (dict(num_clips=10, islr_fraction=1.5), "islr_fraction")):
        with pytest.raises(ValueError, match=f"generate_corpus: {name} must be"):
            generate_corpus(str(tmp_path / "c"), **kw)
    assert not (tmp_path / "c" / "store.json").exists()
