"""The converter as a user runs it: reruns over a store in use, interruptions, wrong inputs.

Each test is a defect found by running ``python -m slpfast.data.convert`` on real data; the
docstring says what went wrong before.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from slpfast.data import Store
from slpfast.data import convert as conv


def _npy_inputs(d, n=3, seed=0):
    """``n`` small COCO-WholeBody clips as .npy files (c0.npy, ...) in folder ``d``."""
    os.makedirs(d)
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.save(os.path.join(d, f"c{i}.npy"), rng.random((6, 133, 2)).astype(np.float32))


def _manifest(path, n, **fields):
    cols = {"text": [f"text {i}" for i in range(n)], **fields}
    with open(path, "w") as f:
        f.write(",".join(["id", *cols]) + "\n")
        for i in range(n):
            f.write(",".join([f"c{i}", *(str(v[i]) for v in cols.values())]) + "\n")
    return str(path)


def _cache_features(st: str, name: str = "minilm") -> np.ndarray:
    store = Store(st)
    pooled = np.random.default_rng(1).random((len(store), 8)).astype(np.float32)
    store.write_text_features(pooled, name=name)
    return pooled


def test_a_rerun_over_a_finished_store_keeps_its_cached_text_features(tmp_path):
    """Re-running the same convert command (a no-op resume: every chunk finished) rewrote
    store.json without its ``text_features``: the features that pre-training had cached (for
    1.5M texts, a GPU run of the text encoder) were dropped from the listing and their files
    left behind as orphans."""
    _npy_inputs(tmp_path / "in", n=3)
    st = str(tmp_path / "st")
    kw = dict(allow_missing_text=True, progress=False, chunk=2)
    conv.convert([str(tmp_path / "in")], st, **kw)
    pooled = _cache_features(st)
    rep = conv.convert([str(tmp_path / "in")], st, **kw)
    assert rep["resumed_chunks"] == 2
    store = Store(st, verify="full")
    assert store.text_feature_names == ["minilm"]
    np.testing.assert_allclose(store.pooled_text_features("minilm", np.arange(3)), pooled, rtol=1e-3)


def test_a_redone_chunk_drops_the_cached_text_features_with_their_files(tmp_path):
    """When a chunk is redone (an input replaced), the old features no longer describe the
    store's clips: the listing must not keep them, and their files must not stay behind."""
    _npy_inputs(tmp_path / "in", n=3)
    st = str(tmp_path / "st")
    kw = dict(allow_missing_text=True, progress=False, chunk=2)
    conv.convert([str(tmp_path / "in")], st, **kw)
    _cache_features(st)
    f = tmp_path / "in" / "c2.npy"
    np.save(f, np.random.default_rng(9).random((7, 133, 2)).astype(np.float32))
    os.utime(f, ns=(os.stat(f).st_mtime_ns + 10**10,) * 2)
    rep = conv.convert([str(tmp_path / "in")], st, **kw)
    assert rep["changed_chunks"] == 1
    assert Store(st, verify="full").text_feature_names == []
    assert not [x for x in os.listdir(st) if x.startswith("textfeat-")]


def test_overwrite_removes_the_old_stores_cached_text_features(tmp_path):
    """--overwrite removed the old shards, listing and reports but left the cached text-feature
    files of the old store (1.2 GB per encoder at 1.5M clips) behind as orphans."""
    _npy_inputs(tmp_path / "a", n=3, seed=0)
    _npy_inputs(tmp_path / "b", n=2, seed=1)
    st = str(tmp_path / "st")
    kw = dict(allow_missing_text=True, progress=False)
    conv.convert([str(tmp_path / "a")], st, **kw)
    _cache_features(st)
    conv.convert([str(tmp_path / "b")], st, overwrite=True, **kw)
    assert len(Store(st, verify="full")) == 2
    assert not [x for x in os.listdir(st) if x.startswith("textfeat-")]


