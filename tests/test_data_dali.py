"""DALI loader: same batches as the torch loader, resumable, packed form, text features."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from slpfast.data import Store, TorchLoader
from slpfast.data.collate import WordTokenizer
from slpfast.data.loader_dali import DaliLoader, dali_available
from slpfast.data.loader_torch import make_loader
from slpfast.data.synthetic import generate_corpus

pytestmark = pytest.mark.skipif(not dali_available(), reason="nvidia.dali not installed")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    st = generate_corpus(str(d / "s"), num_clips=160, seed=2, num_glosses=16, shard_clips=50)
    n = len(st)
    rng = np.random.default_rng(0)
    st.write_text_features(rng.standard_normal((n, 6)).astype(np.float32),
                           [rng.standard_normal((i % 4 + 1, 6)).astype(np.float32) for i in range(n)], name="enc")
    return Store(st.path)


def _same(a, b):
    assert list(a) == list(b)
    for k in a:
        if isinstance(a[k], torch.Tensor):
            x, y = a[k].cpu(), b[k].cpu()
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), k
        else:
            assert a[k] == b[k], k


CASES = {
    "fixed+tokens": dict(split="sentence_train", batch_size=12, seed=1, text_features=None),
    "budget+packed+features": dict(max_tokens=900, packed=True, seed=2, max_frames=60, max_text_len=3),
    "fixed+pad_to+2ch": dict(batch_size=10, seed=3, pad_to=8, channels=2, drop_last=True, text_features=None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dali_equals_torch(store, case):
    kw = dict(CASES[case])
    if case == "fixed+tokens":
        kw["tokenizer"] = WordTokenizer.from_store(store)
    d = DaliLoader(store, device=None, py_num_workers=2, **kw)
    t = TorchLoader(store, **kw)
    for epoch in range(2):
        a, b = list(d), list(t)
        assert len(a) == len(b) == len(t.plan(epoch)) > 0
        for x, y in zip(a, b):
            _same(x, y)
    assert d.state_dict() == t.state_dict() == {**d.state_dict(), "epoch": 2, "step": 0}


def test_dali_resume(store):
    kw = dict(split="islr_train", batch_size=8, seed=5, text_features=None, device=None)
    ref = TorchLoader(store, **{k: v for k, v in kw.items() if k != "device"})
    full = [b for _ in range(2) for b in ref]
    d = DaliLoader(store, **kw)
    got = []
    for b in d:
        got.append(b)
        if len(got) == 4:
            break
    state = d.state_dict()
    assert state["step"] == 4
    d2 = DaliLoader(store, **kw)
    d2.load_state_dict(state)
    got += list(d2) + list(d2)
    assert len(got) == len(full)
    for x, y in zip(got, full):
        _same(x, y)
    # the torch loader resumes from a DALI state too
    t = TorchLoader(store, **{k: v for k, v in kw.items() if k != "device"})
    t.load_state_dict(state)
    _same(next(iter(t)), full[4])


def test_make_loader(store):
    kw = dict(batch_size=4, seed=0, text_features=None)
    assert isinstance(make_loader(store, backend="torch", **kw), TorchLoader)
    assert isinstance(make_loader(store, backend="dali", **kw), DaliLoader)
    auto = make_loader(store, **kw)
    assert isinstance(auto, DaliLoader if torch.cuda.is_available() else TorchLoader)


@pytest.mark.cuda
def test_dali_gpu(store):
    kw = dict(batch_size=8, seed=0)
    d = DaliLoader(store, device="cuda", **kw)
    t = TorchLoader(store, **kw)
    b = next(iter(d))
    assert b["pose"].is_cuda and b["lengths"].is_cuda
    _same(b, next(iter(t)))
