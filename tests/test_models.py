"""Pose encoder, part embeddings, save/load, PretrainModel (CPU, tiny sizes)."""
from __future__ import annotations

import os

import pytest
import torch

from slpfast.layouts import NUM_JOINTS, PART_SLICES
from slpfast.models import PartEmbedding, PoseEncoder, PoseEncoderConfig, PretrainModel, TextFeatures
from slpfast.models.masking import sample_joint_mask

CFG = PoseEncoderConfig(size="tiny", dim=32, heads=2, manual_layers=2, non_manual_layers=1, attn_backend="eager")


def _batch(B=3, T=13, C=2, lengths=(13, 7, 1)):
    pose = torch.randn(B, T, NUM_JOINTS, C)
    conf = torch.rand(B, T, NUM_JOINTS)
    return pose, conf, torch.tensor(lengths)


def test_encoder_shapes_and_padding_is_zero_and_inert():
    enc = PoseEncoder(CFG)
    pose, conf, lens = _batch()
    out = enc(pose, conf, lens)
    assert out.frames.shape == (3, 13, 32) and out.pooled.shape == (3, 32)
    assert out.frames[1, 7:].abs().max() == 0 and out.frames[2, 1:].abs().max() == 0
    # garbage past each length changes nothing, and gets no gradient
    pose2, conf2 = pose.clone(), conf.clone()
    pose2[1, 7:] = 1e3 * torch.randn_like(pose2[1, 7:])
    conf2[2, 1:] = 1.0
    pose2.requires_grad_(True)
    out2 = enc(pose2, conf2, lens)
    torch.testing.assert_close(out2.frames, out.frames)
    torch.testing.assert_close(out2.pooled, out.pooled)
    out2.pooled.sum().backward()
    assert pose2.grad[1, 7:].abs().max() == 0 and pose2.grad[0].abs().max() > 0
    # pooled is the mean of the valid frames
    torch.testing.assert_close(out.pooled[1], out.frames[1, :7].mean(0))


def test_encoder_packed_matches_padded():
    enc = PoseEncoder(CFG)
    pose, conf, lens = _batch(lengths=(13, 0, 5))
    pad = enc(pose, conf, lens)
    valid = torch.arange(13) < lens[:, None]
    cu = torch.tensor([0, 13, 13, 18], dtype=torch.int32)
    packed = enc(pose[valid], conf[valid], cu_seqlens=cu, max_seqlen=13)
    torch.testing.assert_close(packed.frames, pad.frames[valid], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(packed.pooled, pad.pooled, atol=2e-5, rtol=1e-4)
    assert torch.all(pad.pooled[1] == 0)  # empty clip -> zeros, not NaN


def test_hands_share_weights_with_left_mirrored():
    emb = PartEmbedding(16, coord_dims=2)
    with torch.no_grad():
        emb.part_type.zero_()
    pose = torch.randn(4, NUM_JOINTS, 2)
    conf = torch.rand(4, NUM_JOINTS)
    lh, rh = PART_SLICES["left_hand"], PART_SLICES["right_hand"]
    pose[:, lh] = pose[:, rh] * torch.tensor([-1.0, 1.0])  # left = mirror image of right
    conf[:, lh] = conf[:, rh]
    tok = emb(pose, conf)
    torch.testing.assert_close(tok[:, 1], tok[:, 2])
    assert not torch.allclose(tok[:, 1], tok[:, 0])


def test_masked_joints_hide_their_coordinates():
    enc = PoseEncoder(CFG)
    pose, conf, lens = _batch()
    mask = sample_joint_mask(lens, 13, strategy="joints", ratio=0.5, generator=torch.Generator().manual_seed(1))
    a = enc(pose, conf, lens, joint_mask=mask).frames
    pose2 = torch.where(mask.unsqueeze(-1), torch.randn_like(pose), pose)
    b = enc(pose2, conf, lens, joint_mask=mask).frames
    torch.testing.assert_close(a, b)
    c = enc(pose, conf, lens).frames  # without the mask the same input reads differently
    assert (a - c).abs().max() > 1e-3


def test_save_and_from_pretrained_round_trip(tmp_path):
    enc = PoseEncoder(CFG)
    path = str(tmp_path / "enc.safetensors")
    old_umask = os.umask(0o022)
    try:
        enc.save_pretrained(path)
    finally:
        os.umask(old_umask)
    # the most shared artefact of a run: readable as the umask says (safetensors' save_file: 0600)
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["enc.safetensors"]  # no temp file left
    back = PoseEncoder.from_pretrained(path)
    assert back.config == enc.config.resolved()
    pose, conf, lens = _batch()
    torch.testing.assert_close(back(pose, conf, lens).pooled, enc(pose, conf, lens).pooled)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="slpfast_encoder_config"):
        PoseEncoder.from_pretrained(str(tmp_path / "other.safetensors"))


