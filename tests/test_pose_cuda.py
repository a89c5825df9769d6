"""GPU checks of the pose ops (skipped without CUDA): opcheck on CUDA, CPU vs CUDA within 1e-6,
determinism across runs and batch compositions, degenerate input on the device."""
from __future__ import annotations

import pytest
import torch
from pose_helpers import FULL_CONFIG, J, pack, random_batch
from test_pose_edge import opcheck_all

from slpfast import _extension, layouts
from slpfast.ops import pose as P

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not P._LIB_LOADED or _extension.unavailable_reasons("cuda") != [],
                       reason="slpfast._C without CUDA"),
]
CFG = P.AugmentConfig(**FULL_CONFIG)
LENGTHS = [37, 1, 0, 64, 129, 5, 250, 17]


def _cpu_and_cuda(fn, *tensors):
    cpu = fn(*tensors)
    cuda = fn(*(t.cuda() for t in tensors))
    return cpu, tuple(t.cpu() for t in cuda)


def test_opcheck_cuda():
    # float16 only (the float32 instantiations are opchecked on the CPU): opcheck is slow and
    # the GPU check has a time budget
    opcheck_all("cuda", torch.float16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("C", [2, 3])
@pytest.mark.parametrize("hand_scale", [False, True])
def test_normalize_cpu_vs_cuda(dtype, C, hand_scale):
    pose, conf, lengths = random_batch(LENGTHS, T=256, C=C, dtype=dtype, seed=C)
    conf[2, :, layouts.LEFT_SHOULDER] = 0  # bounding-box fallback for clip 2 (empty) and 5
    conf[5, :, layouts.LEFT_SHOULDER] = 0
    fn = lambda x, c, n: P.normalize_pose(x, c, n, hand_scale=hand_scale, return_info=True)  # noqa: E731
    cpu, cuda = _cpu_and_cuda(fn, pose, conf, lengths)
    tol = 1e-6 if dtype == torch.float32 else 1e-3  # float16: at most one rounding step apart
    torch.testing.assert_close(cuda[0].float(), cpu[0].float(), rtol=tol, atol=tol)
    torch.testing.assert_close(cuda[1], cpu[1], rtol=0, atol=0)
    torch.testing.assert_close(cuda[2], cpu[2], rtol=1e-12, atol=1e-9)
    assert cpu[2][5, 4] == 1


def test_sample_params_cpu_vs_cuda_bitwise():
    ids = torch.randint(-2**62, 2**62, (4096,))
    cpu = P.sample_augment_params(ids, 1234567, CFG)
    cuda = P.sample_augment_params(ids.cuda(), 1234567, CFG).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=1e-15, atol=1e-15)
    assert torch.equal(cuda[:, [0, 8]], cpu[:, [0, 8]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_augment_cpu_vs_cuda(dtype, normalize, packed):
    pose, conf, lengths = random_batch(LENGTHS, T=256, C=3, dtype=dtype, seed=11)
    ids = torch.arange(100, 100 + len(LENGTHS))
    if packed:
        pose, conf, cu = pack(pose, conf, lengths)
        fn = lambda x, c, s, i: P.augment_pose(x, c, cu_seqlens=s, seed=77, clip_ids=i, config=CFG,  # noqa: E731
                                               normalize=normalize)
        cpu, cuda = _cpu_and_cuda(fn, pose, conf, cu, ids)
    else:
        fn = lambda x, c, n, i: P.augment_pose(x, c, n, seed=77, clip_ids=i, config=CFG,  # noqa: E731
                                               normalize=normalize)
        cpu, cuda = _cpu_and_cuda(fn, pose, conf, lengths, ids)
    assert torch.equal(cuda[2], cpu[2]) and cuda[0].shape == cpu[0].shape
    tol = 1e-6 if dtype == torch.float32 else 1e-3
    torch.testing.assert_close(cuda[0].float(), cpu[0].float(), rtol=tol, atol=tol)
    torch.testing.assert_close(cuda[1], cpu[1], rtol=1e-6, atol=1e-6)
    # The same joints are valid (dropout draws are bitwise equal on both devices).
    assert torch.equal(cuda[1] > 0, cpu[1] > 0)


def test_cuda_determinism_and_batch_composition():
    pose, conf, lengths = random_batch(LENGTHS, T=256, C=3, seed=12, device="cuda")
    ids = torch.arange(len(LENGTHS), device="cuda") * 7 + 3
    kwargs = dict(seed=5, config=CFG, normalize=True, out_len=400)
    a = P.augment_pose(pose, conf, lengths, clip_ids=ids, **kwargs)
    b = P.augment_pose(pose, conf, lengths, clip_ids=ids, **kwargs)
    assert all(torch.equal(x, y) for x, y in zip(a, b)), "two runs differ"
    order = torch.tensor([6, 3, 0], device="cuda")
    sub = P.augment_pose(pose[order], conf[order], lengths[order], clip_ids=ids[order], **kwargs)
    for k, bi in enumerate(order.tolist()):
        assert torch.equal(sub[0][k], a[0][bi]) and torch.equal(sub[1][k], a[1][bi])


def test_cuda_degenerate_input():
    pose, conf, lengths = random_batch([1, 9, 0], T=9, C=2, seed=13, device="cuda")
    pose[1, 3, 20, 0] = float("nan")
    pose[1, 4, 21, 1] = float("inf")
    conf[0] = 0
    out, oc, info = P.normalize_pose(pose, conf, lengths, return_info=True)
    assert torch.isfinite(out).all() and oc[1, 3, 20] == 0 and oc[1, 4, 21] == 0 and (oc[0] == 0).all()
    assert info[0, 4] == 2
    out, oc, n = P.augment_pose(pose, conf, lengths, seed=0, config=CFG, normalize=True)
    assert torch.isfinite(out).all() and n.tolist()[2] == 0 and (oc[2] == 0).all()
    cpu = P.augment_pose(pose.cpu(), conf.cpu(), lengths.cpu(), seed=0, config=CFG, normalize=True)
    torch.testing.assert_close(out.cpu(), cpu[0], rtol=1e-6, atol=1e-6)


def test_cuda_large_batch_matches_cpu():
    """The benchmark shape (B = 256, T up to 256, canonical J): every clip equal to the CPU op."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(32, 257, (256,), generator=g)
    pose, conf, lengths = random_batch(lengths, T=256, C=3, dtype=torch.float16, seed=14)
    ids = torch.arange(256)
    cpu = P.augment_pose(pose, conf, lengths, seed=1, clip_ids=ids, config=CFG, normalize=True)
    cuda = P.augment_pose(pose.cuda(), conf.cuda(), lengths.cuda(), seed=1, clip_ids=ids.cuda(), config=CFG,
                          normalize=True)
    assert cuda[0].shape == cpu[0].shape == (256, round(256 / CFG.speed_min), J, 3)
    torch.testing.assert_close(cuda[0].cpu().float(), cpu[0].float(), rtol=1e-3, atol=1e-3)
    assert torch.equal(cuda[1].cpu() > 0, cpu[1] > 0)


def test_layout_table_goes_to_the_device_once():
    """The op keeps its device copy of a layout table: after the first call, a call with every
    tensor on the GPU copies nothing from the host (a copy per call used to cost a launch)."""
    from torch.profiler import ProfilerActivity, profile

    pose, conf, lengths = random_batch([9, 4], T=16, C=3, dtype=torch.float16, seed=1)
    x, c, n = pose.cuda(), conf.cuda(), lengths.cuda()
    from slpfast.reference import pose as R

    table = P.layout_table(R.canonical_spec())
    torch.ops.slpfast.normalize_pose(x, c, n, table, 0.0)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        torch.ops.slpfast.normalize_pose(x, c, n, table, 0.0)
        torch.cuda.synchronize()
    copies = [e.key for e in prof.key_averages() if "HtoD" in e.key]
    assert copies == [], copies
