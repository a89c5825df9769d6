"""Pose ops on degenerate input (T = 1, nothing visible, NaN/Inf, no shoulders, float16
overflow, empty batches), bad arguments, non-differentiability and torch.library.opcheck (CPU)."""
from __future__ import annotations

import os

import pytest
import torch
from pose_helpers import FULL_CONFIG, J, pack, random_batch

from slpfast import layouts
from slpfast.ops import pose as P

pytestmark = pytest.mark.skipif(not P._LIB_LOADED, reason="slpfast._C not built")
CFG = P.AugmentConfig(**FULL_CONFIG)


def _both_backends(fn):
    return fn("extension"), fn("reference")


@pytest.mark.parametrize("normalize", [False, True])
def test_single_frame(normalize):
    pose, conf, lengths = random_batch([1, 1], T=1, seed=2)
    for backend in ("extension", "reference"):
        out, oc, n = P.augment_pose(pose, conf, lengths, seed=1, config=CFG, normalize=normalize, backend=backend)
        assert out.shape[1] >= 1 and n.tolist() == [1, 1] and torch.isfinite(out).all()
    got, want = _both_backends(lambda b: P.augment_pose(pose, conf, lengths, seed=1, config=CFG, normalize=normalize,
                                                        backend=b))
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    out, oc = P.normalize_pose(pose, conf, lengths)
    ls, rs = out[:, 0, layouts.LEFT_SHOULDER], out[:, 0, layouts.RIGHT_SHOULDER]
    assert torch.isfinite(out).all() and ((ls[:, 0] - 0.5).abs() < 0.01).all()  # half a shoulder width
    torch.testing.assert_close(ls, -rs)


def test_all_confidences_zero():
    pose, conf, lengths = random_batch([5, 3], C=3, seed=3)
    conf = torch.zeros_like(conf)
    out, oc, info = P.normalize_pose(pose, conf, lengths, return_info=True)
    assert (out == 0).all() and (oc == 0).all()
    assert info[:, 4].tolist() == [2.0, 2.0] and info[:, 3].tolist() == [1.0, 1.0]
    out, oc, _ = P.augment_pose(pose, conf, lengths, seed=0, config=CFG, normalize=True)
    assert (out == 0).all() and (oc == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_nan_and_inf_are_zeroed_and_flagged(dtype):
    pose, conf, lengths = random_batch([6, 4], C=3, dtype=dtype, missing=0.0, seed=4)
    bad = torch.zeros(pose.shape[:-1], dtype=torch.bool)
    bad[0, 2, 60] = bad[1, 0, 7] = bad[0, 5, layouts.LEFT_SHOULDER] = True
    pose[0, 2, 60, 1] = float("nan")
    pose[1, 0, 7, 0] = float("inf")
    pose[0, 5, layouts.LEFT_SHOULDER, 2] = -float("inf")
    conf[1, 1, 9] = float("nan")
    bad[1, 1, 9] = True
    for backend in ("extension", "reference"):
        out, oc = P.normalize_pose(pose, conf, lengths, backend=backend)
        assert torch.isfinite(out.float()).all()
        assert (oc[bad] == 0).all() and (out[bad] == 0).all()
        assert oc[0, 2, 61] > 0  # its neighbour is untouched
        out, oc, _ = P.augment_pose(pose, conf, lengths, seed=1, config=CFG, normalize=True, backend=backend)
        assert torch.isfinite(out.float()).all() and torch.isfinite(oc).all()
    got, want = _both_backends(lambda b: P.normalize_pose(pose, conf, lengths, backend=b))
    torch.testing.assert_close(got[0].float(), want[0].float(), rtol=2e-3, atol=2e-3)


def test_infinite_confidence_is_invalid_like_nan():
    """conf = +inf: the joint is zeroed and flagged (conf 0), as for NaN, on both backends; it
    once passed through normalize_pose as inf and became NaN in augment_pose's interpolation."""
    pose, conf, lengths = random_batch([4, 3], T=4, C=2, missing=0.0, seed=3)
    conf[0, 1, 7] = float("inf")
    conf[1, 2, 70] = float("inf")
    cfg = P.AugmentConfig(speed_min=0.7, speed_max=0.7)  # resampled: frames are interpolated
    for backend in ("extension", "reference"):
        out, oc = P.normalize_pose(pose, conf, lengths, backend=backend)
        assert torch.isfinite(oc).all()
        assert oc[0, 1, 7] == 0 and oc[1, 2, 70] == 0 and (out[0, 1, 7] == 0).all()
        for normalize in (False, True):
            out, oc, _ = P.augment_pose(pose, conf, lengths, seed=0, config=cfg, normalize=normalize, backend=backend)
            assert torch.isfinite(oc).all() and torch.isfinite(out).all()
    for normalize in (False, True):
        got, want = _both_backends(lambda b: P.augment_pose(pose, conf, lengths, seed=0, config=cfg,
                                                            normalize=normalize, backend=b))
        torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-6)