def test_ctrl_c_with_workers_prints_one_line_not_a_traceback_per_worker(tmp_path):
    """Ctrl-C reaches the whole process group: every pool worker printed its own
    KeyboardInterrupt traceback (two 20-line tracebacks with --workers 2) around the one-line
    "interrupted; rerun to resume" message. The workers leave the signal to the parent, which
    stops them; a rerun resumes."""
    import signal
    import subprocess
    import sys
    import time

    pose_dir = "/work/shared/data/pose"
    if not os.path.isdir(pose_dir):
        pytest.skip("real .pose samples not found")
    src = tmp_path / "in"
    os.makedirs(src)
    # many .pose files: reading them is Python code (pose-format), where a worker notices SIGINT at once
    for i in range(60):
        for f in sorted(os.listdir(pose_dir)):
            if f.endswith(".pose"):
                os.symlink(os.path.join(pose_dir, f), src / f"{f[:-5]}_{i:02d}.pose")
    st = tmp_path / "st"
    cmd = [sys.executable, "-m", "slpfast.data.convert", str(src), "--out", str(st), "--allow-missing-text",
           "--workers", "2", "--chunk", "4", "--no-progress"]
    p = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (st / "chunks" / "chunk-00000.json").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].startswith("slpfast.data.convert: interrupted"), err
    rep = conv.convert([str(src)], str(st), allow_missing_text=True, progress=False, chunk=4, workers=2)
    assert rep["converted"] == 300 and rep["resumed_chunks"] >= 1
    assert not [f for f in os.listdir(st) if ".tmp-" in f]


