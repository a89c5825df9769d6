"""The plain-PyTorch baseline of ``bench/train_step.py``: what a research repo would do.

Same model and objectives as slpfast's pre-training, with three things swapped:

- attention: ``nn.MultiheadAttention`` with ``key_padding_mask`` (instead of
  ``slpfast.nn.MaskedSelfAttention``);
- contrastive loss: the naive N x N logits over the all-gathered batch with ``F.cross_entropy``
  (instead of ``slpfast.ops.contrastive_loss``);
- data: one clip at a time from the store, normalized and augmented in numpy inside
  ``DataLoader`` workers, then padded by ``collate`` (instead of the batched loader +
  ``normalize_pose`` / ``augment_pose`` custom ops).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slpfast.layouts import LEFT_SHOULDER, PART_SLICES, RIGHT_SHOULDER, flip_permutation


class MHAAttention(nn.Module):
    """Drop-in for MaskedSelfAttention(x (B,T,D), seq_lens) on top of nn.MultiheadAttention."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x, seq_lens=None, **_):
        mask = None
        if seq_lens is not None:
            mask = torch.arange(x.shape[1], device=x.device)[None, :] >= seq_lens.to(x.device)[:, None]
        out, _ = self.mha(x, x, x, key_padding_mask=mask, need_weights=False)
        return out


class NaiveContrastive(nn.Module):
    """CLIP loss with the full N x N logits (all-gathered without gradient for the others' rows)."""

    def __init__(self, log_scale: torch.Tensor):
        super().__init__()
        self.log_scale = nn.Parameter(log_scale.detach().clone())

    @property
    def scale(self):
        return self.log_scale.exp().clamp(max=100.0)

    def forward(self, sign, text):
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            ws, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
            gs = [torch.zeros_like(sign) for _ in range(ws)]
            gt = [torch.zeros_like(text) for _ in range(ws)]
            torch.distributed.all_gather(gs, sign)
            torch.distributed.all_gather(gt, text)
            gs[rank], gt[rank] = sign, text
            sign, text = torch.cat(gs), torch.cat(gt)
        logits = self.scale * sign @ text.t()
        labels = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def to_baseline(model: nn.Module) -> nn.Module:
    """Swap every MaskedSelfAttention for MHAAttention and the contrastive loss for the naive one."""
    from slpfast.models.encoder import Block

    for m in model.modules():
        if isinstance(m, Block):
            m.attn = MHAAttention(m.attn.dim, m.attn.num_heads).to(next(m.parameters()).device)
    if hasattr(model, "contrastive"):
        model.contrastive = NaiveContrastive(model.contrastive.log_scale)
    return model


# ----------------------------------------------------------------------------- numpy data path
_FLIP = flip_permutation()


def np_normalize(pose: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """Per-clip shoulder normalization + wrist-relative hands, in numpy (T, J, C)."""
    ls, rs = pose[:, LEFT_SHOULDER], pose[:, RIGHT_SHOULDER]
    ok = (conf[:, LEFT_SHOULDER] > 0) & (conf[:, RIGHT_SHOULDER] > 0)
    if ok.any():
        center = ((ls[ok] + rs[ok]) / 2).mean(0)
        scale = np.linalg.norm(ls[ok] - rs[ok], axis=-1).mean()
    else:
        center, scale = pose.reshape(-1, pose.shape[-1]).mean(0), 1.0
    out = (pose - center) / max(float(scale), 1e-6)
    for hand in ("left_hand", "right_hand"):
        sl = PART_SLICES[hand]
        out[:, sl] = out[:, sl] - out[:, sl.start: sl.start + 1]
    return out * (conf[..., None] > 0)


def np_augment(pose: np.ndarray, conf: np.ndarray, rng: np.random.Generator):
    """Random rotation / shear / scale / shift, horizontal flip and jitter, per clip in numpy."""
    if rng.random() < 0.5:
        pose = pose[:, _FLIP].copy()
        pose[..., 0] = -pose[..., 0]
        conf = conf[:, _FLIP]
    a = rng.normal(0, 0.1)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    shear = np.array([[1, rng.normal(0, 0.1)], [0, 1]])
    m = rot @ shear * rng.uniform(0.9, 1.1)
    xy = pose[..., :2] @ m.T + rng.normal(0, 0.05, size=2)
    xy = xy + rng.normal(0, 0.005, size=xy.shape)
    pose = np.concatenate([xy, pose[..., 2:]], -1).astype(np.float32)
    return pose, conf


class BaselineDataset(torch.utils.data.Dataset):
    """One clip per __getitem__: read, random crop, numpy normalize + augment, text features."""

    def __init__(self, store, indices, max_frames: int, feature_name: str | None, seed: int = 0):
        self.store, self.indices, self.max_frames = store, np.asarray(indices), max_frames
        self.feature_name, self.seed = feature_name, seed

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        i = int(self.indices[k])
        rng = np.random.default_rng((self.seed, i, torch.utils.data.get_worker_info().id
                                     if torch.utils.data.get_worker_info() else 0))
        clip = self.store.clip(i)
        pose, conf = np.asarray(clip["pose"], np.float32), np.asarray(clip["conf"], np.float32)
        if pose.shape[0] > self.max_frames:
            s = rng.integers(0, pose.shape[0] - self.max_frames + 1)
            pose, conf = pose[s: s + self.max_frames], conf[s: s + self.max_frames]
        pose, conf = np_augment(np_normalize(pose, conf), conf, rng)
        item = {"pose": torch.from_numpy(np.ascontiguousarray(pose)), "conf": torch.from_numpy(np.ascontiguousarray(conf)),
                "clip_id": i, "text": clip["text"]}
        if self.feature_name:
            pooled, toks = self.store.text_features(self.feature_name, [i])
            item["text_features"] = torch.from_numpy(pooled[0])
            item["text_tokens"] = torch.from_numpy(toks[0])
        return item


def baseline_collate(items):
    B, T = len(items), max(it["pose"].shape[0] for it in items)
    J, C = items[0]["pose"].shape[1:]
    pose, conf = torch.zeros(B, T, J, C), torch.zeros(B, T, J)
    for b, it in enumerate(items):
        n = it["pose"].shape[0]
        pose[b, :n], conf[b, :n] = it["pose"], it["conf"]
    out = {"pose": pose, "conf": conf, "lengths": torch.tensor([it["pose"].shape[0] for it in items]),
           "clip_id": torch.tensor([it["clip_id"] for it in items]), "text": [it["text"] for it in items]}
    if "text_features" in items[0]:
        out["text_features"] = torch.stack([it["text_features"] for it in items])
        L = max(it["text_tokens"].shape[0] for it in items)
        toks = torch.zeros(B, L, out["text_features"].shape[1])
        for b, it in enumerate(items):
            toks[b, : it["text_tokens"].shape[0]] = it["text_tokens"]
        out["text_token_features"] = toks
        out["text_token_lengths"] = torch.tensor([it["text_tokens"].shape[0] for it in items])
    return out