def _params(col: int, value: float) -> torch.Tensor:
    """Valid sampled parameters of 2 clips with one column set to ``value``."""
    params = P.sample_augment_params(torch.arange(2), 5)
    params[:, col] = value
    return params


def test_no_shoulders_falls_back_to_bounding_box():
    pose, conf, lengths = random_batch([8], C=2, missing=0.0, seed=5)
    conf[0, :, layouts.RIGHT_SHOULDER] = 0
    out, oc, info = P.normalize_pose(pose, conf, lengths, return_info=True)
    valid = conf[0, :8] > 0
    pts = pose[0, :8][valid].double()
    lo, hi = pts.min(0).values, pts.max(0).values
    assert info[0, 4] == 1
    torch.testing.assert_close(info[0, :2], (lo + hi) / 2)
    torch.testing.assert_close(info[0, 3], (hi - lo).max())
    body = oc[0, :8, :13] > 0
    assert out[0, :8, :13][body].abs().max() <= 0.5 + 1e-6  # inside the unit box about the centre
    want = P.normalize_pose(pose, conf, lengths, backend="reference")
    torch.testing.assert_close(out, want[0], rtol=1e-6, atol=1e-6)


def test_float16_overflow_is_flagged():
    pose, conf, lengths = random_batch([4], C=2, dtype=torch.float16, missing=0.0, seed=6)
    params = torch.tensor([[0.0, 0.0, 0.0, 1.0, 60000.0, 0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    out, oc, _ = P.augment_pose(pose, conf, lengths, params=params)
    assert torch.isfinite(out.float()).all()
    big = pose[0, :, :, 1].float().abs() * 60000 >= 65520
    assert big.any() and (oc[0][big] == 0).all() and (oc[0][~big & (conf[0] > 0)] > 0).all()


def test_empty_batch_and_empty_clips():
    pose = torch.zeros(0, 5, J, 2)
    conf = torch.zeros(0, 5, J)
    out, oc = P.normalize_pose(pose, conf, torch.zeros(0, dtype=torch.long))
    assert out.shape == pose.shape
    out, oc, n = P.augment_pose(pose, conf, torch.zeros(0, dtype=torch.long), seed=0, config=CFG)
    assert out.shape[0] == 0 and n.shape == (0,)
    pose, conf, lengths = random_batch([0, 0], T=3, seed=1)
    out, oc, n = P.augment_pose(pose, conf, lengths, seed=0, config=CFG)
    assert n.tolist() == [0, 0] and (out == 0).all() and (oc == 0).all()
    xp, cp, cu = pack(pose, conf, lengths)
    out, oc, cu_out = P.augment_pose(xp, cp, cu_seqlens=cu, seed=0, config=CFG)
    assert out.shape == (0, J, 3) and cu_out.tolist() == [0, 0, 0]


@pytest.mark.parametrize("call, match", [
    (lambda x, c, n: P.normalize_pose(x.double(), c, n), "pose must be float32/float16"),
    (lambda x, c, n: P.normalize_pose(x[..., :1], c, n), "C = 2 or 3"),
    (lambda x, c, n: P.normalize_pose(x, c[:, :, :5], n), "conf must have shape"),
    (lambda x, c, n: P.normalize_pose(x, c, n + 100), "lengths must lie in"),
    (lambda x, c, n: P.normalize_pose(x, c), "needs lengths"),
    (lambda x, c, n: P.normalize_pose(x[:, :, :50], c[:, :, :50], n), "J=50 joints but the layout has 123"),
    (lambda x, c, n: P.normalize_pose(x, c, n, conf_threshold=float("nan")), "conf_threshold"),
    (lambda x, c, n: P.augment_pose(x, c, n), "seed is required"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, config=P.AugmentConfig(flip_p=2.0)), "flip_p"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, config=P.AugmentConfig(speed_min=0.0)), "speed_min"),
    (lambda x, c, n: P.augment_pose(x, c, n, params=torch.zeros(2, 9)), "speed"),
    (lambda x, c, n: P.augment_pose(x, c, n, params=torch.ones(3, 9)), r"params must have shape \(B, 9\)"),
    # speeds below 1/64 would make round(L / speed) overflow int64 or allocate terabytes
    (lambda x, c, n: P.augment_pose(x, c, n, params=_params(7, 1e-9)), r"params\[:, 7\] \(speed\) must be >= "),
    (lambda x, c, n: P.augment_pose(x, c, n, params=_params(7, 1e-300), out_len=4), r"params\[:, 7\]"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, config=P.AugmentConfig(speed_min=1e-300, speed_max=1.0)),
     "config.speed_min must be >= MIN_SPEED"),
    (lambda x, c, n: P.augment_pose(x, c, n, params=_params(7, float("nan"))), "params must be finite"),
    # the part-drop bit mask: an integer in [0, 2**num_parts) (5 canonical parts)
    (lambda x, c, n: P.augment_pose(x, c, n, params=_params(8, 2.5)), r"params\[:, 8\] \(part-drop bit mask\)"),
    (lambda x, c, n: P.augment_pose(x, c, n, params=_params(8, -1.0)), r"params\[:, 8\]"),
    (lambda x, c, n: P.augment_pose(x, c, n, params=_params(8, 32.0)), r"\[0, 32\), got 32.0"),
    (lambda x, c, n: P.augment_pose(x, c, n, params=_params(8, 1e30)), r"params\[:, 8\]"),
    # flags and scalars of the wrong type would silently mean something
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, normalize="no"), "normalize must be a bool, got str"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, hand_scale=1), "hand_scale must be a bool, got int"),
    (lambda x, c, n: P.normalize_pose(x, c, n, hand_scale="no"), "hand_scale must be a bool"),
    (lambda x, c, n: P.normalize_pose(x, c, n, return_info=None), "return_info must be a bool"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, out_len=True), "out_len must be an int, got bool"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, out_len=4.0), "out_len must be an int, got float"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, out_len=-1), "out_len must be an int >= 0"),
    (lambda x, c, n: P.normalize_pose(x, c, n, conf_threshold=True), "conf_threshold must be a finite number"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, conf_threshold="0.5"), "conf_threshold"),
    (lambda x, c, n: P.sample_augment_params(n, 1, num_parts=2.7), "num_parts must be an int, got float"),
    (lambda x, c, n: P.sample_augment_params(n, 1, num_parts=True), "num_parts must be an int, got bool"),
    (lambda x, c, n: P.sample_augment_params(n, 1, num_parts="x"), "num_parts must be an int"),
    (lambda x, c, n: P.sample_augment_params(n, 1, num_parts=17), r"num_parts must be an int in \[1, 16\]"),
    # config fields of the wrong type: a string crashed deep inside numpy (TypeError), a bool
    # probability or a truthy string as isotropic_scale silently meant something
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, config=P.AugmentConfig(rotation_std="0.1")),
     "config.rotation_std must be a finite number >= 0, got str"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, config=P.AugmentConfig(flip_p="0.5")),
     "config.flip_p must be a probability in \\[0, 1\\], got str"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, config=P.AugmentConfig(flip_p=True)), "config.flip_p"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, config=P.AugmentConfig(speed_max="2")), "speed_max"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, config=P.AugmentConfig(speed_min=None)), "speed_min"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, config=P.AugmentConfig(isotropic_scale="no")),
     "config.isotropic_scale must be a bool, got str"),
    (lambda x, c, n: P.sample_augment_params(n, 1, config=P.AugmentConfig(jitter_std=[0.1])), "config.jitter_std"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, clip_ids=torch.arange(5)), "clip_ids must have shape"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed="a"), "seed must be an int"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, backend="nope"), "backend must be"),
    # metadata lives on pose's device or on the host: never on a third device
    (lambda x, c, n: P.normalize_pose(x, c, n.to("meta")), r"lengths must be on pose's device \(cpu\) or on the CPU"),
    (lambda x, c, n: P.augment_pose(x, c, n, seed=1, clip_ids=torch.arange(2, device="meta")), "clip_ids must be on"),
    (lambda x, c, n: P.augment_pose(x, c, n, params=torch.ones(2, 9, device="meta")), "params must be on"),
    (lambda x, c, n: P.normalize_pose(x, c.to("meta"), n), "conf is on meta but pose is on cpu"),
])
def test_bad_arguments_raise_value_error(call, match):
    pose, conf, lengths = random_batch([3, 2], C=2, seed=0)
    with pytest.raises(ValueError, match=match):
        call(pose, conf, lengths)


