"""The pose reference (slpfast/reference/pose.py) against pose-format and against known answers,
and the CPU extension against both, on the real .pose clips in ../shared/data/pose/.

pose-format works on its own raw layouts (MediaPipe Holistic, OpenPose), so the exact-parity
tests run the reference and the op with a whole-body ``shoulder_spec`` on those raw arrays.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch

from slpfast.ops import pose as P
from slpfast.reference import pose as R

pose_format = pytest.importorskip("pose_format")
from pose_format import Pose  # noqa: E402
from pose_format.utils.generic import pose_normalization_info  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "pose")
FILES = sorted(glob.glob(os.path.join(DATA, "*.pose")))


def _read(path):
    with open(path, "rb") as f:
        return Pose.read(f.read())


def _raw(pose):
    """(T, P, D) float32 data (masked entries as stored), (T, P) conf, shoulder indices."""
    info = pose_normalization_info(pose.header)
    data = np.asarray(pose.body.data.data[:, 0], dtype=np.float32)
    conf = np.asarray(pose.body.confidence[:, 0], dtype=np.float32)
    return data, conf, info.p1, info.p2


def test_real_files_present():
    assert len(FILES) >= 5, f"expected the real .pose clips in {DATA}"


def test_philox_known_answers():
    ctr = np.array([[0, 0, 0, 0], [0xFFFFFFFF] * 4, [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]], np.uint64)
    keys = [(0, 0), (0xFFFFFFFF, 0xFFFFFFFF), (0xA4093822, 0x299F31D0)]
    want = [[0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8], [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD],
            [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]]
    for c, k, w in zip(ctr, keys, want):
        assert R.philox4x32_10(c[None], k)[0].tolist() == w


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_normalize_matches_pose_format(path):
    pose = _read(path)
    data, conf, a, b = _raw(pose)
    spec = R.shoulder_spec(data.shape[1], a, b)
    ours, ours_conf, info = R.normalize_clip(data, conf, spec)
    assert info["fallback"] == 0
    theirs = pose.normalize()  # in place, returns the pose
    valid = conf > 0
    expect = np.asarray(theirs.body.data.data[:, 0])
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours[valid], expect[valid], rtol=1e-6, atol=2e-6)
    assert (ours[~valid] == 0).all() and (ours_conf[~valid] == 0).all()
    # The extension on the same raw arrays gives the reference bit for bit (same float64 math).
    out, out_conf = P.normalize_pose(torch.from_numpy(data)[None], torch.from_numpy(conf)[None],
                                     torch.tensor([data.shape[0]]), layout=spec)
    np.testing.assert_allclose(out[0].numpy(), ours, rtol=0, atol=1e-6)
    assert torch.equal(out_conf[0], torch.from_numpy(ours_conf))


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_augment2d_matches_pose_format(path, monkeypatch):
    pose = _read(path)
    pose.body.data = pose.body.data[:, :, :, :2]  # augment2d is 2-D; keep x, y
    data, conf, a, b = _raw(pose)
    shear, angle, scale = 0.13, -0.31, 0.17
    draws = iter([shear, angle, scale])  # augment2d draws shear, rotation, scale in this order
    monkeypatch.setattr(np.random, "normal", lambda loc=0.0, scale=1.0, size=None: np.array([next(draws)]))
    theirs = np.asarray(pose.body.augment2d(rotation_std=1, shear_std=1, scale_std=1).data.data[:, 0])
    params = np.array([0.0, angle, shear, 1.0, 1.0 + scale, 0.0, 0.0, 1.0, 0.0])
    spec = R.shoulder_spec(data.shape[1], a, b)
    ours, ours_conf = R.augment_clip(data, conf, params, spec, out_len=data.shape[0])
    valid = conf > 0
    np.testing.assert_allclose(ours[valid], theirs[valid], rtol=1e-5, atol=1e-4)
    out, out_conf, out_len = P.augment_pose(torch.from_numpy(data)[None], torch.from_numpy(conf)[None],
                                            torch.tensor([data.shape[0]]), params=torch.from_numpy(params)[None],
                                            layout=spec)
    assert out_len.tolist() == [data.shape[0]]
    np.testing.assert_allclose(out[0].numpy(), ours, rtol=0, atol=1e-6)
    assert torch.equal(out_conf[0], torch.from_numpy(ours_conf))


def test_flip_matches_pose_format():
    pose = _read(FILES[0])
    data, conf, a, b = _raw(pose)
    theirs = np.asarray(pose.body.flip(axis=0).data.data[:, 0])
    params = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    ours, _ = R.augment_clip(data, conf, params, R.shoulder_spec(data.shape[1], a, b), out_len=data.shape[0])
    valid = conf > 0
    np.testing.assert_array_equal(ours[valid], theirs[valid])


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_real_clip_full_pipeline_cpu_matches_reference(path):
    """Every augmentation at once (fused normalize) on a real clip, op vs reference."""
    data, conf, a, b = _raw(_read(path))
    spec = R.shoulder_spec(data.shape[1], a, b)
    cfg = R.AugmentConfig(speed_min=0.6, speed_max=1.7, translate_std=0.1, jitter_std=0.01, joint_drop_p=0.1,
                          frame_drop_p=0.05, flip_p=0.5)
    pose_t, conf_t, lengths = torch.from_numpy(data)[None], torch.from_numpy(conf)[None], torch.tensor([len(data)])
    for dtype in (torch.float32, torch.float16):
        kwargs = dict(seed=11, clip_ids=torch.tensor([123456789012]), config=cfg, normalize=True, layout=spec)
        got = P.augment_pose(pose_t.to(dtype), conf_t, lengths, **kwargs)
        want = P.augment_pose(pose_t.to(dtype), conf_t, lengths, backend="reference", **kwargs)
        assert torch.equal(got[2], want[2])
        tol = 1e-6 if dtype == torch.float32 else 2e-3
        torch.testing.assert_close(got[0].float(), want[0].float(), rtol=tol, atol=tol)
        torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-6)
        assert torch.isfinite(got[0].float()).all()


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_real_clips_in_canonical_layout(path):
    """Real clips mapped to the canonical layout (slpfast.layouts_sources): the op equals the
    reference for normalize_pose and the fused augmentation, the shoulders land at about
    (+-0.5, 0), every hand and face joint is relative to its anchor and nothing is NaN."""
    from slpfast import layouts
    from slpfast.layouts_sources import layout_from_components

    pose = _read(path)
    src = layout_from_components([(c.name, c.points) for c in pose.header.components])
    pts, cf = src.to_canonical(pose.body.data.data[:, 0], pose.body.confidence[:, 0])
    x, c = torch.from_numpy(pts)[None], torch.from_numpy(cf)[None]
    n = torch.tensor([pts.shape[0]])
    for hand_scale in (False, True):
        got = P.normalize_pose(x, c, n, hand_scale=hand_scale, return_info=True)
        want = P.normalize_pose(x, c, n, hand_scale=hand_scale, return_info=True, backend="reference")
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-6)
        assert torch.equal(got[1], want[1])
        assert got[2][0, 4] == 0, "the real clips all show their shoulders"
        out, oc = got[0][0], got[1][0]
        assert torch.isfinite(out).all()
        ls, rs = layouts.LEFT_SHOULDER, layouts.RIGHT_SHOULDER
        both = (oc[:, ls] > 0) & (oc[:, rs] > 0)
        mid = 0.5 * (out[both, ls, :2] + out[both, rs, :2])
        assert mid.abs().mean() < 0.1 and (out[both, ls, :2] - out[both, rs, :2]).norm(dim=-1).mean() < 1.5
        wrist_ok = oc[:, layouts.LEFT_WRIST] > 0
        assert (out[wrist_ok, layouts.LEFT_WRIST] == 0).all()
        nose_ok = oc[:, layouts.FACE_NOSE_TIP] > 0
        assert (out[nose_ok, layouts.FACE_NOSE_TIP] == 0).all()
    cfg = R.AugmentConfig(speed_min=0.8, speed_max=1.25, jitter_std=0.01, joint_drop_p=0.05, part_drop_p=0.1)
    kw = dict(seed=3, clip_ids=torch.tensor([42]), config=cfg, normalize=True)
    got = P.augment_pose(x.half(), c, n, **kw)
    want = P.augment_pose(x.half(), c, n, backend="reference", **kw)
    torch.testing.assert_close(got[0].float(), want[0].float(), rtol=1e-3, atol=1e-3)
    assert torch.equal(got[1] > 0, want[1] > 0) and torch.isfinite(got[0].float()).all()


def test_reference_rules_for_speed_part_mask_and_infinite_confidence():
    """The spec's own rules, which the op's checks and the C++ core follow: speed >= MIN_SPEED
    (1/64), the part-drop mask an integer in [0, 2**num_parts), and a non-finite confidence
    (NaN or +inf) makes its joint invalid."""
    assert R.MIN_SPEED == 1 / 64 and R.resampled_length(10, R.MIN_SPEED) == 640
    with pytest.raises(ValueError, match="speed must be finite and >= MIN_SPEED"):
        R.resampled_length(10, 1e-9)
    spec = R.canonical_spec()
    rng = np.random.default_rng(0)
    pose, conf = rng.normal(size=(4, spec.num_joints, 2)).astype(np.float32), np.ones((4, spec.num_joints), np.float32)
    params = R.sample_params(1, 0, R.AugmentConfig(), spec.num_parts)
    for col, value, match in ((7, 1e-300, r"params\[7\] \(speed\)"), (8, 2.5, r"params\[8\]"),
                              (8, float(2 ** spec.num_parts), r"params\[8\]"), (8, -1.0, r"params\[8\]")):
        bad = params.copy()
        bad[col] = value
        with pytest.raises(ValueError, match=match):
            R.augment_clip64(pose, conf, bad, spec)
    conf[1, 3], conf[2, 4] = np.inf, np.nan
    valid = R._valid(pose, conf, 0.0)
    assert not valid[1, 3] and not valid[2, 4] and valid.sum() == valid.size - 2
    slow = params.copy()
    slow[7] = 0.7  # interpolated frames: an inf confidence once became NaN here
    _, _, cf = R.augment_clip64(pose, conf, slow, spec)
    assert np.isfinite(cf).all()