def test_sizes_and_config_errors():
    base = PoseEncoderConfig(size="base").resolved()
    assert (base.dim, base.manual_layers, base.non_manual_layers, base.heads) == (512, 6, 6, 8)
    with pytest.raises(ValueError, match="model.size"):
        PoseEncoderConfig(size="huge").resolved()
    with pytest.raises(ValueError, match="divisible"):
        PoseEncoderConfig(dim=30, heads=4).resolved()
    enc = PoseEncoder(CFG)
    pose, conf, lens = _batch()
    with pytest.raises(ValueError, match="exactly one"):
        enc(pose, conf)
    with pytest.raises(ValueError, match="lengths"):
        enc(pose, conf, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="pose must be"):
        enc(pose[..., :100, :], conf[..., :100], lens)
    with pytest.raises(TypeError, match="lengths must be a torch.Tensor, got list"):
        enc(pose, conf, lens.tolist())
    with pytest.raises(TypeError, match="pose must be a torch.Tensor"):
        enc(pose.numpy(), conf, lens)
    with pytest.raises(ValueError, match="joint_mask must be a bool tensor"):
        enc(pose, conf, lens, joint_mask=torch.zeros(conf.shape))


def test_pretrain_model_losses_and_gradients():
    torch.manual_seed(0)
    model = PretrainModel(CFG, text_dim=24, proj_dim=16, fg_weight=0.5, contrastive_backend="eager")
    pose, conf, lens = _batch(C=3)
    mask = sample_joint_mask(lens, 13, generator=torch.Generator().manual_seed(0))
    text = TextFeatures(torch.randn(3, 24), torch.randn(3, 5, 24), torch.tensor([5, 2, 1]))
    out = model(pose, conf, lens, joint_mask=mask, text=text)
    assert set(out) == {"loss", "mpm", "nce", "fg"}
    expected = out["mpm"] + out["nce"] + 0.5 * out["fg"]
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    with pytest.raises(ValueError, match="joint_mask"):
        model(pose, conf, lens, text=text)


def test_pretrain_model_packed_equals_padded():
    torch.manual_seed(0)
    model = PretrainModel(CFG, text_dim=24, proj_dim=16, fg_weight=0.5, contrastive_backend="eager")
    pose, conf, lens = _batch(C=3, lengths=(13, 4, 9))
    mask = sample_joint_mask(lens, 13, generator=torch.Generator().manual_seed(0))
    text = TextFeatures(torch.randn(3, 24), torch.randn(3, 5, 24), torch.tensor([5, 2, 1]))
    pad = model(pose, conf, lens, joint_mask=mask, text=text)
    valid = torch.arange(13) < lens[:, None]
    cu = torch.tensor([0, 13, 17, 26], dtype=torch.int32)
    packed = model(pose[valid], conf[valid], lens, cu_seqlens=cu, max_seqlen=13, joint_mask=mask[valid], text=text)
    for k in pad:
        torch.testing.assert_close(packed[k], pad[k], atol=1e-5, rtol=1e-5)


def test_nan_at_hidden_or_unseen_joints_does_not_leak():
    """NaN coordinates at joints with confidence 0 (raw MediaPipe output) or hidden by the MPM mask
    made every output NaN (0 * NaN); they must read exactly like 0 there, forward and backward."""
    enc = PoseEncoder(CFG)
    pose, conf, lens = _batch()
    conf[:, :, PART_SLICES["left_hand"]] = 0.0
    mask = sample_joint_mask(lens, 13, strategy="joints", ratio=0.5, generator=torch.Generator().manual_seed(2))
    hidden = (conf == 0) | mask
    pose_nan = torch.where(hidden.unsqueeze(-1), torch.full_like(pose, float("nan")), pose).requires_grad_(True)
    out = enc(pose_nan, conf, lens, joint_mask=mask)
    ref = enc(torch.where(hidden.unsqueeze(-1), torch.zeros_like(pose), pose), conf, lens, joint_mask=mask)
    assert torch.isfinite(out.frames).all() and torch.isfinite(out.pooled).all()
    torch.testing.assert_close(out.frames, ref.frames)
    out.pooled.sum().backward()
    assert torch.isfinite(pose_nan.grad).all() and (pose_nan.grad[hidden] == 0).all()


