"""CPU tests of the pose ops: extension vs the numpy reference on random canonical clips
(padded and packed, float32/float16, C = 2/3), hand-computed semantics, determinism across
batch compositions, degenerate input and opcheck."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pose_helpers import FULL_CONFIG, J, pack, random_batch

from slpfast import layouts
from slpfast.ops import pose as P

pytestmark = pytest.mark.skipif(not P._LIB_LOADED, reason="slpfast._C not built")

LW, RW = layouts.LEFT_WRIST, layouts.RIGHT_WRIST
LH, RH = layouts.PART_SLICES["left_hand"], layouts.PART_SLICES["right_hand"]


def _close(got, want, dtype):
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("C", [2, 3])
@pytest.mark.parametrize("hand_scale", [False, True])
def test_normalize_matches_reference(dtype, C, hand_scale):
    pose, conf, lengths = random_batch([7, 1, 0, 13], T=13, C=C, dtype=dtype, seed=C)
    got = P.normalize_pose(pose, conf, lengths, hand_scale=hand_scale, return_info=True, conf_threshold=0.2)
    want = P.normalize_pose(pose, conf, lengths, hand_scale=hand_scale, return_info=True, conf_threshold=0.2,
                            backend="reference")
    _close(got[0], want[0], dtype)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
    torch.testing.assert_close(got[2], want[2], rtol=1e-12, atol=1e-9)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert (got[1][(conf <= 0.2)] == 0).all(), "joints at or below the threshold are flagged"
    assert (got[0][1, 1:] == 0).all() and (got[0][2] == 0).all() and (got[1][2] == 0).all()  # padding


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("normalize", [False, True])
def test_augment_matches_reference(dtype, normalize):
    pose, conf, lengths = random_batch([11, 1, 0, 17, 5], C=3, dtype=dtype, seed=4)
    if not normalize:
        pose, conf = P.normalize_pose(pose, conf, lengths)
    kwargs = dict(seed=2024, clip_ids=torch.tensor([5, 9, 2, 77, 2**40]), config=P.AugmentConfig(**FULL_CONFIG),
                  normalize=normalize)
    got = P.augment_pose(pose, conf, lengths, **kwargs)
    want = P.augment_pose(pose, conf, lengths, backend="reference", **kwargs)
    assert got[0].shape == (5, round(17 / 0.7), J, 3)
    assert torch.equal(got[2], want[2])
    _close(got[0], want[0], dtype)
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-6)


def test_packed_equals_padded():
    pose, conf, lengths = random_batch([6, 0, 9, 1], C=2, seed=7)
    xp, cp, cu = pack(pose, conf, lengths)
    a = P.normalize_pose(pose, conf, lengths)
    b = P.normalize_pose(xp, cp, cu_seqlens=cu)
    assert torch.equal(pack(a[0], a[1], lengths)[0], b[0])
    kwargs = dict(seed=3, clip_ids=torch.tensor([1, 2, 3, 4]), config=P.AugmentConfig(**FULL_CONFIG), normalize=True)
    pa, ca, la = P.augment_pose(pose, conf, lengths, **kwargs)
    pb, cb, cub = P.augment_pose(xp, cp, cu_seqlens=cu, **kwargs)
    assert torch.equal(cub[1:] - cub[:-1], la)
    packed_a, packed_ca, _ = pack(pa, ca, la)
    assert torch.equal(packed_a, pb) and torch.equal(packed_ca, cb)
    ref = P.augment_pose(xp, cp, cu_seqlens=cu, backend="reference", **kwargs)
    torch.testing.assert_close(pb, ref[0], rtol=1e-6, atol=1e-6)


def test_batch_composition_does_not_change_a_clip():
    """A clip's augmentation depends on (seed, clip id) only: not on its neighbours, its
    position, the padded length or the number of threads."""
    pose, conf, lengths = random_batch([9, 14, 3, 12], C=3, seed=1)
    ids = torch.tensor([10, 11, 12, 13])
    cfg = P.AugmentConfig(**FULL_CONFIG)
    full = P.augment_pose(pose, conf, lengths, seed=5, clip_ids=ids, config=cfg, normalize=True, out_len=30)
    order = [2, 0, 3]
    sub_pose = torch.zeros(3, 20, J, 3)
    sub_pose[:, :14] = pose[order]
    sub_conf = torch.zeros(3, 20, J)
    sub_conf[:, :14] = conf[order]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        sub = P.augment_pose(sub_pose, sub_conf, lengths[order], seed=5, clip_ids=ids[order], config=cfg,
                             normalize=True, out_len=30)
    finally:
        torch.set_num_threads(threads)
    for k, b in enumerate(order):
        assert sub[2][k] == full[2][b]
        assert torch.equal(sub[0][k], full[0][b]) and torch.equal(sub[1][k], full[1][b])
    other_seed = P.augment_pose(pose, conf, lengths, seed=6, clip_ids=ids, config=cfg, normalize=True, out_len=30)
    assert not torch.equal(other_seed[0], full[0])


def test_normalize_semantics_by_hand():
    """Shoulders (0,0)-(2,0) and (2,0)-(4,0): centre (2,0), width 2; hands about their wrist,
    face and mouth about the nose tip, all in shoulder widths."""
    pose = torch.randn(1, 2, J, 2) * 3
    conf = torch.ones(1, 2, J)
    pose[0, 0, layouts.LEFT_SHOULDER] = torch.tensor([0.0, 0.0])
    pose[0, 0, layouts.RIGHT_SHOULDER] = torch.tensor([2.0, 0.0])
    pose[0, 1, layouts.LEFT_SHOULDER] = torch.tensor([2.0, 0.0])
    pose[0, 1, layouts.RIGHT_SHOULDER] = torch.tensor([4.0, 0.0])
    out, out_conf, info = P.normalize_pose(pose, conf, torch.tensor([2]), return_info=True)
    assert info[0].tolist() == [2.0, 0.0, 0.0, 2.0, 0.0]
    body = layouts.PART_SLICES["body"]
    torch.testing.assert_close(out[0, :, body], (pose[0, :, body] - torch.tensor([2.0, 0.0])) / 2)
    torch.testing.assert_close(out[0, :, LH], (pose[0, :, LH] - pose[0, :, LW:LW + 1]) / 2)
    nose = layouts.FACE_NOSE_TIP
    face = slice(layouts.PART_SLICES["face"].start, layouts.PART_SLICES["mouth"].stop)
    torch.testing.assert_close(out[0, :, face], (pose[0, :, face] - pose[0, :, nose:nose + 1]) / 2)
    # Hand scale: a hand whose wrist-middle_mcp length is 0.5 in both frames.
    mcp = LW + layouts.HAND_JOINTS.index("middle_mcp")
    pose[0, :, mcp] = pose[0, :, LW] + torch.tensor([0.3, 0.4])
    out_hs = P.normalize_pose(pose, conf, torch.tensor([2]), hand_scale=True)[0]
    torch.testing.assert_close(out_hs[0, :, LH], (pose[0, :, LH] - pose[0, :, LW:LW + 1]) / 0.5)
    # Wrist missing in frame 1: that frame's hand is flagged.
    conf[0, 1, LW] = 0
    out2, conf2 = P.normalize_pose(pose, conf, torch.tensor([2]))
    assert (conf2[0, 1, LH] == 0).all() and (out2[0, 1, LH] == 0).all() and (conf2[0, 0, LH] == 1).all()


def _identity(batch, **overrides):
    p = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64).repeat(batch, 1)
    for col, v in overrides.items():
        p[:, ["flip", "angle", "shear", "sx", "sy", "tx", "ty", "speed", "parts"].index(col)] = v
    return p


def test_augment_semantics_by_hand():
    pose, conf, lengths = random_batch([9], C=3, missing=0.0, seed=3)
    conf = torch.rand(conf.shape) + 0.5  # every joint visible
    pose = P.normalize_pose(pose, conf, lengths)[0]
    out, oc, n = P.augment_pose(pose, conf, lengths, params=_identity(1))
    assert torch.equal(out, pose) and torch.equal(oc, conf) and n.tolist() == [9]
    # Flip: left and right hands swap, x is negated, y and z kept.
    out, oc, _ = P.augment_pose(pose, conf, lengths, params=_identity(1, flip=1.0))
    assert torch.equal(out[0, :, LH, 0], -pose[0, :, RH, 0]) and torch.equal(out[0, :, RH, 1:], pose[0, :, LH, 1:])
    perm = torch.from_numpy(layouts.flip_permutation())
    assert torch.equal(out[0, :, :, 1], pose[0, :, perm, 1])
    # Rotation by theta, row-vector convention of pose-format: (x, y) -> (x c + y s, -x s + y c).
    th = 0.3
    out = P.augment_pose(pose, conf, lengths, params=_identity(1, angle=th, tx=0.25))[0]
    x, y = pose[0, ..., 0].double(), pose[0, ..., 1].double()
    torch.testing.assert_close(out[0, ..., 0], (x * math.cos(th) + y * math.sin(th) + 0.25).float())
    torch.testing.assert_close(out[0, ..., 1], (-x * math.sin(th) + y * math.cos(th)).float())
    assert torch.equal(out[0, ..., 2], pose[0, ..., 2])
    # Speed 2: 9 frames -> 5 = input frames 0, 2, 4, 6, 8. Speed 0.5: 18 frames, odd ones midpoints.
    out, _, n = P.augment_pose(pose, conf, lengths, params=_identity(1, speed=2.0))
    assert n.tolist() == [5] and torch.equal(out[0], pose[0, ::2])
    out, oc, n = P.augment_pose(pose, conf, lengths, params=_identity(1, speed=0.5))
    assert n.tolist() == [18] and torch.equal(out[0, 0], pose[0, 0]) and torch.equal(out[0, -1], pose[0, -1])
    s = 1 * 8 / 17
    torch.testing.assert_close(out[0, 1], pose[0, 0] + s * (pose[0, 1] - pose[0, 0]))
    # Part dropout: bit 1 = left hand.
    _, oc, _ = P.augment_pose(pose, conf, lengths, params=_identity(1, parts=2.0))
    assert (oc[0, :, LH] == 0).all() and (oc[0, :, RH] > 0).all()


def test_resampling_takes_nearest_valid_frame():
    pose, conf, lengths = random_batch([3], C=2, missing=0.0, seed=5)
    conf = torch.ones_like(conf)
    conf[0, 1, 0] = 0  # joint 0 missing in frame 1
    out, oc, n = P.augment_pose(pose, conf, lengths, params=_identity(1, speed=0.6))  # 5 frames, s = 0, .5, 1, 1.5, 2
    assert n.tolist() == [5]
    assert torch.equal(out[0, 1, 0], pose[0, 0, 0])  # s = 0.5: tie -> the earlier (valid) frame
    assert oc[0, 2, 0] == 0 and (out[0, 2, 0] == 0).all()  # s = 1: the missing frame itself
    assert oc[0, 3, 0] == 0  # s = 1.5: the earlier frame is missing and nearest on a tie
    torch.testing.assert_close(out[0, 3, 1], 0.5 * (pose[0, 1, 1] + pose[0, 2, 1]))


def test_sampled_parameter_distributions():
    cfg = P.AugmentConfig(rotation_std=0.3, shear_std=0.1, scale_std=0.2, translate_std=0.05, flip_p=0.25,
                          speed_min=0.8, speed_max=1.25, part_drop_p=0.1)
    p = P.sample_augment_params(torch.arange(20000), seed=9, config=cfg)
    assert torch.equal(p, P.sample_augment_params(torch.arange(20000), seed=9, config=cfg))
    for col, std in ((1, 0.3), (2, 0.1), (4, 0.2), (5, 0.05), (6, 0.05)):
        v = p[:, col] - (1.0 if col == 4 else 0.0)
        assert abs(v.mean()) < 4 * std / math.sqrt(20000) and abs(v.std() / std - 1) < 0.03
    assert (p[:, 3] == 1).all(), "pose-format scales y only unless isotropic_scale"
    assert abs(p[:, 0].mean() - 0.25) < 0.015
    assert p[:, 7].min() >= 0.8 and p[:, 7].max() <= 1.25 and abs(p[:, 7].mean() - 1.025) < 0.01
    bits = p[:, 8].long()
    for part in range(5):
        assert abs(((bits >> part) & 1).double().mean() - 0.1) < 0.012
    assert (bits < 32).all()
    ref = P.sample_augment_params(torch.arange(50), seed=9, config=cfg, backend="reference")
    torch.testing.assert_close(p[:50], ref, rtol=1e-14, atol=1e-14)
    iso = P.sample_augment_params(torch.arange(10), seed=9, config=P.AugmentConfig(isotropic_scale=True))
    assert torch.equal(iso[:, 3], iso[:, 4])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("C", [2, 3])
@pytest.mark.parametrize("packed", [False, True])
def test_fused_affine_cpu_path_agrees_bitwise(dtype, C, packed, monkeypatch):
    """normalize=True at speed 1 without jitter / joint or frame dropout takes a fused AVX2 pass
    (csrc/core/pose_cpu_frames.h augment_row_fast): same bits as the generic loops, with NaN /
    Inf inputs, values that overflow float16 after the transform, a confidence threshold, flips,
    part dropout and hand scaling."""
    pose, conf, lengths = random_batch([23, 1, 0, 40, 7, 5], C=C, dtype=torch.float32, seed=11)
    pose[0, 3, 5, 1] = float("nan")
    pose[0, 4, 9, 0] = float("inf")
    pose[3, 2:6, 60:] *= 1e4  # hands / face far out: fp16 overflow after scaling
    pose[5] = 6e4 if dtype == torch.float16 else 1e38
    conf[4, :, layouts.LEFT_SHOULDER] = 0.0  # bounding-box fallback
    conf[0, 7, 2] = float("nan")
    conf[3, 5, 2] = conf[0, 1, 100] = float("inf")  # invalid like NaN (csrc conf_valid)
    pose = pose.to(dtype)
    ids = torch.tensor([1, 2, 3, 4, 5, 6])
    if packed:
        pose, conf, cu = pack(pose, conf, lengths)
        seqs = dict(cu_seqlens=cu)
    else:
        seqs = dict(lengths=lengths)
    cfgs = [P.AugmentConfig(flip_p=0.5), P.AugmentConfig(flip_p=0.5, part_drop_p=0.4, translate_std=0.1),
            P.AugmentConfig(flip_p=0.0, scale_std=0.5, rotation_std=1.0)]
    for cfg in cfgs:
        for hand_scale, thr in [(False, 0.0), (True, 0.5)]:
            kwargs = dict(seed=4, clip_ids=ids, config=cfg, normalize=True, hand_scale=hand_scale, conf_threshold=thr)
            monkeypatch.delenv("SLPFAST_POSE_NO_SIMD", raising=False)
            fast = P.augment_pose(pose, conf, **seqs, **kwargs)
            monkeypatch.setenv("SLPFAST_POSE_NO_SIMD", "1")
            base = P.augment_pose(pose, conf, **seqs, **kwargs)
            for x, y in zip(fast, base):  # bits: also tells -0.0 from 0.0
                if x.is_floating_point():
                    x, y = (t.view(torch.int16 if t.dtype == torch.float16 else torch.int32) for t in (x, y))
                assert torch.equal(x, y)
            assert torch.isfinite(fast[0].float()).all() and torch.isfinite(fast[1]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_simd_and_baseline_cpu_paths_agree_bitwise(dtype, monkeypatch):
    """The CPU op picks an AVX2/F16C build of its loops at run time; the baseline build must
    give the same bits (SLPFAST_POSE_NO_SIMD=1 forces it)."""
    pose, conf, lengths = random_batch([23, 1, 0, 40, 7], C=3, dtype=dtype, seed=9)
    pose[0, 3, 5, 1] = float("nan")
    kwargs = dict(seed=4, clip_ids=torch.tensor([1, 2, 3, 4, 5]), config=P.AugmentConfig(**FULL_CONFIG),
                  normalize=True)
    fast = P.augment_pose(pose, conf, lengths, **kwargs), P.normalize_pose(pose, conf, lengths)
    monkeypatch.setenv("SLPFAST_POSE_NO_SIMD", "1")
    base = P.augment_pose(pose, conf, lengths, **kwargs), P.normalize_pose(pose, conf, lengths)
    for a, b in zip(fast, base):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_out_len_with_packed_input_is_refused():
    # packed output holds exactly the resampled rows: a given out_len was silently ignored
    from slpfast.ops import augment_pose

    pose = torch.randn(7, layouts.NUM_JOINTS, 2)
    conf = torch.ones(7, layouts.NUM_JOINTS)
    cu = torch.tensor([0, 3, 7])
    with pytest.raises(ValueError, match="out_len sets the padded output length"):
        augment_pose(pose, conf, cu_seqlens=cu, seed=0, out_len=20)
