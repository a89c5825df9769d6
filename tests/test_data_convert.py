"""Layouts, readers, preprocessing and the converter: round trip on the real .pose files,
bad inputs, resume after interruption."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import time

import numpy as np
import pytest

from slpfast.data import Store, TorchLoader
from slpfast.data import convert as conv
from slpfast.data.preprocess import fill_gaps, resample, select_signer
from slpfast.layouts import BODY_JOINTS, NUM_JOINTS, PART_SLICES
from slpfast.layouts_sources import LAYOUTS, MEDIAPIPE_MESH_TO_IBUG68, get_layout

POSE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "pose")
if not os.path.isdir(POSE_DIR):
    POSE_DIR = "/work/shared/data/pose"
POSE_FILES = sorted(f for f in os.listdir(POSE_DIR) if f.endswith(".pose")) if os.path.isdir(POSE_DIR) else []
needs_pose = pytest.mark.skipif(not POSE_FILES, reason="real .pose samples not found")


def _manifest(path, ids, **extra):
    with open(path, "w") as f:
        f.write("id\ttext\tlanguage\tsplit\tsource\tgloss\n")
        for i, cid in enumerate(ids):
            f.write(f"{cid}\ttext of {cid}\txx\t{'test' if i % 2 else 'train'}\treal\t{'HELLO' if i % 2 else 'A B'}\n")
    return str(path)


# ------------------------------------------------------------------------------ layouts
def test_layout_tables():
    for name, lay in LAYOUTS.items():
        assert len(lay.sources) == NUM_JOINTS, name
        flat = [i for s in lay.sources for i in s]
        assert all(0 <= i < lay.num_points for i in flat), name
    assert {get_layout(n).name for n in (133, 137, 543, 553, 576, 586, 178)} == {
        "coco_wholebody_133", "openpose_137", "mediapipe_holistic_543", "mediapipe_holistic_553",
        "mediapipe_holistic_576", "mediapipe_holistic_586", "mediapipe_holistic_reduced_178"}
    assert len(MEDIAPIPE_MESH_TO_IBUG68) == 68 and len(set(MEDIAPIPE_MESH_TO_IBUG68)) == 68
    # missing joints: reduced holistic has no nose points in its mesh; its nose tip (the face's
    # anchor) is estimated from the inner eye corners and the upper lip, the rest stay missing
    red = LAYOUTS["mediapipe_holistic_reduced_178"]
    face = PART_SLICES["face"].start
    assert red.sources[face + 29] == () and len(red.sources[face + 30]) == 4
    pts = np.random.default_rng(0).random((4, 178, 3)).astype(np.float32)
    p, c = red.to_canonical(pts)
    assert c[:, face + 29].max() == 0 and not p[:, face + 29].any()
    eye_l, eye_r, lip = (p[:, face + 39], p[:, face + 42], p[:, PART_SLICES["mouth"].start + 51 - 48])
    np.testing.assert_allclose(p[:, face + 30], 0.25 * eye_l + 0.25 * eye_r + 0.5 * lip, rtol=1e-6)


@needs_pose
def test_reduced_holistic_keeps_its_face_after_normalization():
    """Without a nose tip (the face's anchor) every face and mouth joint of a reduced-holistic
    clip came out of normalize_pose invalid."""
    import torch

    from slpfast.data.readers import read_pose
    from slpfast.ops import normalize_pose

    path = [f for f in POSE_FILES if "reduced" in f]
    if not path:
        pytest.skip("no reduced-holistic sample")
    clip = read_pose(os.path.join(POSE_DIR, path[0]))
    lay = get_layout(clip.points.shape[-2])
    p, c = lay.to_canonical(clip.points[:, 0], clip.conf[:, 0])
    fm = slice(PART_SLICES["face"].start, PART_SLICES["mouth"].stop)
    _, c_out = normalize_pose(torch.from_numpy(p)[None], torch.from_numpy(c)[None], torch.tensor([len(p)]))
    before, after = (c[:, fm] > 0).mean(), (c_out[0, :, fm] > 0).float().mean().item()
    assert before > 0.8 and after == pytest.approx(before)


def test_face_mesh_jaw_is_mirror_symmetric():
    """iBUG jaw points 7 and 9 mapped to mesh 150 and 377, not mirror images on the face oval
    (flip augmentation swapped two unrelated points). Checked against MediaPipe's official
    FACEMESH_FACE_OVAL cycle: iBUG point i and its mirror sit at mirrored oval positions."""
    from slpfast.layouts import _ibug68_mirror

    oval = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
            149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
    mirror_on_oval = {oval[k]: oval[(36 - k) % 36] for k in range(36)}
    mirror = _ibug68_mirror()
    jaw = MEDIAPIPE_MESH_TO_IBUG68[:17]
    for i in range(17):
        assert mirror_on_oval[jaw[i]] == jaw[mirror[i]], (i, jaw[i], jaw[mirror[i]])
    # and the jaw runs along the oval from the subject's right ear to the left one, chin (152) at 8
    pos = [oval.index(m) for m in jaw]
    assert jaw[8] == 152 and all(a > b for a, b in zip(pos[:8], pos[1:9])) and all(a > b for a, b in zip(pos[8:], pos[9:]))


def test_coco_wholebody_mapping():
    lay = get_layout("coco133")
    pts = np.arange(133 * 2, dtype=np.float32).reshape(1, 133, 2)
    conf = np.ones((1, 133), np.float32)
    conf[0, 9] = 0  # left wrist undetected
    p, c = lay.to_canonical(pts, conf)
    assert p.shape == (1, NUM_JOINTS, 3) and not p[..., 2].any()
    assert p[0, BODY_JOINTS.index("left_shoulder"), 0] == pts[0, 5, 0]
    assert c[0, BODY_JOINTS.index("left_wrist")] == 0
    assert p[0, PART_SLICES["right_hand"].start + 4, 0] == pts[0, 112 + 4, 0]
    assert p[0, PART_SLICES["mouth"].start, 0] == pts[0, 23 + 48, 0]


@needs_pose
@pytest.mark.parametrize("fname", POSE_FILES)
def test_pose_layout_by_header(fname):
    from pose_format import Pose

    pose = Pose.read(open(os.path.join(POSE_DIR, fname), "rb").read())
    from slpfast.data.readers import read_pose

    raw = read_pose(os.path.join(POSE_DIR, fname))
    comps = {c.name: c for c in pose.header.components}
    data = np.asarray(pose.body.data.data)[:, 0]
    p, c = raw.layout.to_canonical(raw.points[:, 0], raw.conf[:, 0])
    if "openpose" in fname:
        off = 0
        for comp in pose.header.components:
            if comp.name == "hand_right_keypoints_2d":
                break
            off += len(comp.points)
        np.testing.assert_array_equal(p[:, PART_SLICES["right_hand"], :2][c[:, PART_SLICES["right_hand"]] > 0],
                                      data[:, off:off + 21][c[:, PART_SLICES["right_hand"]] > 0])
        ls = BODY_JOINTS.index("left_shoulder")
        ok = c[:, ls] > 0
        np.testing.assert_array_equal(p[ok, ls, :2], data[ok, comps["pose_keypoints_2d"].points.index("LShoulder")])
    else:
        names = comps["POSE_LANDMARKS"].points
        ls = BODY_JOINTS.index("left_shoulder")
        ok = c[:, ls] > 0
        np.testing.assert_array_equal(p[ok, ls], data[ok, names.index("LEFT_SHOULDER")])
        lh = PART_SLICES["left_hand"]
        off = len(names) + len(comps["FACE_LANDMARKS"].points)
        okh = c[:, lh.start] > 0
        np.testing.assert_array_equal(p[okh, lh], data[okh, off:off + 21])
        mesh = [int(x) for x in comps["FACE_LANDMARKS"].points]
        mouth0 = PART_SLICES["mouth"].start  # iBUG 48 = mesh 61
        okm = c[:, mouth0] > 0
        np.testing.assert_array_equal(p[okm, mouth0], data[okm, len(names) + mesh.index(61)])


# ------------------------------------------------------------------------------ preprocessing
def test_fill_gaps():
    T = 12
    p = np.zeros((T, 2, 2), np.float32)
    p[:, :, 0] = np.arange(T)[:, None]
    c = np.ones((T, 2), np.float32)
    c[3:6, 0] = 0  # gap of 3: filled
    c[2:10, 1] = 0  # gap of 8: kept
    p2 = p.copy()
    p2[c == 0] = 0
    q, qc = fill_gaps(p2, c, max_gap=5)
    np.testing.assert_allclose(q[3:6, 0, 0], [3, 4, 5])
    assert (qc[3:6, 0] == 1).all() and (qc[2:10, 1] == 0).all() and (q[2:10, 1] == 0).all()


def test_resample():
    T = 31
    p = np.zeros((T, 1, 3), np.float32)
    p[:, 0, 0] = np.arange(T)
    c = np.ones((T, 1), np.float32)
    q, qc = resample(p, c, 30.0, 15.0)
    assert q.shape[0] == 16
    np.testing.assert_allclose(q[:, 0, 0], np.arange(0, 31, 2))
    q, _ = resample(p, c, 30.0, 60.0)
    assert q.shape[0] == 61
    np.testing.assert_allclose(q[:, 0, 0], np.arange(61) / 2)


def test_select_signer():
    T, J = 6, 5
    rng = np.random.default_rng(0)
    pts = np.zeros((T, 2, J, 2), np.float32)
    pts[:, 0] = rng.random((T, J, 2)) * 10 + 100  # big signer
    pts[:, 1] = rng.random((T, J, 2)) * 2  # small bystander
    conf = np.ones((T, 2, J), np.float32)
    pts[3] = pts[3, ::-1]  # people order swapped in one frame
    conf[3] = conf[3, ::-1]
    out, oc, who = select_signer(pts, conf)
    assert who.tolist() == [0, 0, 0, 1, 0, 0]
    assert (out[:, 0, 0] >= 100).all()


def _ref_fill_gaps(p, c, max_gap):
    """Straightforward reference: interpolate between consecutive valid frames <= max_gap + 1 apart."""
    p, c = p.copy(), c.copy()
    for j in range(c.shape[1]):
        valid = np.flatnonzero(c[:, j] > 0)
        for a, b in zip(valid[:-1], valid[1:]):
            if 1 < b - a <= max_gap + 1:
                w = ((np.arange(a + 1, b) - a) / (b - a))[:, None]
                p[a + 1:b, j] = (1 - w) * p[a, j] + w * p[b, j]
                c[a + 1:b, j] = (1 - w[:, 0]) * c[a, j] + w[:, 0] * c[b, j]
    return p, c


def test_fill_gaps_and_resample_match_a_reference():
    rng = np.random.default_rng(1)
    for _ in range(50):
        T = int(rng.integers(1, 30))
        p = rng.standard_normal((T, 3, 2)).astype(np.float32)
        c = (rng.random((T, 3)) * (rng.random((T, 3)) > 0.4)).astype(np.float32)
        g = int(rng.integers(0, 5))
        q, qc = fill_gaps(p, c, g)
        r, rc = _ref_fill_gaps(p, c, g)
        np.testing.assert_allclose(q, r, atol=1e-5)
        np.testing.assert_allclose(qc, rc, atol=1e-5)
        # all-valid joints: resampling is np.interp over time
        cv = np.ones_like(c)
        src, dst = float(rng.choice([12.5, 25, 30])), float(rng.choice([10, 24, 50]))
        q, qc = resample(p, cv, src, dst)
        t_out = np.arange(int(round((T - 1) * dst / src)) + 1) / dst
        for j in range(3):
            for k in range(2):
                np.testing.assert_allclose(q[:, j, k], np.interp(t_out, np.arange(T) / src, p[:, j, k]), atol=1e-4)
        assert (qc == 1).all()


def test_preprocess_edge_cases():
    one = np.ones((1, 2, 3), np.float32)
    q, qc = resample(one, np.ones((1, 2), np.float32), 30, 15)  # single frame
    assert q.shape == (1, 2, 3) and (qc == 1).all()
    q, qc = resample(np.zeros((0, 2, 3), np.float32), np.zeros((0, 2), np.float32), 30, 15)  # empty clip
    assert q.shape == (0, 2, 3)
    q, qc = fill_gaps(np.zeros((0, 2, 3), np.float32), np.zeros((0, 2), np.float32), 3)
    assert q.shape == (0, 2, 3)
    # all-invalid confidence: nothing is invented
    p = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32)
    q, qc = fill_gaps(p, np.zeros((6, 2), np.float32), 5)
    assert (qc == 0).all()
    q, qc = resample(p, np.zeros((6, 2), np.float32), 30, 20)
    assert (qc == 0).all() and (q == 0).all()
    out, oc, who = select_signer(p[:, None], np.zeros((6, 1, 2), np.float32))
    assert (who == -1).all() and (oc == 0).all()
    # NaN at missing joints is never read
    pn = p.copy()
    c = np.ones((6, 2), np.float32)
    c[2, 0] = 0
    pn[2, 0] = np.nan
    q, qc = fill_gaps(pn, c, 3)
    assert np.isfinite(q).all() and qc[2, 0] > 0


def test_fill_gaps_with_a_nan_confidence_raises_instead_of_hanging():
    # the gap scan compared conf <= 0, which a NaN never satisfies: the loop made no progress.
    # Run in a child process so that the old behaviour fails the test instead of hanging it.
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from slpfast.data.preprocess import fill_gaps\n"
            "c = np.ones((5, 1), np.float32); c[2] = np.nan\n"
            "try:\n"
            "    fill_gaps(np.zeros((5, 1, 2), np.float32), c, 3)\n"
            "except ValueError as e:\n"
            "    assert 'conf' in str(e), e\n"
            "    print('ValueError')\n")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("fill_gaps hangs on a NaN confidence")
    assert r.returncode == 0 and "ValueError" in r.stdout, r.stderr[-2000:]


def test_preprocess_rejects_bad_arguments():
    p = np.zeros((8, 3, 2), np.float32)
    c = np.ones((8, 3), np.float32)
    # mismatched shapes: the numba kernels would read past the end of conf / weight
    with pytest.raises(ValueError, match="conf"):
        fill_gaps(p, c[:, :2], 3)
    with pytest.raises(ValueError, match="conf"):
        resample(p, c[:4], 30, 15)
    with pytest.raises(ValueError, match="points"):
        fill_gaps(p[0], c[0], 3)
    pp = np.zeros((8, 2, 3, 2), np.float32)
    with pytest.raises(ValueError, match="conf"):
        select_signer(pp, np.ones((8, 2, 2), np.float32))
    with pytest.raises(ValueError, match="weight"):
        select_signer(pp, np.ones((8, 2, 3), np.float32), weight=np.ones(2))
    with pytest.raises(ValueError, match="switch_margin"):
        select_signer(pp, np.ones((8, 2, 3), np.float32), switch_margin=float("nan"))
    # frame rates: a negative one used to return a single frame, a NaN an unrelated error
    for src, dst, arg in [(30, -15, "dst_fps"), (-30, 15, "src_fps"), (float("nan"), 15, "src_fps"),
                          (30, float("inf"), "dst_fps"), (0, 15, "src_fps")]:
        with pytest.raises(ValueError, match=arg):
            resample(p, c, src, dst)
    with pytest.raises(ValueError, match="max_gap"):
        fill_gaps(p, c, -1)
    # NaN / inf where a joint counts as present
    bad = p.copy()
    bad[3, 1, 0] = np.inf
    with pytest.raises(ValueError, match="points"):
        resample(bad, c, 30, 15)
    cn = c.copy()
    cn[1, 1] = np.nan
    with pytest.raises(ValueError, match="conf"):
        select_signer(pp, np.stack([cn, cn], 1))


# ------------------------------------------------------------------------------ converter
@needs_pose
def test_round_trip_real_pose_files(tmp_path):
    ids = [os.path.splitext(f)[0] for f in POSE_FILES]
    man = _manifest(tmp_path / "m.tsv", ids)
    rep = conv.convert([POSE_DIR], str(tmp_path / "st"), manifest=man, max_gap=0, progress=False)
    assert rep["converted"] == len(ids) and sum(rep["skipped"].values()) == 0
    assert {"openpose_137", "mediapipe_holistic_reduced_178"} <= set(rep["layouts"])
    assert {"mediapipe_holistic_576", "mediapipe_holistic_586"} & set(rep["layouts"])
    st = Store(str(tmp_path / "st"))
    assert st.meta["gloss_vocab"] == ["A", "B", "HELLO"]
    from slpfast.data.readers import read_pose

    for i in range(len(st)):
        c = st.clip(i)
        raw = read_pose(os.path.join(POSE_DIR, c["key"] + ".pose"))
        p, cf = raw.layout.to_canonical(raw.points[:, 0], raw.conf[:, 0])
        assert c["pose"].shape == p.shape and c["text"] == f"text of {c['key']}"
        assert c["fps"] == pytest.approx(raw.fps) and c["dims"] == raw.dims
        ok = cf > 0
        np.testing.assert_array_equal(c["conf"] > 0, ok)
        np.testing.assert_allclose(c["pose"][ok], p[ok], rtol=1e-3, atol=1e-3)
        assert c["gloss_ids"].tolist() == ([2] if ids.index(c["key"]) % 2 else [0, 1])
    # -> loader
    b = next(iter(TorchLoader(st, batch_size=len(st), shuffle=False)))
    assert b["pose"].shape[0] == len(st) and b["pose"].shape[2:] == (NUM_JOINTS, 3)
    # resampled conversion
    rep = conv.convert([POSE_DIR], str(tmp_path / "st25"), manifest=man, fps=12.5, progress=False)
    st25 = Store(str(tmp_path / "st25"))
    k = [st25.key(i) for i in range(len(st25))].index("holistic_reduced_170f")
    assert st25.lengths[k] == round(169 * 12.5 / 24) + 1 and st25.fps[k] == 12.5


def _bad_inputs(d):
    os.makedirs(d)
    rng = np.random.default_rng(0)
    good = rng.random((10, 133, 2)).astype(np.float32)
    np.save(f"{d}/good_npy.npy", good)
    np.savez(f"{d}/good_npz.npz", keypoints=good, scores=np.ones((10, 133), np.float32), fps=np.float32(30))
    with open(f"{d}/good_pkl.pkl", "wb") as f:
        pickle.dump({"keypoints": good[:, None], "scores": np.full((10, 1, 133), 0.9, np.float32)}, f)
    frames = [{"frame_id": t, "instances": [{"keypoints": good[t].tolist(), "keypoint_scores": [0.8] * 133},
                                            {"keypoints": (good[t] * 0.1).tolist(), "keypoint_scores": [0.5] * 133}]}
              for t in range(10)]
    json.dump(frames, open(f"{d}/good_json.json", "w"))
    np.save(f"{d}/wrong_shape.npy", rng.random((10, 50, 2)).astype(np.float32))
    bad = good.copy()
    bad[3, 4, 0] = np.nan
    np.save(f"{d}/has_nan.npy", bad)
    np.save(f"{d}/empty.npy", np.zeros((0, 133, 2), np.float32))
    np.save(f"{d}/no_text.npy", good)
    open(f"{d}/corrupt.npy", "wb").write(b"\x93NUMPY garbage")
    open(f"{d}/corrupt_json.json", "w").write("[{\"frame_id\": 0, ")
    with open(f"{d}/evil.pkl", "wb") as f:
        pickle.dump({"keypoints": good, "x": os.system}, f)
    src = os.path.join(POSE_DIR, POSE_FILES[0]) if POSE_FILES else None
    if src:
        data = open(src, "rb").read()
        open(f"{d}/truncated.pose", "wb").write(data[: len(data) // 2])
    open(f"{d}/garbage.pose", "wb").write(os.urandom(300))
    ids = ["good_npy", "good_npz", "good_pkl", "good_json", "wrong_shape", "has_nan", "empty", "corrupt",
           "corrupt_json", "evil", "truncated", "garbage"]
    return ids


def test_bad_inputs_skipped_with_reasons(tmp_path):
    ids = _bad_inputs(tmp_path / "in")
    man = _manifest(tmp_path / "m.tsv", ids)
    rep = conv.convert([str(tmp_path / "in")], str(tmp_path / "st"), manifest=man, progress=False, chunk=3)
    sk = rep["skipped"]
    assert rep["converted"] == 4, rep
    assert sk["shape"] == 1 and sk["nan"] == 1 and sk["empty"] == 1 and sk["missing_text"] == 1
    assert sk["corrupt"] == (5 if POSE_FILES else 4), rep["examples"]
    st = Store(str(tmp_path / "st"))
    keys = sorted(st.key(i) for i in range(len(st)))
    assert keys == ["good_json", "good_npy", "good_npz", "good_pkl"]
    k = keys.index("good_npz")
    assert st.fps[[st.key(i) for i in range(len(st))].index("good_npz")] == 30.0
    j = [st.key(i) for i in range(len(st))].index("good_json")
    # the big person is the signer
    assert st.clip(j)["pose"][..., 0].max() > 0.5
    assert not any(f.endswith(".tmp") or ".tmp-" in f for f in os.listdir(tmp_path / "st"))
    del k


def test_resume_after_interruption(tmp_path, monkeypatch):
    ids = _bad_inputs(tmp_path / "in")
    man = _manifest(tmp_path / "m.tsv", ids)
    ref = conv.convert([str(tmp_path / "in")], str(tmp_path / "ref"), manifest=man, progress=False, chunk=2)
    calls = {"n": 0}
    real = conv.convert_one

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(conv, "convert_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        conv.convert([str(tmp_path / "in")], str(tmp_path / "st"), manifest=man, progress=False, chunk=2)
    assert not os.path.exists(tmp_path / "st" / "store.json")
    monkeypatch.setattr(conv, "convert_one", real)
    rep = conv.convert([str(tmp_path / "in")], str(tmp_path / "st"), manifest=man, progress=False, chunk=2)
    assert rep["resumed_chunks"] == 2
    assert rep["converted"] == ref["converted"] and rep["skipped"] == ref["skipped"]
    a, b = Store(str(tmp_path / "ref")), Store(str(tmp_path / "st"))
    assert len(a) == len(b)
    for i in range(len(a)):
        np.testing.assert_array_equal(a.clip(i)["pose"], b.clip(i)["pose"])
    # a damaged shard of a finished chunk is redone
    shard = os.path.join(tmp_path / "st", b.info["shards"][0]["file"])
    open(shard, "r+b").truncate(100)
    rep = conv.convert([str(tmp_path / "in")], str(tmp_path / "st"), manifest=man, progress=False, chunk=2)
    n_chunks = -(-len(os.listdir(tmp_path / "in")) // 2)
    assert rep["resumed_chunks"] == n_chunks - 1
    Store(str(tmp_path / "st"), verify="full")
    # other inputs: refuses without --overwrite
    with pytest.raises(ValueError, match="--out: .* holds a conversion of other inputs/options.*--overwrite"):
        conv.convert([str(tmp_path / "in")], str(tmp_path / "st"), manifest=man, progress=False, chunk=3)


@needs_pose
def test_cli(tmp_path):
    import subprocess
    import sys

    shutil.copy(os.path.join(POSE_DIR, POSE_FILES[-1]), tmp_path / "a.pose")
    r = subprocess.run([sys.executable, "-m", "slpfast.data.convert", str(tmp_path / "a.pose"), "--out",
                        str(tmp_path / "st"), "--allow-missing-text", "--workers", "1", "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["converted"] == 1
    assert len(Store(str(tmp_path / "st"))) == 1


@pytest.mark.parametrize("args, needle", [
    (["--chunk", "0"], "--chunk"),
    (["--fps", "nan"], "--fps"),
    (["--fps", "-5"], "--fps"),
    (["--default-fps", "0"], "--default-fps"),
    (["--max-gap", "-1"], "--max-gap"),
    (["--workers", "0"], "--workers"),
    (["--layout", "bogus"], "--layout"),
    (["--manifest", "MISSING.tsv"], "--manifest"),
    (["MISSING_SRC"], "MISSING_SRC"),
])
def test_cli_bad_options_one_line_error(tmp_path, capsys, args, needle):
    """Bad options exit 2 with one line naming the option, before anything is converted."""
    shutil.copy(os.path.join(POSE_DIR, POSE_FILES[-1]), tmp_path / "a.pose")
    args = [str(tmp_path / a) if a.startswith("MISSING") else a for a in args]
    srcs = [str(tmp_path / "a.pose")] + ([args.pop()] if needle == "MISSING_SRC" else [])
    out = tmp_path / "st"
    rc = conv.main([*srcs, "--out", str(out), "--allow-missing-text", "--workers", "1", "--no-progress", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "store.json").exists()


def test_cli_out_file_empty_source_and_nothing_converted(tmp_path, capsys):
    """--out naming a file, a folder with no pose files: exit 2 before anything happens; every
    clip skipped (here: no texts): exit 1 with the reasons and what to do, not a silent empty store."""
    shutil.copy(os.path.join(POSE_DIR, POSE_FILES[-1]), tmp_path / "a.pose")
    (tmp_path / "file").write_text("x")
    common = ["--workers", "1", "--no-progress"]
    assert conv.main([str(tmp_path / "a.pose"), "--out", str(tmp_path / "file"), *common]) == 2
    assert "--out" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert conv.main([str(tmp_path / "empty"), "--out", str(tmp_path / "st0"), *common]) == 2
    assert "no pose files" in capsys.readouterr().err
    assert conv.main([str(tmp_path / "a.pose"), "--out", str(tmp_path / "st1"), *common]) == 1
    err = capsys.readouterr().err
    assert "no clip was converted from 1 files" in err and "missing_text 1" in err and "--allow-missing-text" in err


def test_duplicate_clip_ids_are_refused(tmp_path, capsys):
    """One id from two files (here the same name under two SRC folders) would share a manifest
    row: refused before anything is converted, naming the id and the files."""
    for d in ("x", "y"):
        os.makedirs(tmp_path / d)
        (tmp_path / d / "clip.pose").write_bytes(b"")  # never read: the check comes first
    out = tmp_path / "st"
    rc = conv.main([str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(out), "--allow-missing-text",
                    "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "'clip'" in err and "x/clip.pose" in err and "y/clip.pose" in err, err
    assert "Traceback" not in err and not (out / "store.json").exists()


def test_bad_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "m.csv").write_text("name,text\na,hello\n")
    with pytest.raises(ValueError, match="--manifest.*'id'"):
        conv.convert([os.path.join(POSE_DIR, POSE_FILES[-1])], str(tmp_path / "st"), manifest=str(tmp_path / "m.csv"),
                     progress=False)


def test_resume_after_an_edited_manifest_or_input(tmp_path):
    """A rerun after the manifest's texts (same byte size) or an input file changed must not
    silently keep the shards made from the old ones: an edited manifest is another conversion
    (refused), a changed input file redoes its chunk."""
    shutil.copy(os.path.join(POSE_DIR, POSE_FILES[-1]), tmp_path / "a.pose")
    man = tmp_path / "m.tsv"
    man.write_text("id\ttext\na\thello\n")
    st = str(tmp_path / "st")
    conv.convert([str(tmp_path / "a.pose")], st, manifest=str(man), progress=False)
    man.write_text("id\ttext\na\tjello\n")  # same size, other text
    with pytest.raises(ValueError, match="--out: .*other inputs/options"):
        conv.convert([str(tmp_path / "a.pose")], st, manifest=str(man), progress=False)
    conv.convert([str(tmp_path / "a.pose")], st, manifest=str(man), progress=False, overwrite=True)
    assert Store(st)[0]["text"] == "jello"
    with open(tmp_path / "a.pose", "ab") as f:  # the input file changed
        f.write(b"\0")
    rep = conv.convert([str(tmp_path / "a.pose")], st, manifest=str(man), progress=False)
    assert rep["resumed_chunks"] == 0 and rep["changed_chunks"] == 1


def test_out_inside_a_source_folder_resumes(tmp_path):
    """With --out inside a SRC folder, the store's own JSON reports were read as MMPose inputs on
    the rerun, so resuming refused ('other inputs') and --overwrite counted them as bad clips."""
    src = tmp_path / "data"
    src.mkdir()
    shutil.copy(os.path.join(POSE_DIR, POSE_FILES[-1]), src / "a.pose")
    out = str(src / "store")
    rep = conv.convert([str(src)], out, allow_missing_text=True, progress=False)
    assert rep["files"] == 1 and rep["converted"] == 1
    rep = conv.convert([str(src)], out, allow_missing_text=True, progress=False)
    assert rep["files"] == 1 and rep["resumed_chunks"] == 1 and sum(rep["skipped"].values()) == 0


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl"])
def test_manifest_with_utf8_bom(tmp_path, ext):
    """Spreadsheet exports start with a UTF-8 BOM: the first field read as '\\ufeffid' and the
    manifest was refused for lacking an 'id' field."""
    from slpfast.data.manifest import read_manifest

    body = {".csv": "id,text\nclip1,héllo\n", ".tsv": "id\ttext\nclip1\théllo\n",
            ".jsonl": '{"id": "clip1", "text": "héllo"}\n'}[ext]
    p = tmp_path / f"m{ext}"
    p.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    assert read_manifest(str(p)).lookup("clip1", "clip1")["text"] == "héllo"


def test_manifest_structure_errors(tmp_path):
    """A manifest without a text column skipped every clip as missing_text; a JSONL line that is
    not an object raised a raw AttributeError."""
    from slpfast.data.manifest import read_manifest

    (tmp_path / "m.csv").write_text("id,sentence\na,hello\n")
    shutil.copy(os.path.join(POSE_DIR, POSE_FILES[-1]), tmp_path / "a.pose")
    with pytest.raises(ValueError, match=r"--manifest: .*m.csv has no 'text' field \(fields: \['id', 'sentence'\]\)"):
        conv.convert([str(tmp_path / "a.pose")], str(tmp_path / "st"), manifest=str(tmp_path / "m.csv"),
                     progress=False)
    rep = conv.convert([str(tmp_path / "a.pose")], str(tmp_path / "st"), manifest=str(tmp_path / "m.csv"),
                       progress=False, allow_missing_text=True)  # a manifest for metadata only is fine then
    assert rep["converted"] == 1
    (tmp_path / "m.jsonl").write_text('{"id": "a", "text": "x"}\n["b", "y"]\n')
    with pytest.raises(ValueError, match="m.jsonl: row 2 is a JSON list"):
        read_manifest(str(tmp_path / "m.jsonl"))


def test_cli_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    """Ctrl-C printed a KeyboardInterrupt traceback; it should say that rerunning resumes."""
    shutil.copy(os.path.join(POSE_DIR, POSE_FILES[-1]), tmp_path / "a.pose")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(conv, "convert_one", interrupted)
    rc = conv.main([str(tmp_path / "a.pose"), "--out", str(tmp_path / "st"), "--allow-missing-text",
                    "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 130 and "run the same command again to resume" in err and "Traceback" not in err
    assert not (tmp_path / "st" / "store.json").exists()


# ------------------------------------------------------------------------------ resume safety
def _npy_inputs(d, n=3, seed=0):
    """``n`` small COCO-WholeBody clips as .npy files (c0.npy, ...) in folder ``d``."""
    os.makedirs(d)
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.save(os.path.join(d, f"c{i}.npy"), rng.random((6, 133, 2)).astype(np.float32))


def _poses(store_dir):
    st = Store(store_dir)
    return {st.key(i): st.clip(i)["pose"] for i in range(len(st))}


@pytest.mark.parametrize("same_mtime", [False, True])
def test_resume_reconverts_a_replaced_same_size_input(tmp_path, monkeypatch, same_mtime):
    """An input rewritten with other coordinates but the same byte size (pose estimation re-run)
    was resumed as finished: the store kept the old coordinates. Its chunk must be redone.
    same_mtime=False: an old file replaced now (caught by its mtime). same_mtime=True: the file
    rewritten within its timestamp tick, same size and mtime (caught by the content hash that is
    recorded for files read right after they were written)."""
    src = tmp_path / "in"
    _npy_inputs(src)
    target = src / "c1.npy"
    if not same_mtime:
        past = time.time_ns() - 3600 * 10**9
        for f in os.listdir(src):
            os.utime(src / f, ns=(past, past))
    kw = dict(allow_missing_text=True, progress=False, chunk=1, max_gap=0)
    st = str(tmp_path / "st")
    conv.convert([str(src)], st, **kw)
    old = _poses(st)
    before = os.stat(target)
    np.save(target, np.load(target) * 2)  # same shape, so the same byte size
    if same_mtime:
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.path.getsize(target) == before.st_size
    # a crash while the changed chunk is redone leaves no store.json listing a mix of shards
    real = conv.convert_one
    reports = sorted(os.listdir(os.path.join(st, "chunks")))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(conv, "convert_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        conv.convert([str(src)], st, **kw)
    assert not os.path.exists(os.path.join(st, "store.json"))
    assert sorted(os.listdir(os.path.join(st, "chunks"))) == [r for r in reports if r != "chunk-00001.json"]
    monkeypatch.setattr(conv, "convert_one", real)
    rep = conv.convert([str(src)], st, **kw)
    # (the interrupted run already dropped the changed chunk's report: now it is merely unfinished)
    assert rep["resumed_chunks"] == 2 and rep["changed_chunks"] == 0, rep
    conv.convert([str(src)], str(tmp_path / "ref"), **kw)
    new, ref = _poses(st), _poses(str(tmp_path / "ref"))
    assert sorted(new) == sorted(ref) == ["c0", "c1", "c2"]
    for key in ref:
        np.testing.assert_array_equal(new[key], ref[key])
    np.testing.assert_allclose(new["c1"], old["c1"] * 2, rtol=1e-3)
    np.testing.assert_array_equal(new["c0"], old["c0"])
    # and once redone, a rerun resumes everything again
    rep = conv.convert([str(src)], st, **kw)
    assert rep["resumed_chunks"] == 3 and rep["changed_chunks"] == 0


@pytest.mark.parametrize("state", ["deleted", "damaged"])
def test_shards_without_a_state_file_are_not_trusted(tmp_path, capsys, state):
    """With convert_state.json deleted, converting another folder into the store exited 0 with
    the old store's chunk report and clips. Shards without a readable state file are refused
    (exit 2, nothing removed); --overwrite starts over, leaving no shard of the old conversion."""
    _npy_inputs(tmp_path / "a", n=3, seed=0)
    _npy_inputs(tmp_path / "b", n=1, seed=1)
    st = tmp_path / "st"
    common = ["--allow-missing-text", "--no-progress", "--workers", "1", "--chunk", "1"]
    assert conv.main([str(tmp_path / "a"), "--out", str(st), *common]) == 0
    capsys.readouterr()
    if state == "deleted":
        os.unlink(st / "convert_state.json")
    else:
        (st / "convert_state.json").write_text('{"inputs_ha')
    before = sorted(os.listdir(st))
    rc = conv.main([str(tmp_path / "b"), "--out", str(st), *common])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("slpfast.data.convert: --out: ") and "convert_state.json" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(os.listdir(st)) == before and len(Store(str(st))) == 3  # nothing touched
    with pytest.raises(ValueError, match="--out: .*no readable convert_state.json"):  # the same inputs: no proof either
        conv.convert([str(tmp_path / "a")], str(st), allow_missing_text=True, progress=False, chunk=1)
    assert conv.main([str(tmp_path / "b"), "--out", str(st), *common, "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["converted"] == 1
    assert conv.main([str(tmp_path / "b"), "--out", str(tmp_path / "ref"), *common]) == 0
    got, ref = _poses(str(st)), _poses(str(tmp_path / "ref"))
    assert list(got) == list(ref) == ["c0"]
    np.testing.assert_array_equal(got["c0"], ref["c0"])
    assert sorted(f for f in os.listdir(st) if f.startswith("shard-")) == ["shard-00000.slp"]
    assert sorted(os.listdir(st / "chunks")) == ["chunk-00000.json"]


def test_cli_other_inputs_exit_2_with_prefix(tmp_path, capsys):
    """A store of other inputs was refused with a bare SystemExit: exit 1 and no
    'slpfast.data.convert:' prefix, though bad options exit 2."""
    _npy_inputs(tmp_path / "a", n=2, seed=0)
    _npy_inputs(tmp_path / "b", n=1, seed=1)
    common = ["--out", str(tmp_path / "st"), "--allow-missing-text", "--no-progress", "--workers", "1"]
    assert conv.main([str(tmp_path / "a"), *common]) == 0
    capsys.readouterr()
    rc = conv.main([str(tmp_path / "b"), *common])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("slpfast.data.convert: --out: ") and "other inputs/options" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(_poses(str(tmp_path / "st"))) == ["c0", "c1"]  # the store is left as it was


def test_bare_3_channel_arrays_of_2d_detectors_carry_scores(tmp_path):
    """A (T, 133, 3) COCO-WholeBody array (x, y, score: what 2-D whole-body detectors save) was
    read as x, y, z with confidence 1: undetected joints (score ~0, junk coordinates) came
    through as fully confident."""
    from slpfast.data.readers import read_numpy

    rng = np.random.default_rng(0)
    arr = rng.random((5, 133, 3)).astype(np.float32)
    arr[:, :10, 2] = 0.0  # undetected
    np.save(tmp_path / "wb.npy", arr)
    clip = read_numpy(str(tmp_path / "wb.npy"))
    assert clip.points.shape[-1] == 2
    np.testing.assert_array_equal(clip.conf[:, 0], arr[..., 2])
    xyz = read_numpy(str(tmp_path / "wb.npy"), channels="xyz")  # a 3-D model's output: said so
    assert xyz.points.shape[-1] == 3 and (xyz.conf == 1).all()
    mp = rng.random((5, 543, 3)).astype(np.float32)  # MediaPipe: the third channel is depth
    np.save(tmp_path / "mp.npy", mp)
    assert read_numpy(str(tmp_path / "mp.npy")).points.shape[-1] == 3


def test_each_chunk_task_carries_only_its_own_manifest_rows(tmp_path, monkeypatch):
    """Every chunk task (pickled to a worker) carried the whole manifest: a 1.5M-row manifest
    (~120 MB pickled) sent with each of ~5900 chunks of 256 files, i.e. hours of pickling.
    The stores converted with and without the per-chunk rows are identical."""
    _npy_inputs(tmp_path / "in", n=10)
    ids = [f"c{i}" for i in range(10)] + [f"extra{i}" for i in range(30)]  # rows without a file
    with open(tmp_path / "m.tsv", "w") as f:
        f.write("id\ttext\tsplit\tgloss\tlabel\n")
        for i, cid in enumerate(ids):
            f.write(f"{cid}\ttext of {cid}\t{'a' if i % 2 else 'b'}\tG{i % 7} G{i % 3}\tG{i % 5}\n")
    seen = []
    real = conv.run_chunk
    monkeypatch.setattr(conv, "run_chunk", lambda args: seen.append(args[3]) or real(args))
    conv.convert([str(tmp_path / "in")], str(tmp_path / "st"), manifest=str(tmp_path / "m.tsv"), chunk=3,
                 progress=False, workers=1)
    assert len(seen) == 4 and all(len(m.rows) <= 3 for m in seen)  # not the 40 rows of the manifest
    assert all(len(m.gloss_vocab) == 7 for m in seen)  # gloss ids stay global
    st = Store(str(tmp_path / "st"))
    for i in range(len(st)):
        c = st.clip(i)
        k = int(c["key"][1:])
        assert c["text"] == f"text of c{k}" and c["split"] == ("a" if k % 2 else "b")
        vocab = [f"G{j % 7}" if s == 0 else f"G{j % 3}" for j in range(40) for s in (0, 1)]
        vocab = list(dict.fromkeys(vocab))
        assert c["gloss_ids"].tolist() == [vocab.index(f"G{k % 7}"), vocab.index(f"G{k % 3}")]
        assert c["label"] == vocab.index(f"G{k % 5}")


@pytest.mark.parametrize("bad", [{"max_gap": True}, {"workers": True}, {"chunk": False}, {"fps": True}])
def test_api_booleans_are_not_numbers(tmp_path, bad):
    """max_gap=True passed the API's check and then every clip was skipped as corrupt."""
    shutil.copy(os.path.join(POSE_DIR, POSE_FILES[-1]), tmp_path / "a.pose")
    with pytest.raises(ValueError, match="--" + next(iter(bad)).replace("_", "-")):
        conv.convert([str(tmp_path / "a.pose")], str(tmp_path / "st"), allow_missing_text=True, progress=False, **bad)


def test_api_numpy_numbers_are_numbers(tmp_path):
    shutil.copy(os.path.join(POSE_DIR, POSE_FILES[-1]), tmp_path / "a.pose")
    conv.convert([str(tmp_path / "a.pose")], str(tmp_path / "st"), allow_missing_text=True, progress=False,
                 max_gap=np.int64(3), workers=np.int32(1), chunk=np.int64(4), fps=np.float32(25.0))
    assert (tmp_path / "st" / "store.json").exists()


def test_a_resume_checks_the_finished_shards_under_one_crc_budget(tmp_path, monkeypatch):
    """Resuming a large conversion opened every finished shard with its own CRC allowance, so it
    read the whole store again; the shards of one resume now share one budget (as a store open)."""
    for i in range(3):
        shutil.copy(os.path.join(POSE_DIR, POSE_FILES[-1]), tmp_path / f"a{i}.pose")
    srcs = [str(tmp_path / f"a{i}.pose") for i in range(3)]
    st = str(tmp_path / "st")
    conv.convert(srcs, st, allow_missing_text=True, progress=False, chunk=1)
    budgets = []
    real = conv.ShardFile

    def recording(*a, budget=None, **k):
        budgets.append(budget)
        return real(*a, budget=budget, **k)

    monkeypatch.setattr(conv, "ShardFile", recording)
    rep = conv.convert(srcs, st, allow_missing_text=True, progress=False, chunk=1)
    assert rep["resumed_chunks"] == 3 and len(budgets) == 3
    assert budgets[0] is not None and all(b is budgets[0] for b in budgets)
