"""The raw custom ops torch.ops.slpfast.* called directly (bypassing the Python wrappers and
their checks): every bad argument is a clean error from the C++ checks, never a crash or an
out-of-bounds access; out-of-range values that the wrappers refuse have a defined meaning."""
from __future__ import annotations

import pytest
import torch
from pose_helpers import pack, random_batch

from slpfast.ops import pose as P

pytestmark = pytest.mark.skipif(not P._LIB_LOADED, reason="slpfast._C not built")
ops = torch.ops.slpfast
I64_MAX = 2**63 - 1


def _table():
    return P.layout_table(P.ref.canonical_spec())


# cu_seqlens whose consecutive differences overflow int64: 0 -> 2^63-1 -> -2 wrapped to a
# positive "length", so the array passed as non-decreasing and clip 0 was read as 2^63-1 rows
# (a segfault).
WRAPPING_CU = [0, I64_MAX, -2, 8]


def test_normalize_packed_cu_seqlens_that_overflow_are_refused():
    pose, conf, lengths = random_batch([5, 3], C=2, seed=0)
    xp, cp, _ = pack(pose, conf, lengths)
    with pytest.raises(RuntimeError, match="normalize_pose: cu_seqlens: cu_seqlens must be non-decreasing"):
        ops.normalize_pose(xp, cp, torch.tensor(WRAPPING_CU), _table(), 0.0)


def test_augment_packed_cu_seqlens_that_overflow_are_refused():
    pose, conf, lengths = random_batch([5, 3], C=2, seed=0)
    xp, cp, cu = pack(pose, conf, lengths)
    ids = torch.arange(3)
    params = ops.sample_augment_params(ids, 3, P.AugmentConfig().sample_config(), 5)
    good_out = torch.tensor([0, 5, 5, 8])
    with pytest.raises(RuntimeError, match="augment_pose: cu_seqlens: cu_seqlens must be non-decreasing"):
        ops.augment_pose(xp, cp, torch.tensor(WRAPPING_CU), good_out, 8, params, ids, 3, _table(), [0.0] * 3,
                         True, 0.0)
    in_cu = torch.tensor([0, 5, 8, 8])
    with pytest.raises(RuntimeError, match="augment_pose: out_cu_seqlens: cu_seqlens must be non-decreasing"):
        ops.augment_pose(xp, cp, in_cu, torch.tensor(WRAPPING_CU), 8, params, ids, 3, _table(), [0.0] * 3,
                         True, 0.0)


def test_out_of_range_part_drop_mask_saturates():
    """params[:, 8] outside uint32 (the wrapper refuses it; the raw op takes it) was converted
    with undefined behaviour (x86: -1 dropped every part, 1e30 none). It saturates as a GPU's
    conversion does: NaN and negatives drop nothing, >= 2^32 drops every part."""
    pose, conf, lengths = random_batch([4, 3], C=2, missing=0.0, seed=1)
    ids = torch.arange(2)
    base = ops.sample_augment_params(ids, 3, P.AugmentConfig().sample_config(), 5)

    def run(mask):
        params = base.clone()
        params[:, 8] = mask
        return ops.augment_pose(pose, conf, lengths, lengths, 4, params, ids, 3, _table(), [0.0] * 3, True, 0.0)

    keep_all = run(0.0)
    assert (keep_all[1][0, :4] > 0).any()
    for mask in (-1.0, -1e30, float("nan"), float("-inf")):
        got = run(mask)
        assert torch.equal(got[0], keep_all[0]) and torch.equal(got[1], keep_all[1]), mask
    drop_all = run(31.0)
    assert (drop_all[1] == 0).all()
    for mask in (2.0**32, 1e30, float("inf")):
        got = run(mask)
        assert torch.equal(got[0], drop_all[0]) and torch.equal(got[1], drop_all[1]), mask