def test_float16_input_into_float32_model():
    """float16 pose (the store's dtype) raised a raw 'm1 and m2 must have the same dtype' from a matmul."""
    enc = PoseEncoder(CFG)
    pose, conf, lens = _batch()
    pose16, conf16 = pose.half(), conf.half()
    out = enc(pose16, conf16, lens)
    torch.testing.assert_close(out.pooled, enc(pose16.float(), conf16.float(), lens).pooled)
    with pytest.raises(ValueError, match="PartEmbedding: pose and conf must be floating point"):
        enc(pose.long(), conf, lens)


def test_from_pretrained_bad_files(tmp_path):
    """A missing, truncated or foreign file raised FileNotFoundError / SafetensorError / OSError
    ('No such device' for a directory); weights of another shape a raw load_state_dict error."""
    enc = PoseEncoder(CFG)
    path = str(tmp_path / "enc.safetensors")
    enc.save_pretrained(path)
    (tmp_path / "trunc.safetensors").write_bytes(open(path, "rb").read()[:200])
    (tmp_path / "notes.txt").write_text("hello")
    for bad, match in ((tmp_path / "missing.safetensors", "is not a file"), (tmp_path, "is not a file"),
                       (tmp_path / "trunc.safetensors", "not a readable safetensors file"),
                       (tmp_path / "notes.txt", "not a readable safetensors file")):
        with pytest.raises(ValueError, match=f"PoseEncoder.from_pretrained: .*{match}"):
            PoseEncoder.from_pretrained(str(bad))
    from safetensors.torch import load_file, save_file
    import json as _json

    state = load_file(path)
    meta = {"slpfast_encoder_config": _json.dumps({**_json.loads(_json.dumps(vars(enc.config))), "dim": 64})}
    save_file(state, str(tmp_path / "mismatch.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="do not fit a PoseEncoder"):
        PoseEncoder.from_pretrained(str(tmp_path / "mismatch.safetensors"))


def test_nan_or_inf_past_the_lengths_never_reach_the_output():
    """'Padded frames come out exactly 0 and never influence valid frames': NaN / inf padding
    (MediaPipe writes NaN where it found nothing) used to make the padding rows and the pooled
    embedding NaN (0 * NaN)."""
    enc = PoseEncoder(CFG)
    B, T = 2, 6
    pose, conf = torch.randn(B, T, NUM_JOINTS, 2), torch.rand(B, T, NUM_JOINTS)
    lens = torch.tensor([6, 3])
    ref = enc(pose, conf, lens)
    for what in ("pose", "conf"):
        for bad in (float("nan"), float("inf")):
            p, c = pose.clone(), conf.clone()
            (p if what == "pose" else c)[1, 3:] = bad
            p.requires_grad_(True)
            out = enc(p, c, lens)
            assert torch.equal(out.frames[1, 3:], torch.zeros_like(out.frames[1, 3:])), (what, bad)
            torch.testing.assert_close(out.pooled, ref.pooled)
            out.pooled.sum().backward()
            assert torch.isfinite(p.grad).all()
            assert all(torch.isfinite(q.grad).all() for q in enc.parameters() if q.grad is not None)
            enc.zero_grad()
    # inside the lengths a non-finite confidence is a missing joint, as in the pose ops
    c = conf.clone()
    c[0, 2, 5] = float("nan")
    c0 = conf.clone()
    c0[0, 2, 5] = 0.0
    torch.testing.assert_close(enc(pose, c, lens).frames, enc(pose, c0, lens).frames)


def test_packed_clips_longer_than_max_frames_are_refused():
    enc = PoseEncoder(PoseEncoderConfig(size="tiny", dim=32, heads=2, max_frames=8, attn_backend="eager"))
    pose, conf = torch.randn(12, NUM_JOINTS, 2), torch.rand(12, NUM_JOINTS)
    with pytest.raises(ValueError, match="a packed clip of 12 frames exceeds model.max_frames=8"):
        enc(pose, conf, cu_seqlens=torch.tensor([0, 12]))
    enc(pose, conf, cu_seqlens=torch.tensor([0, 8, 12]))  # 8 + 4: fine


@pytest.mark.parametrize("cu, match", [([0, 4, 3], "non-decreasing"), ([1, 3], r"\[0\] must be 0"),
                                       ([0, 2], r"\[-1\] must equal the number of packed rows 3"),
                                       ([[0, 3]], "1 dims")])
def test_bad_packed_offsets_are_refused_before_they_are_used(cu, match):
    """A decreasing cu_seqlens ([0, 4, 3]: lengths 4 and -1, summing to the 3 rows) reached
    repeat_interleave(..., output_size=total), which wrote past its buffer before refusing the
    negative count: a corrupted heap ('free(): invalid pointer') that killed the process later;
    cu_seqlens[0] != 0 gave a raw 'allocated size does not match required size'."""
    enc = PoseEncoder(CFG)
    pose, conf = torch.randn(3, NUM_JOINTS, 2), torch.rand(3, NUM_JOINTS)
    with pytest.raises(ValueError, match=f"PoseEncoder: cu_seqlens.*{match}"):
        enc(pose, conf, cu_seqlens=torch.tensor(cu))


def test_mpm_loss_never_scores_padding_whatever_the_mask_holds_there():
    """A joint_mask True past the lengths (a caller's own mask, not sample_joint_mask's) made the
    MPM loss score the decoder against the padding's garbage: 1.70 -> 80.8 with padding of 100."""
    torch.manual_seed(0)
    model = PretrainModel(CFG, text_dim=8, proj_dim=8, nce_weight=0.0)
    pose, conf, lens = _batch(B=2, T=6, lengths=(6, 3))
    mask = sample_joint_mask(lens, 6, strategy="joints", generator=torch.Generator().manual_seed(0))
    ref = model(pose, conf, lens, joint_mask=mask)["mpm"]
    over = mask.clone()
    over[1, 3:] = True
    garbage = pose.clone()
    garbage[1, 3:] = 100.0
    torch.testing.assert_close(model(garbage, conf, lens, joint_mask=over)["mpm"], ref)


@pytest.mark.parametrize("field, value, match", [
    ("heads", "2", "model.heads must be an int, got str '2'"),
    ("max_frames", 10.5, "model.max_frames must be an int, got float 10.5"),
    ("dim", True, "model.dim must be an int, got bool True"),
    ("mlp_ratio", float("nan"), "model.mlp_ratio must be a finite number, got float nan"),
    ("mlp_ratio", 0.001, "model.mlp_ratio must make the MLP at least 1 wide"),
    ("mlp_ratio", -1.0, "model.mlp_ratio must make the MLP at least 1 wide"),
    ("dropout", "0.1", "model.dropout must be a finite number, got str"),
])
def test_config_errors_name_the_field(field, value, match):
    """heads='2' raised "'<=' not supported between instances of 'str' and 'int'", max_frames=10.5
    a raw error from nn.Embedding, mlp_ratio=nan "cannot convert float NaN to integer", and
    mlp_ratio=0.001 silently built blocks whose MLP is 0 wide (a constant bias)."""
    with pytest.raises(ValueError, match=match):
        PoseEncoderConfig(size="tiny", **{field: value}).resolved()


def test_packed_finegrained_takes_the_frames_the_offsets_hold():
    """In the packed form the token-level term took its valid frames from ``lengths``: one that
    disagreed with cu_seqlens counted the unpacked padding as frames (or dropped frames)."""
    torch.manual_seed(0)
    model = PretrainModel(CFG, text_dim=8, proj_dim=8, mpm_weight=0.0, nce_weight=0.0, fg_weight=1.0)
    pose, conf, lens = _batch(B=3, T=6, lengths=(6, 2, 4))
    valid = torch.arange(6) < lens[:, None]
    cu = torch.tensor([0, 6, 8, 12], dtype=torch.int32)
    text = TextFeatures(torch.randn(3, 8), torch.randn(3, 4, 8), torch.tensor([4, 2, 3]))
    ref = model(pose, conf, lens, text=text)["fg"]
    for wrong in (torch.tensor([6, 6, 6]), torch.tensor([1, 1, 1])):
        got = model(pose[valid], conf[valid], wrong, cu_seqlens=cu, max_seqlen=6, text=text)["fg"]
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_part_embedding_joint_mask_must_be_bool():
    """A float or int joint_mask raised "~ (operator.invert) is only implemented on integer and
    Boolean-type tensors" (float) or a torch.where dtype error (int 0/1: ~1 is -2, not False)."""
    emb = PartEmbedding(8)
    pose, conf = torch.randn(2, NUM_JOINTS, 2), torch.rand(2, NUM_JOINTS)
    for bad in (torch.zeros(2, NUM_JOINTS), torch.zeros(2, NUM_JOINTS, dtype=torch.int64)):
        with pytest.raises(ValueError, match=r"PartEmbedding: joint_mask must be bool \(2, 123\)"):
            emb(pose, conf, bad)
    with pytest.raises(ValueError, match="PartEmbedding: joint_mask must be bool"):
        emb(pose, conf, torch.zeros(2, 5, dtype=torch.bool))