def test_bad_layout_table_is_rejected_by_the_op():
    pose, conf, lengths = random_batch([3], C=2, seed=0)
    table = P.layout_table(P.ref.canonical_spec())
    table[16 + 2 * J] = 5  # flip permutation no longer an involution
    with pytest.raises(RuntimeError, match="involution"):
        torch.ops.slpfast.normalize_pose(pose, conf, lengths, table, 0.0)


def test_outputs_do_not_require_grad():
    pose, conf, lengths = random_batch([4, 2], C=2, seed=0)
    pose.requires_grad_(True)
    out, oc = P.normalize_pose(pose, conf, lengths)
    assert not out.requires_grad and not oc.requires_grad
    table = P.layout_table(P.ref.canonical_spec())
    raw = torch.ops.slpfast.normalize_pose(pose, conf, lengths, table, 0.0)
    assert not any(t.requires_grad for t in raw)
    out, _, _ = P.augment_pose(pose, conf, lengths, seed=0, config=CFG)
    assert not out.requires_grad


def _op_args(packed: bool, dtype=torch.float32, device="cpu"):
    pose, conf, lengths = random_batch([5, 1, 0, 3], C=3, dtype=dtype, seed=8, device=device)
    table = P.layout_table(P.ref.canonical_spec(True))
    ids = torch.tensor([4, 8, 15, 16], device=device)
    params = torch.ops.slpfast.sample_augment_params(ids, 3, CFG.sample_config(), 5)
    out_lengths = P._resampled_lengths(lengths, params[:, 7])
    if packed:
        pose, conf, seqs = pack(pose, conf, lengths)
        out_seqs = torch.zeros(5, dtype=torch.int64, device=device)
        out_seqs[1:] = torch.cumsum(out_lengths, 0)
        out_len = int(out_seqs[-1])
    else:
        seqs, out_len = lengths, 8
        out_seqs = out_lengths.clamp_max(out_len)
    return (pose, conf, seqs, table, ids, params, out_seqs, out_len)


