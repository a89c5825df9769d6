"""Store: write/read round trip, O(1) access, validation of corrupt and truncated shards,
cached text features, mixing."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from slpfast.data import ShardError, Store, StoreWriter
from slpfast.data.mixing import mix_stores
from slpfast.layouts import NUM_JOINTS


def _clips(n, seed=0, T=(5, 40)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = int(rng.integers(*T))
        pose = rng.uniform(-2, 2, (t, NUM_JOINTS, 3)).astype(np.float32)
        conf = rng.random((t, NUM_JOINTS)).astype(np.float32)
        out.append((pose, conf))
    return out


def _write(path, clips, **kw):
    with StoreWriter(str(path), meta={"name": "t"}, **kw) as w:
        for i, (p, c) in enumerate(clips):
            w.add(p, c, text=f"text {i} é", split="a" if i % 3 else "b", source="src", language="xx",
                  signer=f"s{i % 4}", fps=25.0 + i, label=i % 5, glosses=list(range(i % 4)), key=f"k{i}")
    return Store(str(path))


def test_round_trip(tmp_path):
    clips = _clips(50)
    st = _write(tmp_path / "st", clips, shard_clips=16)
    assert len(st) == 50 and len(st.shards) == 4
    assert st.meta == {"name": "t"}
    for i in (0, 7, 16, 49, -1):
        c = st.clip(i)
        j = i % 50
        p, cf = clips[j]
        np.testing.assert_array_equal(c["pose"], p.astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(c["conf"], cf.astype(np.float16).astype(np.float32))
        assert c["text"] == f"text {j} é" and c["key"] == f"k{j}" and c["label"] == j % 5
        assert c["gloss_ids"].tolist() == list(range(j % 4)) and c["signer"] == f"s{j % 4}"
        assert c["fps"] == 25.0 + j and c["split"] == ("a" if j % 3 else "b") and c["clip_id"] == j
    np.testing.assert_array_equal(st.indices("b"), np.arange(0, 50, 3))
    with pytest.raises(IndexError):
        st.clip(50)


def test_gather_padded_and_packed(tmp_path):
    clips = _clips(40, seed=1)
    st = _write(tmp_path / "st", clips, shard_clips=7)
    idx = np.array([3, 39, 0, 17, 17, 8])
    b = st.gather(idx)
    T = max(clips[i][0].shape[0] for i in idx)
    assert b["pose"].shape == (6, T, NUM_JOINTS, 3) and b["conf"].shape == (6, T, NUM_JOINTS)
    for k, i in enumerate(idx):
        L = clips[i][0].shape[0]
        np.testing.assert_array_equal(b["pose"][k, :L], clips[i][0].astype(np.float16).astype(np.float32))
        assert not b["pose"][k, L:].any() and not b["conf"][k, L:].any()
    pk = st.gather(idx, packed=True, channels=2)
    cu = pk["cu_seqlens"]
    assert cu.dtype == np.int32 and cu[-1] == pk["pose"].shape[0] and pk["pose"].shape[-1] == 2
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(pk["pose"][cu[k]:cu[k + 1]], b["pose"][k, : b["lengths"][k], :, :2])
    crop = st.gather([5], starts=[2], lengths=[3])
    np.testing.assert_array_equal(crop["pose"][0], clips[5][0][2:5].astype(np.float16).astype(np.float32))


def test_sanitize_and_2d(tmp_path):
    pose = np.ones((4, NUM_JOINTS, 2), np.float32)
    pose[1, 3, 0] = np.nan
    pose[2, 4, 1] = 1e9
    conf = np.ones((4, NUM_JOINTS), np.float32)
    with StoreWriter(str(tmp_path / "st")) as w:
        w.add(pose, conf, text="x")
        with pytest.raises(ValueError):
            w.add(np.zeros((0, NUM_JOINTS, 3)), np.zeros((0, NUM_JOINTS)))
        with pytest.raises(ValueError):
            w.add(np.zeros((3, 50, 3)), np.zeros((3, 50)))
    c = Store(str(tmp_path / "st")).clip(0)
    assert c["dims"] == 2 and not c["pose"][..., 2].any()
    assert c["pose"][1, 3].tolist() == [0, 0, 0] and c["conf"][1, 3] == 0
    assert c["pose"][2, 4, 1] == 65504.0 and np.isfinite(c["pose"]).all()


def _shard(path):
    return os.path.join(path, "shard-00000.slp")


def test_truncated_shard(tmp_path):
    st = tmp_path / "st"
    _write(st, _clips(5))
    f = _shard(st)
    data = open(f, "rb").read()
    open(f, "wb").write(data[:-100])
    with pytest.raises(ShardError, match="truncated"):
        Store(str(st))
    open(f, "wb").write(data[:20])
    with pytest.raises(ShardError, match="truncated"):
        Store(str(st))


@pytest.mark.parametrize("where", ["magic", "version", "header", "index", "pose"])
def test_corrupt_shard(tmp_path, where, monkeypatch):
    st = tmp_path / "st"
    _write(st, _clips(5))
    f = _shard(st)
    data = bytearray(open(f, "rb").read())
    if where == "magic":
        data[0:4] = b"XXXX"
        msg = "magic"
    elif where == "version":
        data[8] = 99
        msg = "version|prelude"
    elif where == "header":
        data[40] ^= 0xFF
        msg = "header"
    else:  # flip a byte inside a section
        hdr = json.loads(bytes(data[32: 32 + int.from_bytes(data[12:16], "little")]))
        ds = (32 + int.from_bytes(data[12:16], "little") + 63) // 64 * 64
        msg = "label" if where == "index" else "pose"
        data[ds + hdr["sections"][msg]["offset"] + 5] ^= 0x01
    open(f, "wb").write(bytes(data))
    if where == "pose":
        Store(str(st), verify="none")  # sizes only
        with pytest.raises(ShardError, match=msg):
            Store(str(st))  # small sections are CRC-checked on every open
        from slpfast.data import shard_format

        monkeypatch.setattr(shard_format, "FAST_VERIFY_BYTES", 16)
        Store(str(st))  # big pose sections: only a full verify reads them
        with pytest.raises(ShardError, match=msg):
            Store(str(st), verify="full")
    else:
        with pytest.raises(ShardError, match=msg):
            Store(str(st))


def _flip_section_byte(f, section):
    data = bytearray(open(f, "rb").read())
    n = int.from_bytes(data[12:16], "little")
    hdr = json.loads(bytes(data[32: 32 + n]))
    data[(32 + n + 63) // 64 * 64 + hdr["sections"][section]["offset"] + 5] ^= 0x01
    open(f, "wb").write(bytes(data))


@pytest.mark.parametrize("section", ["pose", "conf"])
def test_fast_verify_reads_a_bounded_part_of_a_large_store(tmp_path, monkeypatch, section):
    """A 1.5M-clip store converted in 256-clip shards holds ~150 GB of pose in 25 MB sections:
    each was under FAST_VERIFY_BYTES, so every open (every rank, every loader worker) read the
    whole store. The bulk sections of one open now share one budget of FAST_VERIFY_BYTES."""
    from slpfast.data import shard_format

    clips = _clips(12, T=(20, 21))
    _write(tmp_path / "st", clips, shard_clips=1)
    shards = sorted(f for f in os.listdir(tmp_path / "st") if f.endswith(".slp"))
    per_shard = 20 * NUM_JOINTS * 8  # pose (x, y, z) + conf, float16
    monkeypatch.setattr(shard_format, "FAST_VERIFY_BYTES", 3 * per_shard + 64)  # > any one section
    checked = []
    real_crc = shard_format._crc
    monkeypatch.setattr(shard_format, "_crc", lambda buf: checked.append(memoryview(buf).nbytes) or real_crc(buf))
    Store(str(tmp_path / "st"))
    assert sum(n for n in checked if n >= 20 * NUM_JOINTS * 2) <= 3 * per_shard + 64  # not 12 shards' worth
    _flip_section_byte(tmp_path / "st" / shards[-1], section)
    Store(str(tmp_path / "st"))  # the last shard's bulk is past the budget: not read
    with pytest.raises(ShardError, match=section):
        Store(str(tmp_path / "st"), verify="full")
    _flip_section_byte(tmp_path / "st" / shards[0], section)
    with pytest.raises(ShardError, match=section):
        Store(str(tmp_path / "st"))  # the first shards are still checked on every open


def test_missing_and_mismatched(tmp_path):
    with pytest.raises(ShardError, match="no store.json"):
        Store(str(tmp_path))
    st = tmp_path / "st"
    _write(st, _clips(3))
    info = json.load(open(st / "store.json"))
    info["shards"][0]["num_clips"] = 4
    json.dump(info, open(st / "store.json", "w"))
    with pytest.raises(ShardError, match="does not match"):
        Store(str(st))
    os.unlink(_shard(st))
    with pytest.raises(ShardError, match="cannot open"):
        Store(str(st))


def test_atomic_shard_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    from slpfast.data import shard_format

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(shard_format.os, "fsync", boom)
    with pytest.raises(OSError):
        shard_format.write_shard(str(tmp_path / "x.slp"), {"a": np.zeros(3)}, kind="clips")
    assert os.listdir(tmp_path) == []


def test_text_features(tmp_path):
    st = _write(tmp_path / "st", _clips(20), shard_clips=6)
    rng = np.random.default_rng(0)
    pooled = rng.standard_normal((20, 8)).astype(np.float32)
    toks = [rng.standard_normal((i % 5 + 1, 8)).astype(np.float32) for i in range(20)]
    st.write_text_features(pooled, toks, name="minilm", meta={"encoder": "test"})
    st2 = Store(str(tmp_path / "st"))
    assert st2.text_feature_names == ["minilm"]
    p, t = st2.text_features("minilm", [3, 19])
    np.testing.assert_allclose(p, pooled[[3, 19]], atol=2e-3)
    assert t[1].shape == (5, 8)
    np.testing.assert_allclose(t[0], toks[3], atol=2e-3)
    assert "text_features/minilm" in st2.clip(0)
    with pytest.raises(ValueError):
        st2.write_text_features(pooled[:5], name="short")
    assert "short" not in Store(str(tmp_path / "st")).text_feature_names


def test_mixing(tmp_path):
    a = _write(tmp_path / "a", _clips(30))
    b = _write(tmp_path / "b", _clips(10, seed=3))
    cat, mix = mix_stores([a, b], [1, 3], num_samples=400, seed=0)
    assert len(cat) == 40
    e0 = mix.epoch_indices(0)
    assert len(e0) == 400 and (e0 < 40).all()
    assert abs((e0 >= 30).mean() - 0.75) < 0.01
    assert not np.array_equal(e0, mix.epoch_indices(1))
    np.testing.assert_array_equal(e0, mix.epoch_indices(0))
    c = cat.clip(35)
    np.testing.assert_array_equal(c["pose"], b.clip(5)["pose"])
    assert c["clip_id"] == 35 and cat.text(35) == b.text(5)


def test_index_must_be_an_int_and_text_features_finite(tmp_path):
    st = _write(tmp_path / "st", _clips(4), shard_clips=3)
    assert st[np.int64(-1)]["key"] == "k3"
    for bad in (1.5, "a", True, None):  # 1.5 used to return clip 1
        with pytest.raises(TypeError, match="clip index must be an int"):
            st[bad]
    pooled = np.ones((4, 8), np.float32)
    pooled[2, 5] = np.nan  # NaN features were cached and made the contrastive loss NaN later
    with pytest.raises(ValueError, match=r"1 clip\(s\) contain NaN or inf \(first: row 2"):
        st.write_text_features(pooled, name="nanfeat")
    toks = [np.ones((2, 8), np.float32) for _ in range(4)]
    toks[0][1, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        st.write_text_features(np.ones((4, 8), np.float32), toks, name="inftok")
    assert Store(str(tmp_path / "st")).text_feature_names == []


@pytest.mark.parametrize("edit", ["list", "no_shards", "bad_entry"])
def test_damaged_store_listing_is_a_shard_error(tmp_path, edit):
    """A store.json that is valid JSON of the wrong structure raised a raw AttributeError/KeyError."""
    _write(tmp_path / "st", _clips(3))
    p = tmp_path / "st" / "store.json"
    info = json.loads(p.read_text())
    if edit == "list":
        info = [info]
    elif edit == "no_shards":
        del info["shards"]
    else:
        info["shards"][0] = {"file": 3}
    p.write_text(json.dumps(info))
    with pytest.raises(ShardError, match="store.json: (not a slpfast store listing|damaged store listing)"):
        Store(str(tmp_path / "st"))


def test_mixture_rejects_non_finite_weights_and_no_samples():
    """NaN / inf weights and num_samples <= 0 failed later with numpy casting warnings and an
    unrelated 'need at least one array to concatenate' (or negative counts)."""
    from slpfast.data.mixing import MixtureIndices

    for w in ([1.0, float("nan")], [1.0, float("inf")], [1.0, -1.0], [0.0, 0.0], [1.0]):
        with pytest.raises(ValueError, match="mix weights: need one finite non-negative weight per source"):
            MixtureIndices([5, 5], w)
    for n in (0, -3):
        with pytest.raises(ValueError, match="mix num_samples must be >= 1"):
            MixtureIndices([5, 5], [1, 1], num_samples=n)
    assert len(MixtureIndices([5, 5], [3, 1], num_samples=8).epoch_indices(0)) == 8


def test_temp_files_of_killed_writers_are_removed(tmp_path):
    """The shard format promises that a killed writer's '.tmp-' file is removed by the next writer
    of that path; it stayed forever (a killed conversion leaked a partial shard per chunk)."""
    import subprocess
    import sys

    from slpfast.data import shard_format

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    path = tmp_path / "shard-00000.slp"
    stray = tmp_path / f"shard-00000.slp.tmp-{dead}-0"
    alive = tmp_path / f"shard-00000.slp.tmp-{os.getppid()}-0"  # a writer still running: left alone
    other = tmp_path / f"shard-00001.slp.tmp-{dead}-0"  # another path's: its own writer cleans it
    for f in (stray, alive, other):
        f.write_bytes(b"half a shard")
    shard_format.write_shard(str(path), {"a": np.zeros(3)}, kind="clips")
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, alive.name, other.name])


def test_interrupted_overwrite_is_an_incomplete_store(tmp_path):
    """StoreWriter(overwrite=True) rewrote shards under the old store.json: a crash midway left a
    store that opened as complete with new clips, old clips and the old text features."""
    st = _write(tmp_path / "st", _clips(8), shard_clips=4)
    st.write_text_features(np.ones((8, 4), np.float32), name="enc")
    feats = sorted(f for f in os.listdir(tmp_path / "st") if f.startswith("textfeat-"))
    assert len(feats) == 2
    with pytest.raises(RuntimeError, match="crash"):
        with StoreWriter(str(tmp_path / "st"), shard_clips=4) as w:
            for p, c in _clips(5, seed=9):
                w.add(p, c, text="new")
            raise RuntimeError("crash")
    with pytest.raises(ShardError, match="no store.json"):
        Store(str(tmp_path / "st"))
    assert not any(f.startswith("textfeat-") for f in os.listdir(tmp_path / "st"))
    new = _write(tmp_path / "st", _clips(3, seed=9))  # a finished overwrite: only the new clips
    assert len(new) == 3 and new.text_feature_names == []
    with pytest.raises(FileExistsError):
        StoreWriter(str(tmp_path / "st"), overwrite=False)


def test_out_of_range_clip_ids_are_index_errors(tmp_path):
    """Store.gather([-1]) silently read the last clip; ConcatStore.clip(-1) went to the wrong
    store and ConcatStore.text(N + 2) was a bare 'list index out of range'."""
    from slpfast.data.store_concat import ConcatStore

    a = _write(tmp_path / "a", _clips(4), shard_clips=3)
    b = _write(tmp_path / "b", _clips(3, seed=1))
    cat = ConcatStore([a, b])
    for src in (a, cat):
        n = len(src)
        for bad in ([-1], [0, n]):
            for read in (src.gather, src.texts, src.gloss_lists, src.padded_glosses):
                with pytest.raises(IndexError, match=rf"clip index {bad[-1]} out of range: .* \[0, {n}\)"):
                    read(bad)
    assert cat.clip(-1)["key"] == b.clip(2)["key"] and cat.clip(-1)["clip_id"] == 6 and cat.text(-7) == a.text(0)
    np.testing.assert_array_equal(cat.raw(-1)[0], b.raw(2)[0])
    for bad in (7, -8):
        for read in (cat.clip, cat.text, cat.glosses, cat.raw):
            with pytest.raises(IndexError, match=f"clip index {bad} out of range for a source of 7 clips"):
                read(bad)


def test_opening_many_shards_raises_the_open_file_limit(tmp_path, monkeypatch):
    """Each open shard holds a file descriptor (its memory map keeps one): a store of more
    shards than the soft limit allows raises it, or says how to fix it when the hard one is low."""
    import resource

    from slpfast.data import shard_format

    d = tmp_path / "s"
    with StoreWriter(str(d), shard_clips=1) as w:
        for i in range(6):
            w.add(np.zeros((3, NUM_JOINTS, 3), np.float32), np.ones((3, NUM_JOINTS), np.float32), text=f"t{i}")
    in_use = shard_format._open_fd_count()
    limits = {"now": (in_use + 1000, in_use + 100_000)}
    monkeypatch.setattr(resource, "getrlimit", lambda what: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda what, value: limits.__setitem__("now", value))
    monkeypatch.setattr(shard_format, "_open_fd_count", lambda: in_use)
    assert len(Store(str(d))) == 6  # 6 shards and 256 spare fit: nothing changes
    assert limits["now"] == (in_use + 1000, in_use + 100_000)
    limits["now"] = (in_use + 10, in_use + 100_000)
    assert len(Store(str(d))) == 6
    soft, hard = limits["now"]
    assert soft >= in_use + 6 + 256 and hard == in_use + 100_000
    limits["now"] = (in_use + 10, in_use + 20)  # even the hard limit is too low
    with pytest.raises(ShardError, match="ulimit -n.*--chunk"):
        Store(str(d))


def test_unknown_open_file_count_assumes_the_soft_limit_is_spent(monkeypatch):
    """Where the system does not list open descriptors, the limit is raised by what the shards
    need on top of the soft limit (a fixed guess let a second large store fail with EMFILE)."""
    import resource

    from slpfast.data import shard_format

    limits = {"now": (1000, 100_000)}
    monkeypatch.setattr(resource, "getrlimit", lambda what: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda what, value: limits.__setitem__("now", value))
    monkeypatch.setattr(shard_format, "_open_fd_count", lambda: None)
    shard_format.reserve_open_files(10, "store x")
    assert limits["now"][0] >= 1000 + 10 + 256


def test_running_out_of_descriptors_names_the_shard_and_the_fix(tmp_path, monkeypatch):
    import errno

    from slpfast.data import shard_format

    d = tmp_path / "s"
    with StoreWriter(str(d)) as w:
        w.add(np.zeros((3, NUM_JOINTS, 3), np.float32), np.ones((3, NUM_JOINTS), np.float32), text="a")

    def no_more(*a, **k):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(shard_format.mmap, "mmap", no_more)
    with pytest.raises(ShardError, match="shard-00000.slp: cannot map shard .*ulimit -n"):
        Store(str(d))


def test_unknown_open_file_count_never_refuses(monkeypatch):
    """Without /proc (and so /dev/fd), a soft limit equal to the hard one refused even a
    one-shard store: with nothing to count, the limit is raised as a best effort only."""
    import resource

    from slpfast.data import shard_format

    set_to = []
    monkeypatch.setattr(resource, "getrlimit", lambda what: (65536, 65536))
    monkeypatch.setattr(resource, "setrlimit", lambda what, value: set_to.append(value))
    monkeypatch.setattr(shard_format, "_open_fd_count", lambda: None)
    shard_format.reserve_open_files(1, "store x")  # no ShardError
    assert set_to == [(65536, 65536)]  # already at the hard limit: as far as it goes


def test_batched_reads_check_the_shape_and_type_of_their_ids(tmp_path):
    """gather([0, 1], starts=[0], lengths=[1]) ran the numba kernel past the end of starts /
    lengths (no bounds checks there: garbage crops written into the batch); gather([0.7]) read
    clip 0; a 0-d or 2-D id array was a numba typing error or 'tuple index out of range'."""
    from slpfast.data.store_concat import ConcatStore

    a = _write(tmp_path / "a", _clips(4), shard_clips=3)
    cat = ConcatStore([a, _write(tmp_path / "b", _clips(3, seed=1))])
    for src in (a, cat):
        for bad in ([0.7], np.array([True, False]), ["1"]):
            for read in (src.gather, src.texts, src.gloss_lists, src.padded_glosses):
                with pytest.raises(TypeError, match="clip ids must be integers"):
                    read(bad)
        for bad in (np.int64(2), [[0, 1]]):
            with pytest.raises(ValueError, match=r"clip ids must be 1-D \(B,\)"):
                src.gather(bad)
        for kw in (dict(starts=[0], lengths=[1, 1]), dict(starts=[0, 0], lengths=[1]), dict(lengths=[1, 1, 1])):
            for packed in (False, True):
                with pytest.raises(ValueError, match=r"must be \(B,\)=\(2,\)"):
                    src.gather([0, 1], packed=packed, **kw)
        assert src.gather(np.array([], np.int64))["pose"].shape == (0, 0, 123, 3)  # empty reads stay fine
        assert src.gather([])["lengths"].shape == (0,) and src.texts([]) == []
        np.testing.assert_array_equal(src.gather(np.array([2], np.uint8))["pose"], src.gather([2])["pose"])


def test_raw_views_stay_inside_their_clip(tmp_path):
    """raw(0, start=2, length=5) on a 3-frame clip returned frames of the next clip, and a
    negative start frames of the one before: a view is only ever of the clip asked for."""
    from slpfast.data.store_concat import ConcatStore

    a = _write(tmp_path / "a", _clips(4), shard_clips=3)
    cat = ConcatStore([a, _write(tmp_path / "b", _clips(3, seed=1))])
    for src in (a, cat):
        T = int(src.lengths[1])
        p, c = src.raw(1, start=1, length=T - 1)
        np.testing.assert_array_equal(p.astype(np.float32), src.gather([1])["pose"][0, 1:])
        assert src.raw(1, start=T)[0].shape == (0, 123, 3)  # an empty tail is still inside
        for kw in (dict(start=-1), dict(start=T + 1), dict(start=1, length=T), dict(length=-1)):
            with pytest.raises(IndexError, match=f"outside clip 1 of {T} frames"):
                src.raw(1, **kw)
        with pytest.raises(TypeError, match="clip index must be an int"):
            src.raw(1.5)


def test_store_opens_while_its_text_features_are_rewritten_back_to_back(tmp_path, monkeypatch):
    """A store opened while a feature set was re-written twice in a row (each re-write removes
    the files the listing before it named) read the listing again only once: ShardError
    'cannot open shard (No such file or directory)' (3 of ~5,000 opens against a loop of
    re-writes)."""
    a = _write(tmp_path / "a", _clips(5), shard_clips=2)
    n = len(a)
    a.write_text_features(np.zeros((n, 4), np.float32), name="enc")
    writer = Store(a.path)
    real = Store._open_feature_files
    rewrites = []

    def racing(self, names):
        if self is not writer and len(rewrites) < 2:  # a re-write lands before each open of the reader
            rewrites.append(1)
            writer.write_text_features(np.full((n, 4), len(rewrites), np.float32), name="enc")
        return real(self, names)

    monkeypatch.setattr(Store, "_open_feature_files", racing)
    st = Store(a.path)
    assert len(rewrites) == 2 and (st.text_features("enc", np.arange(n))[0] == 2).all()


def test_concat_refuses_a_feature_set_of_different_dims(tmp_path):
    """Two stores with features of one name but different dims (two encoders) made a loader
    whose first batch mixing both failed in numpy with 'could not broadcast (4,) into (5,)'."""
    from slpfast.data import TorchLoader
    from slpfast.data.store_concat import ConcatStore

    a = _write(tmp_path / "a", _clips(3))
    b = _write(tmp_path / "b", _clips(2, seed=1))
    a.write_text_features(np.zeros((3, 5), np.float32), name="enc")
    b.write_text_features(np.zeros((2, 4), np.float32), name="enc")
    cat = ConcatStore([a, b])
    for build in (lambda: cat.text_features("enc", [0, 4]), lambda: TorchLoader(cat, batch_size=2)):
        with pytest.raises(ValueError, match="text features 'enc' have different dims"):
            build()
    b.write_text_features(np.ones((2, 5), np.float32), name="enc")
    assert cat.text_features("enc", [0, 4])[0].tolist() == [[0] * 5, [1] * 5]
