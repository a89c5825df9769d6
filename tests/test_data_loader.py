"""Samplers and the torch loader: batch contract, token budget, distributed parts, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from slpfast.data import Store, TorchLoader
from slpfast.data.collate import WordTokenizer
from slpfast.data.samplers import FixedBatchSampler, TokenBudgetSampler, pack_ffd, pack_sorted_padded
from slpfast.data.synthetic import generate_corpus
from slpfast.layouts import NUM_JOINTS


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    return generate_corpus(str(d / "s"), num_clips=240, seed=1, num_glosses=24, shard_clips=64)


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_batch_contract(store):
    tok = WordTokenizer.from_store(store)
    L = TorchLoader(store, split="sentence_train", batch_size=8, seed=0, tokenizer=tok)
    b = next(iter(L))
    B = 8
    T = int(b["lengths"].max())
    assert b["pose"].shape == (B, T, NUM_JOINTS, 3) and b["pose"].dtype == torch.float32
    assert b["conf"].shape == (B, T, NUM_JOINTS) and b["conf"].dtype == torch.float32
    for k in ("lengths", "clip_id", "label", "gloss_ids", "gloss_lengths", "text_ids", "text_lengths"):
        assert b[k].dtype == torch.int64, k
    assert (b["label"] == -1).all() and len(b["text"]) == B
    for i in range(B):
        cid = int(b["clip_id"][i])
        c = store.clip(cid)
        n = int(b["lengths"][i])
        assert torch.equal(b["pose"][i, :n], torch.from_numpy(c["pose"]))
        assert not b["pose"][i, n:].any()
        g = int(b["gloss_lengths"][i])
        assert b["gloss_ids"][i, :g].tolist() == c["gloss_ids"].tolist() and (b["gloss_ids"][i, g:] == -1).all()
        assert tok.decode(b["text_ids"][i].tolist()) == c["text"] == b["text"][i]
    isl = next(iter(TorchLoader(store, split="islr_train", batch_size=4)))
    assert (isl["label"] == isl["gloss_ids"][:, 0]).all() and (isl["gloss_lengths"] == 1).all()


def test_text_features_in_batches(store, tmp_path):
    import shutil

    st = Store(shutil.copytree(store.path, str(tmp_path / "copy")))
    n = len(st)
    pooled = np.arange(n * 4, dtype=np.float32).reshape(n, 4) / 100
    toks = [np.full((i % 3 + 1, 4), i / 100, np.float32) for i in range(n)]
    st.write_text_features(pooled, toks, name="enc")
    st = Store(st.path)
    b = next(iter(TorchLoader(st, batch_size=5, seed=2, packed=True)))
    ids = b["clip_id"].numpy()
    assert b["text_features"].shape == (5, 4) and b["text_token_features"].shape[0] == 5
    np.testing.assert_allclose(b["text_features"].numpy(), pooled[ids], rtol=1e-3)
    assert b["text_lengths"].tolist() == [i % 3 + 1 for i in ids]
    assert b["cu_seqlens"].dtype == torch.int32 and int(b["cu_seqlens"][-1]) == b["pose"].shape[0]


def test_packing_kernels():
    rng = np.random.default_rng(0)
    L = np.sort(rng.integers(1, 300, 1000))[::-1].copy()
    for fn, cost in ((pack_ffd, lambda x: x.sum()), (pack_sorted_padded, lambda x: len(x) * x.max())):
        bid = fn(L, 1024, 64)
        assert len(bid) == len(L)
        for b in np.unique(bid):
            items = L[bid == b]
            assert cost(items) <= 1024 and len(items) <= 64
    # FFD packs tightly
    bid = pack_ffd(L, 1024, 1 << 30)
    assert L.sum() / (1024 * (bid.max() + 1)) > 0.95


@pytest.mark.parametrize("packed", [False, True])
def test_token_budget(store, packed):
    L = TorchLoader(store, max_tokens=1200, packed=packed, seed=0)
    n = 0
    seen = []
    for b in L:
        lens = b["lengths"]
        cost = int(lens.sum()) if packed else len(lens) * int(lens.max())
        assert cost <= 1200
        if not packed:
            assert b["pose"].shape[1] == int(lens.max())
        seen.append(b["clip_id"])
        n += 1
    ids = torch.cat(seen)
    assert len(ids) == len(store) and len(set(ids.tolist())) == len(store)  # every clip once
    assert n == len(L)


def test_packed_budget_batches_are_whole_bins():
    """pack_ffd's bin ids are not in runs (first fit revisits earlier bins), and the sampler cut
    only where neighbouring ids differed: each bin became several small batches (fill ~0.3)."""
    assert TokenBudgetSampler(np.array([60, 50, 40, 30]), max_tokens=100, packed=True, shuffle=False).plan(0) \
        .lengths.tolist() == [60, 40, 50, 30]
    lengths = np.random.default_rng(0).integers(1, 300, 600)
    for packed in (True, False):
        s = TokenBudgetSampler(lengths, max_tokens=1024, packed=packed, seed=1)
        p = s.plan(0)
        assert sorted(p.indices.tolist()) == list(range(len(lengths)))  # every clip once
        costs = [int(ln.sum()) if packed else len(ln) * int(ln.max()) for _, _, ln in map(p.batch, range(len(p)))]
        assert max(costs) <= 1024
        if packed:
            assert len(p) <= 1.3 * np.ceil(lengths.sum() / 1024)
        else:  # padded: one batch per bin of the greedy packing of the sorted lengths
            assert len(p) == pack_sorted_padded(np.sort(lengths)[::-1].copy(), 1024, 1 << 30).max() + 1


def test_crop_long_clips(store):
    L = TorchLoader(store, batch_size=16, max_frames=40, seed=0)
    b = next(iter(L))
    assert int(b["lengths"].max()) <= 40
    full = store.lengths[b["clip_id"].numpy()]
    assert (b["lengths"].numpy() == np.minimum(full, 40)).all()


@pytest.mark.parametrize("kind", ["fixed", "budget"])
def test_ranks_disjoint_same_steps(store, kind):
    parts, steps = [], []
    for r in range(3):
        if kind == "fixed":
            s = FixedBatchSampler(store.lengths, batch_size=7, rank=r, world_size=3, seed=5)
        else:
            s = TokenBudgetSampler(store.lengths, max_tokens=900, rank=r, world_size=3, seed=5)
        p = s.plan(2)
        parts.append(set(p.indices.tolist()))
        steps.append(len(p))
        assert len(p.indices) == len(parts[-1])
    assert len(set(steps)) == 1
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(parts[0] | parts[1] | parts[2]) >= len(store) - (3 if kind == "fixed" else 0.2 * len(store))


def _dist_worker(rank, world_size, path, out):
    st = Store(path)
    L = TorchLoader(st, batch_size=6, seed=9)  # rank / world size from torch.distributed
    ids = [b["clip_id"] for b in L]
    torch.save(torch.cat(ids), f"{out}/rank{rank}.pt")
    assert L.sampler.world_size == world_size and L.sampler.rank == rank


def test_distributed_loader(store, distributed, tmp_path):
    distributed(_dist_worker, 2, store.path, str(tmp_path))
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert len(a) == len(b) == len(store) // 2
    assert not set(a.tolist()) & set(b.tolist())


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch(store, workers):
    kw = dict(split="sentence_train", max_tokens=1500, seed=3, num_workers=workers)
    ref = TorchLoader(store, **kw)
    full = [b for _ in range(2) for b in ref]  # two epochs
    n0 = len(TorchLoader(store, **kw).plan(0))
    a = TorchLoader(store, **kw)
    got = []
    for b in a:
        got.append(b)
        if len(got) == 3:
            break
    state = a.state_dict()
    assert state["step"] == 3 and state["epoch"] == 0
    b2 = TorchLoader(store, **kw)
    b2.load_state_dict(state)
    got += list(b2)  # rest of epoch 0
    assert len(got) == n0
    got += list(b2)  # epoch 1
    assert len(got) == len(full)
    for x, y in zip(got, full):
        _same(x, y)
    assert not torch.equal(full[0]["clip_id"], full[n0]["clip_id"])  # epochs differ


def test_workers_match_main_process(store):
    a = list(TorchLoader(store, batch_size=16, seed=4, num_workers=0, packed=True))
    b = list(TorchLoader(store, batch_size=16, seed=4, num_workers=2, packed=True))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        _same(x, y)


def test_mixture_loader(store, tmp_path):
    from slpfast.data.mixing import mix_stores

    small = generate_corpus(str(tmp_path / "small"), num_clips=20, seed=7, num_glosses=12)
    cat, mix = mix_stores([store, small], [1, 1], num_samples=64, seed=0)
    L = TorchLoader(cat, mixture=mix, batch_size=16, seed=0, num_workers=2)
    ids = torch.cat([b["clip_id"] for b in L])
    assert len(ids) == 64
    assert (ids >= len(store)).sum() == 32  # half from the 20-clip store (up-sampled)
    b = next(iter(TorchLoader(cat, mixture=mix, batch_size=4, seed=0)))
    for i, cid in enumerate(b["clip_id"].tolist()):
        src, k = (store, cid) if cid < len(store) else (small, cid - len(store))
        n = int(b["lengths"][i])
        assert torch.equal(b["pose"][i, :n], torch.from_numpy(src.clip(k)["pose"])) and b["text"][i] == src.text(k)


def test_mixture_order_follows_seeds_and_resume_checks_the_mixture():
    """The loader's seed and shuffle were ignored with a mixture, and a loader state saved under
    another mixture seed or other per-source subsets was accepted (the fingerprint only held
    sizes and counts): a resume at a position in another order."""
    from slpfast.data.mixing import MixtureIndices
    from slpfast.data.samplers import check_loader_state

    lengths = np.arange(1, 31)
    mix = lambda seed=0, subsets=None, w=(1, 1): MixtureIndices([20, 10], w, num_samples=24, seed=seed,  # noqa: E731
                                                                subsets=subsets)
    s = lambda m, seed=0: FixedBatchSampler(lengths, mixture=m, batch_size=4, seed=seed)  # noqa: E731
    order = s(mix()).plan(0).indices
    assert np.array_equal(order, s(mix()).plan(0).indices)  # deterministic
    assert not np.array_equal(order, s(mix(), seed=1).plan(0).indices)  # the loader's seed counts
    assert not np.array_equal(order, s(mix(seed=1)).plan(0).indices)  # and the mixture's
    assert not np.array_equal(order, s(mix()).plan(1).indices)
    with pytest.raises(ValueError, match="^shuffle=False cannot be honoured with a mixture"):
        FixedBatchSampler(lengths, mixture=mix(), batch_size=4, shuffle=False)
    state = s(mix()).loader_state(0, 2)
    check_loader_state(state, s(mix()))
    even, odd = [np.arange(0, 20, 2), np.arange(10)], [np.arange(1, 20, 2), np.arange(10)]
    check_loader_state(s(mix(subsets=even)).loader_state(0, 2), s(mix(subsets=even)))
    for other in (mix(seed=1), mix(w=(2, 1)), mix(subsets=even)):
        with pytest.raises(ValueError, match="loader state was saved over other data"):
            check_loader_state(state, s(other))
    with pytest.raises(ValueError, match="loader state was saved over other data"):
        check_loader_state(s(mix(subsets=even)).loader_state(0, 2), s(mix(subsets=odd)))


@pytest.mark.parametrize("cls, kw, name", [
    (TokenBudgetSampler, dict(max_tokens=0), "max_tokens"),  # was: batches of 0-frame crops
    (TokenBudgetSampler, dict(max_tokens=-5), "max_tokens"),  # was: crops of -5 frames
    (TokenBudgetSampler, dict(max_tokens=50, bucket_size=0), "bucket_size"),  # was: range() arg 3 must not be zero
    (TokenBudgetSampler, dict(max_tokens=50, max_batch_size=0), "max_batch_size"),
    (TokenBudgetSampler, dict(max_tokens=50, max_frames=-3), "max_frames"),
    (FixedBatchSampler, dict(batch_size=2, max_frames=0), "max_frames"),
    (FixedBatchSampler, dict(batch_size=2.5), "batch_size"),
    (FixedBatchSampler, dict(batch_size=2, indices=[0, 9]), "indices"),  # was: a numpy IndexError
])
def test_sampler_arguments_are_checked(cls, kw, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        cls(np.array([5, 10, 20, 30]), **kw)


def test_resume_state_over_other_data_is_refused(store):
    """A loader state loaded over other clips (another split, a re-converted store) silently
    continued at a position that meant nothing; the torch and DALI loaders both check it."""
    a = TorchLoader(store, split="sentence_train", batch_size=4, seed=1)
    next(iter(a))
    state = a.state_dict()
    TorchLoader(store, split="sentence_train", batch_size=4, seed=1).load_state_dict(state)  # same data: fine
    with pytest.raises(ValueError, match="loader state was saved over other data"):
        TorchLoader(store, split="islr_train", batch_size=4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="loader state was saved with seed 1, this loader has 2"):
        TorchLoader(store, split="sentence_train", batch_size=4, seed=2).load_state_dict(state)
    old = {k: v for k, v in state.items() if k != "data"}  # states of older checkpoints still load
    TorchLoader(store, split="islr_train", batch_size=4, seed=1).load_state_dict(old)


@pytest.mark.cuda
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("packed", [False, True])
def test_pinned_batches_are_collated_in_place(store, workers, packed):
    """pin_memory=True (a GPU run): pose and conf are collated straight into pinned memory, the
    rest is pinned afterwards, and the values are those of an unpinned loader."""
    kw = dict(batch_size=16, seed=5, packed=packed, num_workers=workers)
    pinned = list(TorchLoader(store, pin_memory=True, **kw))
    plain = list(TorchLoader(store, pin_memory=False, **kw))
    assert len(pinned) == len(plain) > 1
    for a, b in zip(pinned, plain):
        assert all(v.is_pinned() for v in a.values() if isinstance(v, torch.Tensor))
        _same(a, b)
        # what the trainer does with a batch: an asynchronous copy to the GPU
        assert torch.equal(a["pose"].to("cuda", non_blocking=True).cpu(), b["pose"])


def test_empty_epoch_counts_once(store):
    """An epoch with no batches (drop_last, too few clips) advanced the loader two epochs per pass."""
    L = TorchLoader(store, batch_size=len(store) + 1, drop_last=True, seed=0)
    assert len(L) == 0
    for e in range(1, 3):
        assert list(L) == [] and L.epoch == e and L.step == 0
    L = TorchLoader(store, batch_size=100, seed=0)  # a state saved after the last batch: next epoch
    L.load_state_dict({**L.state_dict(), "step": len(L)})
    assert len(list(L)) == len(L) and L.epoch == 2


def test_thread_iterator_after_close_is_a_clear_error(store):
    """next() on a thread-worker iterator after close() raised AttributeError ('NoneType' ... 'submit')."""
    L = TorchLoader(store, batch_size=4, seed=0, num_workers=2, prefetch_factor=1)
    it = iter(L)
    next(it)
    L.close()
    with pytest.raises(RuntimeError, match="loader was closed"):
        next(it)
    assert len(list(L)) == len(L) - 1  # a new iteration works (and goes on from the step reached)
    L.close()


@pytest.mark.parametrize("kw, name", [
    (dict(max_text_len=0), "max_text_len"), (dict(max_text_len=-1), "max_text_len"),
    (dict(max_text_len=2.5), "max_text_len"), (dict(pad_to=0), "pad_to"), (dict(pad_to=-3), "pad_to"),
    (dict(pad_to=2.5), "pad_to"), (dict(channels=1), "channels"), (dict(channels=2.0), "channels"),
])
def test_collator_arguments_are_checked(store, kw, name):
    """Checked where both loaders build their collator: max_text_len=0 gave 0 tokens from the
    torch loader and every token from the DALI one; a pad_to of 0, -3 or 2.5 was read as 1 or 2."""
    with pytest.raises(ValueError, match=name):
        TorchLoader(store, batch_size=4, tokenizer=WordTokenizer(["a"]), **kw)