def opcheck_all(device: str, dtype=torch.float32):
    for packed in (False, True):
        pose, conf, seqs, table, ids, params, out_seqs, out_len = _op_args(packed, dtype, device)
        torch.library.opcheck(torch.ops.slpfast.normalize_pose.default, (pose, conf, seqs, table, 0.1))
        torch.library.opcheck(torch.ops.slpfast.sample_augment_params.default, (ids, 3, CFG.sample_config(), 5))
        for normalize in (False, True):
            torch.library.opcheck(torch.ops.slpfast.augment_pose.default,
                                  (pose, conf, seqs, out_seqs, out_len, params, ids, 3, table, CFG.elem_config(),
                                   normalize, 0.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_opcheck_cpu(dtype):
    opcheck_all("cpu", dtype)


def test_cpp_canonical_layout_tables_are_current():
    """tests/cpp/canonical_layouts.h (the layout the emulated CUDA kernels run in ctest) holds the
    tables the ops build from slpfast.layouts: regenerate it when the layout changes."""
    import re

    from slpfast.ops.pose import _canonical

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpp", "canonical_layouts.h")
    with open(path) as f:
        text = f.read()
    for hand_scale, name in ((True, "kCanonicalLayoutHandScale"), (False, "kCanonicalLayout")):
        body = re.search(rf"{name}\[\] = \{{([^}}]*)\}};", text).group(1)
        assert [int(v) for v in body.replace("\n", " ").split(",") if v.strip()] == _canonical(hand_scale)[1], name
