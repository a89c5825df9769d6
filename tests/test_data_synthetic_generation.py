"""Synthetic corpus: argument checking, unique words, the cache folder's safety, worker failures."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from slpfast.data import synthetic
from slpfast.data.synthetic import HANDSHAPES, SyntheticLanguage, corpus_plan, generate_corpus
from slpfast.data.synthetic_vocabulary import _vocabulary


def test_numpy_integer_arguments(tmp_path):
    """np.int64 num_clips/seed passed the checks, then json.dump of the settings failed after
    every shard was written (a TypeError from deep in store.json writing, and no store)."""
    d = str(tmp_path / "c")
    st = generate_corpus(d, np.int64(12), np.int64(2), num_glosses=np.int64(8), num_signers=np.int32(2),
                         islr_fraction=np.float32(0.5))
    assert len(st) == 12
    settings = st.meta["synthetic"]["settings"]
    assert settings == {"num_clips": 12, "seed": 2, "num_glosses": 8, "num_signers": 2, "islr_fraction": 0.5}
    mtime = os.path.getmtime(os.path.join(d, "store.json"))
    again = generate_corpus(d, 12, 2, num_glosses=8, num_signers=2, islr_fraction=0.5, overwrite=False)
    assert os.path.getmtime(os.path.join(d, "store.json")) == mtime  # reused as is
    np.testing.assert_array_equal(again.clip(3)["pose"], st.clip(3)["pose"])


@pytest.mark.parametrize("kw, name", [
    (dict(num_glosses=5), "num_glosses"), (dict(num_glosses="100"), "num_glosses"),
    (dict(num_glosses=8.5), "num_glosses"), (dict(num_glosses=None), "num_glosses"),
    (dict(islr_fraction="a"), "islr_fraction"), (dict(islr_fraction=float("nan")), "islr_fraction"),
    (dict(workers="x"), "workers"), (dict(workers=-1), "workers"),
    (dict(shard_clips=0), "shard_clips"), (dict(num_clips=True), "num_clips"), (dict(seed=1.5), "seed"),
])
def test_bad_arguments_named(tmp_path, kw, name):
    """num_glosses / islr_fraction / workers of the wrong type failed with numpy's or Python's
    unnamed TypeError; shard_clips=0, workers=-1 and num_clips=True were accepted."""
    args = dict(num_clips=10, num_glosses=8)
    args.update(kw)
    with pytest.raises(ValueError, match=f"generate_corpus: {name} must be"):
        generate_corpus(str(tmp_path / "c"), **args)
    with pytest.raises(TypeError, match="generate_corpus: out_dir must be a path"):
        generate_corpus(None, 10)
    assert not (tmp_path / "c").exists()


def test_corpus_plan_and_language_bad_arguments():
    """corpus_plan(10, 0, .5) was a ZeroDivisionError, corpus_plan(-1, ...) an empty plan;
    SyntheticLanguage's seed=-1 / num_signers=0 / index=-1 failed inside numpy, gloss_hint out of
    range was an IndexError and an unknown kind silently rendered a sentence."""
    with pytest.raises(ValueError, match="corpus_plan: num_glosses must be"):
        corpus_plan(10, 0, 0.5)
    with pytest.raises(ValueError, match="corpus_plan: num_clips must be"):
        corpus_plan(-1, 10, 0.5)
    with pytest.raises(ValueError, match="corpus_plan: islr_fraction must be"):
        corpus_plan(10, 10, 2.0)
    assert corpus_plan(0, 10, 0.5) == []
    for kw, name in ((dict(seed=-1), "seed"), (dict(num_signers=0), "num_signers"),
                     (dict(num_glosses=3), "num_glosses")):
        with pytest.raises(ValueError, match=f"SyntheticLanguage: {name} must be"):
            SyntheticLanguage(**{"num_glosses": 8, "num_signers": 2, **kw})
    lang = SyntheticLanguage(0, 8, 2)
    for args, name in (((-1, "islr"), "index"), ((0, "bogus"), "kind"), ((0, "islr", 8), "gloss_hint"),
                       ((0, "islr", -1), "gloss_hint")):
        with pytest.raises(ValueError, match=f"SyntheticLanguage.clip: {name} must be"):
            lang.clip(*args)
    c = lang.clip(np.int64(1), "islr", np.int64(3))
    assert c["label"] == 3 and c["glosses"] == [3] and c["text"] == lang.words[3]
    assert c["pose"].dtype == np.float32 and c["pose"].shape[1:] == (123, 3) and c["conf"].shape == c["pose"].shape[:2]


def test_words_and_glosses_unique():
    """From 174 glosses on, the 84th noun was numbered 'teacher2', the listed noun 'teacher2'
    again: two glosses shared a word and a gloss name (the text no longer determines the sign
    and gloss_to_text lost an entry)."""
    for n in (8, 100, 173, 174, 250, 600):
        glosses, words, _ = _vocabulary(n)
        assert len(set(words)) == n and len(set(glosses)) == n, n
    assert _vocabulary(100) == _vocabulary(100)  # unchanged where there was no clash
    lang = SyntheticLanguage(0, 200, 2)
    assert len(lang.meta()["gloss_to_text"]) == 200


def test_overwrite_false_keeps_a_foreign_store(tmp_path):
    """With overwrite=False (the pre-training cache) a store that is no synthetic corpus was
    deleted and replaced by one."""
    from slpfast.data import Store
    from slpfast.data.store_writer import StoreWriter

    d = str(tmp_path / "real")
    with StoreWriter(d, meta={"name": "recorded"}) as w:
        w.add(np.zeros((5, 123, 3), np.float32), np.ones((5, 123), np.float32), text="hello")
    with pytest.raises(FileExistsError, match="not a synthetic corpus"):
        generate_corpus(d, 10, num_glosses=8, overwrite=False)
    st = Store(d)
    assert len(st) == 1 and st.text(0) == "hello"
    assert len(generate_corpus(d, 10, num_glosses=8)) == 10  # overwrite=True replaces it


def test_overwrite_false_never_deletes_what_it_cannot_tell_apart(tmp_path):
    """A real store whose listing cannot be read (a damaged file, a passing I/O error), or
    shards without a listing (a store being written), are left alone; a folder the generator
    marked as its own is regenerated."""
    from slpfast.data.store_writer import StoreWriter

    d = tmp_path / "real"
    with StoreWriter(str(d), meta={"name": "recorded"}, shard_clips=1) as w:
        for _ in range(3):
            w.add(np.zeros((5, 123, 3), np.float32), np.ones((5, 123), np.float32), text="hello")
    shards = sorted(f for f in os.listdir(d) if f.endswith(".slp"))
    (d / "store.json").write_text((d / "store.json").read_text()[:10])  # torn
    with pytest.raises(FileExistsError, match="cannot be read"):
        generate_corpus(str(d), 10, num_glosses=8, overwrite=False)
    (d / "store.json").unlink()
    with pytest.raises(FileExistsError, match="shards without a store.json"):
        generate_corpus(str(d), 10, num_glosses=8, overwrite=False)
    assert sorted(f for f in os.listdir(d) if f.endswith(".slp")) == shards
    own = tmp_path / "own"
    generate_corpus(str(own), 10, num_glosses=8)
    (own / "store.json").write_text("{")  # damaged, but the folder is the generator's
    assert len(generate_corpus(str(own), 10, num_glosses=8, overwrite=False)) == 10


def test_interrupted_generation_is_not_reused(tmp_path, monkeypatch):
    """A generation that stops half-way (over an older corpus) leaves no store.json: the next
    overwrite=False call generates the corpus again instead of accepting a partial one."""
    from slpfast.data import synthetic_language

    d = str(tmp_path / "cache")
    generate_corpus(d, 30, 1, num_glosses=8, shard_clips=8)
    real_clip = synthetic_language.SyntheticLanguage.clip

    def failing(self, index, *a, **k):
        if index == 25:
            raise KeyboardInterrupt
        return real_clip(self, index, *a, **k)

    monkeypatch.setattr(synthetic_language.SyntheticLanguage, "clip", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(d, 40, 1, num_glosses=8, shard_clips=8, overwrite=False, workers=0)
    assert not os.path.exists(os.path.join(d, "store.json"))
    monkeypatch.setattr(synthetic_language.SyntheticLanguage, "clip", real_clip)
    st = generate_corpus(d, 40, 1, num_glosses=8, shard_clips=8, overwrite=False)
    assert len(st) == 40 and st.meta["synthetic"]["settings"]["num_clips"] == 40
    with open(os.path.join(d, "store.json")) as f:
        listed = sorted(s["file"] for s in json.load(f)["shards"])
    assert listed == sorted(x for x in os.listdir(d) if x.endswith(".slp"))


def test_dead_worker_raises_instead_of_hanging(tmp_path):
    """With multiprocessing.Pool a worker that died (here: spawned from a script without a
    ``__main__`` guard, so each worker re-runs the script and fails) was replaced and its chunk
    waited for forever; now the generation raises BrokenProcessPool."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""
        import tempfile
        from slpfast.data.synthetic import generate_corpus
        generate_corpus(tempfile.mkdtemp(dir=%r), 20, 1, num_glosses=8, workers=2)
    """ % str(tmp_path)))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, cwd=os.getcwd())
    try:
        _, err = p.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail("generation with dead workers hung")
    assert p.returncode != 0 and "BrokenProcessPool" in err, err[-2000:]


def test_docstring_counts():
    """The module docstring said 14 handshapes; there are 15."""
    assert f"({len(HANDSHAPES)} finger configurations" in synthetic.__doc__


def test_progress_bar_while_generating_and_same_bytes(tmp_path, capsys):
    import hashlib

    def digest(d):
        return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in os.listdir(d) if f.endswith(".slp")}

    generate_corpus(str(tmp_path / "quiet"), 24, 1, num_glosses=12, workers=0)
    assert "generating the synthetic corpus" not in capsys.readouterr().err
    generate_corpus(str(tmp_path / "bar"), 24, 1, num_glosses=12, workers=0, progress=True)
    assert "generating the synthetic corpus" in capsys.readouterr().err
    assert digest(tmp_path / "bar") == digest(tmp_path / "quiet")
    generate_corpus(str(tmp_path / "bar"), 24, 1, num_glosses=12, workers=0, overwrite=False, progress=True)
    assert "generating" not in capsys.readouterr().err  # reused: nothing to show