def test_an_out_folder_that_cannot_be_created_is_a_one_line_error(tmp_path, capsys):
    """--out under a file (or on a read-only / missing mount) ended in a raw FileNotFoundError /
    NotADirectoryError traceback from os.makedirs."""
    _npy_inputs(tmp_path / "in", n=1)
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "st"
    rc = conv.main([str(tmp_path / "in"), "--out", str(out), "--allow-missing-text", "--no-progress", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("slpfast.data.convert: --out: ") and str(out) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_write_error_mid_conversion_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    """A disk filling up while shards are written ended in a raw OSError traceback; it is an
    environment problem: one line saying what failed and that a rerun resumes."""
    _npy_inputs(tmp_path / "in", n=1)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(conv, "write_clip_shard", full)
    out = tmp_path / "st"
    rc = conv.main([str(tmp_path / "in"), "--out", str(out), "--allow-missing-text", "--no-progress", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith("slpfast.data.convert: ") and "No space left on device" in err and "resume" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (out / "store.json").exists()


def test_an_out_folder_holding_other_files_is_refused(tmp_path, capsys):
    """--out naming an existing folder of other files (a home folder, the folder of the clips'
    videos) silently wrote a store among them: shards, chunks/, reports beside the user's files.
    Refused before anything is written, naming a file found there."""
    _npy_inputs(tmp_path / "in", n=1)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    common = ["--allow-missing-text", "--no-progress", "--workers", "1"]
    for extra in ([], ["--overwrite"]):
        rc = conv.main([str(tmp_path / "in"), "--out", str(out), *common, *extra])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.startswith("slpfast.data.convert: --out: ") and "notes.txt" in err, err
        assert len(err.strip().splitlines()) == 1
        assert sorted(os.listdir(out)) == ["notes.txt"]
    # an empty folder, or one holding only an empty chunks/ (a first run killed at its start), is fine
    (tmp_path / "empty" / "chunks").mkdir(parents=True)
    assert conv.main([str(tmp_path / "in"), "--out", str(tmp_path / "empty"), *common]) == 0
    assert len(Store(str(tmp_path / "empty"))) == 1


@pytest.mark.parametrize("case", ["ids_with_extension", "header_only", "other_corpus"])
def test_a_manifest_matching_no_input_is_a_clear_error(tmp_path, capsys, case):
    """A manifest whose ids match no input file (ids written with the extension, a header
    without rows, the manifest of another corpus) converted nothing and ended with "clips
    need a text: give --manifest with a 'text' field": wrong, it has one. Refused up front,
    saying how a row's id is matched, with an id of each side."""
    _npy_inputs(tmp_path / "in", n=2)
    ids = {"ids_with_extension": ["c0.npy", "c1.npy"], "header_only": [], "other_corpus": ["x7", "x8"]}[case]
    (tmp_path / "m.csv").write_text("id,text\n" + "".join(f"{i},hello\n" for i in ids))
    out = tmp_path / "st"
    rc = conv.main([str(tmp_path / "in"), "--out", str(out), "--manifest", str(tmp_path / "m.csv"), "--no-progress",
                    "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("slpfast.data.convert: --manifest: ") and len(err.strip().splitlines()) == 1, err
    assert ("no rows" in err) if case == "header_only" else (repr(ids[0]) in err and "'c0'" in err), err
    assert not out.exists()


def test_manifest_rows_matching_no_input_are_counted(tmp_path, capsys):
    """Rows of the manifest that no input file takes (a typo in an id, a clip missing from SRC)
    were ignored without a word; the report counts them and the CLI names one."""
    _npy_inputs(tmp_path / "in", n=2)
    (tmp_path / "m.csv").write_text("id,text\nc0,a\nc1,b\nc9,lost\n")
    rc = conv.main([str(tmp_path / "in"), "--out", str(tmp_path / "st"), "--manifest", str(tmp_path / "m.csv"),
                    "--no-progress", "--workers", "1"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    import json

    assert json.loads(cap.out)["manifest_unmatched"] == 1
    assert "1 manifest row(s) match no input file" in cap.err and "'c9'" in cap.err, cap.err


def test_a_manifest_that_is_a_folder_says_so(tmp_path, capsys):
    _npy_inputs(tmp_path / "in", n=1)
    rc = conv.main([str(tmp_path / "in"), "--out", str(tmp_path / "st"), "--manifest", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--manifest" in err and "folder" in err, err


def test_one_manifest_row_taken_by_two_files_through_their_stem_is_refused(tmp_path, capsys):
    """signer1/clip.npy and signer2/clip.npy are two clips, but a manifest row with the id
    "clip" matched both through the stem fallback: one text for two clips (a false negative for
    the contrastive loss, the check on duplicate clip ids was sidestepped). Refused, naming both."""
    rng = np.random.default_rng(0)
    for d in ("signer1", "signer2"):
        os.makedirs(tmp_path / "in" / d)
        np.save(tmp_path / "in" / d / "clip.npy", rng.random((6, 133, 2)).astype(np.float32))
    (tmp_path / "m.csv").write_text("id,text\nclip,hello\n")
    out = tmp_path / "st"
    rc = conv.main([str(tmp_path / "in"), "--out", str(out), "--manifest", str(tmp_path / "m.csv"), "--no-progress",
                    "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("slpfast.data.convert: --manifest: ") and "'clip'" in err, err
    assert "signer1/clip" in err and "signer2/clip" in err and len(err.strip().splitlines()) == 1, err
    # ids with the relative path tell them apart
    (tmp_path / "m.csv").write_text("id,text\nsigner1/clip,hello\nsigner2/clip,bye\n")
    assert conv.main([str(tmp_path / "in"), "--out", str(out), "--manifest", str(tmp_path / "m.csv"),
                      "--no-progress", "--workers", "1"]) == 0
    st = Store(str(out))
    assert sorted(st.text(i) for i in range(len(st))) == ["bye", "hello"]


@pytest.mark.parametrize("fps", [float("nan"), -5.0, float("inf")])
def test_a_bad_frame_rate_in_a_file_is_unknown_not_stored(tmp_path, fps):
    """An input file's own frame rate was trusted whenever it was truthy: NaN or -5 in an .npz
    was stored as the clip's fps (and with --fps it made the clip "corrupt": resample refused
    it). A rate that is not a positive finite number is unknown: the manifest's or --default-fps."""
    src = tmp_path / "in"
    os.makedirs(src)
    kp = np.random.default_rng(0).random((6, 133, 2)).astype(np.float32)
    np.savez(src / "c0.npz", keypoints=kp, fps=np.float32(fps))
    np.savez(src / "c1.npz", keypoints=kp, fps=np.float32(fps))
    (tmp_path / "m.csv").write_text("id,text,fps\nc0,a,30\nc1,b,\n")
    st = str(tmp_path / "st")
    rep = conv.convert([str(src)], st, manifest=str(tmp_path / "m.csv"), default_fps=20.0, progress=False)
    assert rep["converted"] == 2, rep
    store = Store(st)
    assert {store.key(i): float(store.fps[i]) for i in range(2)} == {"c0": 30.0, "c1": 20.0}
    rep = conv.convert([str(src)], str(tmp_path / "st12"), manifest=str(tmp_path / "m.csv"), fps=12.0,
                       default_fps=20.0, progress=False)
    assert rep["converted"] == 2, rep


def test_symlinked_folders_inside_a_source_are_searched(tmp_path):
    """A SRC folder gathering corpora through symlinks (SRC/corpusA -> /data/a/poses) found no
    file in them (os.walk does not follow links): "no pose files", or, beside real folders, the
    linked corpora silently left out. Linked folders are searched (ids through the link's name),
    each real folder once (a link loop ends)."""
    _npy_inputs(tmp_path / "a", n=2)
    _npy_inputs(tmp_path / "src" / "real", n=1, seed=1)
    os.symlink(tmp_path / "a", tmp_path / "src" / "linked")
    os.symlink(tmp_path / "src", tmp_path / "src" / "real" / "loop")  # a loop back to SRC
    items = conv.find_inputs([str(tmp_path / "src")])
    assert [cid for _, cid in items] == ["linked/c0", "linked/c1", "real/c0"]
    os.symlink(tmp_path / "src" / "real", tmp_path / "src" / "a_link_to_real")  # sorts before "real"
    items = conv.find_inputs([str(tmp_path / "src")])
    assert [cid for _, cid in items] == ["linked/c0", "linked/c1", "real/c0"]
    # a link in one SRC to another SRC: that SRC's files once, under their own ids (not also as
    # linked/c0 ... through the first SRC: one file, two clips)
    items = conv.find_inputs([str(tmp_path / "src"), str(tmp_path / "a")])
    assert [cid for _, cid in items] == ["c0", "c1", "real/c0"]
    assert len({os.path.realpath(p) for p, _ in items}) == 3


@pytest.mark.parametrize("fps", ["abc", [25, 30], {"rate": 25}, True])
def test_a_frame_rate_that_is_not_a_number_is_unknown(tmp_path, fps):
    """A JSON file's fps that is not one number made the clip 'corrupt: unexpected ValueError'
    (or TypeError): it is unknown instead, like a NaN or negative one (--default-fps applies)."""
    src = tmp_path / "in"
    os.makedirs(src)
    kp = np.random.default_rng(0).random((6, 133, 2)).astype(np.float32)
    frames = [{"frame_id": t, "instances": [{"keypoints": kp[t].tolist(), "keypoint_scores": [0.9] * 133}]}
              for t in range(6)]
    with open(src / "c0.json", "w") as f:
        json.dump({"fps": fps, "instance_info": frames}, f)
    (tmp_path / "m.csv").write_text("id,text\nc0,a\n")
    st = str(tmp_path / "st")
    rep = conv.convert([str(src)], st, manifest=str(tmp_path / "m.csv"), default_fps=20.0, progress=False)
    assert rep["converted"] == 1, rep
    assert float(Store(st).fps[0]) == 20.0


def test_a_blank_manifest_fps_is_empty_not_an_error(tmp_path):
    """A manifest fps of spaces passed read_manifest's check (it strips) and then failed the
    converter's float(' '): every such clip skipped as 'unexpected ValueError'."""
    _npy_inputs(tmp_path / "in", n=2)
    (tmp_path / "m.csv").write_text("id,text,fps\nc0,a, \nc1,b, 30 \n")
    st = str(tmp_path / "st")
    rep = conv.convert([str(tmp_path / "in")], st, manifest=str(tmp_path / "m.csv"), default_fps=20.0,
                       progress=False)
    assert rep["converted"] == 2, rep
    store = Store(st)
    assert {store.key(i): float(store.fps[i]) for i in range(2)} == {"c0": 20.0, "c1": 30.0}
