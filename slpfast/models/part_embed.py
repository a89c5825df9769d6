"""Part embeddings: every frame's five canonical parts become one token each.

A frame of the canonical layout (J = 123, see :mod:`slpfast.layouts`) is split into
``body`` (13), ``left_hand`` (21), ``right_hand`` (21), ``face`` (48) and ``mouth`` (20).
Each part is flattened into ``joints x (C + 1)`` input features (the coordinates and the
confidence, both zeroed where the joint is invisible or masked) and embedded by a small
per-part MLP into a D-dimensional token.

The two hands share one MLP. The left hand is mirrored first (x -> -x): after
:func:`slpfast.ops.normalize_pose` each hand is expressed relative to its wrist, so negating x
turns a left hand into the right hand it mirrors, and one set of weights learns one set of
handshapes. A learned per-part type embedding is added afterwards so that the shared weights
still produce distinguishable left and right tokens.

Masked pose modeling hides joints. A hidden joint contributes zero input features, and the
part's learnable mask token, scaled by the fraction of that part's joints that are hidden, is
added to the token: a fully hidden part becomes ``mlp(0) + mask_token[part]``, a partly hidden
one keeps the information of its visible joints.
"""
from __future__ import annotations

import torch
from torch import nn

from slpfast.layouts import NUM_JOINTS, PART_NAMES, PART_SLICES

#: Index of each part's token in the part axis of :class:`PartEmbedding`'s output.
PART_INDEX = {name: i for i, name in enumerate(PART_NAMES)}
NUM_PARTS = len(PART_NAMES)


class _PartMLP(nn.Sequential):
    """Linear -> GELU -> Linear from a part's flattened joint features to one token."""

    def __init__(self, in_features: int, dim: int):
        super().__init__(nn.Linear(in_features, dim), nn.GELU(), nn.Linear(dim, dim))


class PartEmbedding(nn.Module):
    """Embed each frame's canonical parts into tokens.

    Args:
        dim: token width D.
        coord_dims: C, the coordinates per joint (2 for x, y or 3 for x, y, z).

    Forward:
        pose: (..., J, C) float — normalized coordinates; any leading shape, e.g. (B, T) padded
            or (total,) packed.
        conf: (..., J) float — confidence in [0, 1]; 0 means missing.
        joint_mask: optional (..., J) bool — True where the joint is hidden for MPM.

    Returns:
        (..., P, D) tokens with P = 5 in :data:`slpfast.layouts.PART_NAMES` order.
    """

    def __init__(self, dim: int, coord_dims: int = 2):
        super().__init__()
        if coord_dims not in (2, 3):
            raise ValueError(f"PartEmbedding: coord_dims must be 2 or 3, got {coord_dims}")
        self.dim = dim
        self.coord_dims = coord_dims
        feat = coord_dims + 1
        hand = PART_SLICES["left_hand"]
        self.body = _PartMLP((PART_SLICES["body"].stop - PART_SLICES["body"].start) * feat, dim)
        self.hand = _PartMLP((hand.stop - hand.start) * feat, dim)  # shared by both hands
        self.face = _PartMLP((PART_SLICES["face"].stop - PART_SLICES["face"].start) * feat, dim)
        self.mouth = _PartMLP((PART_SLICES["mouth"].stop - PART_SLICES["mouth"].start) * feat, dim)
        self.part_type = nn.Parameter(torch.zeros(NUM_PARTS, dim))
        self.mask_token = nn.Parameter(torch.zeros(NUM_PARTS, dim))
        nn.init.normal_(self.part_type, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        # x-sign per joint: -1 on the left hand (mirror), +1 elsewhere.
        sign = torch.ones(NUM_JOINTS)
        sign[PART_SLICES["left_hand"]] = -1.0
        self.register_buffer("_x_sign", sign, persistent=False)

    def forward(self, pose: torch.Tensor, conf: torch.Tensor, joint_mask: torch.Tensor | None = None) -> torch.Tensor:
        if pose.dim() < 2 or pose.shape[-2] != NUM_JOINTS or pose.shape[-1] != self.coord_dims:
            raise ValueError(f"PartEmbedding: pose must be (..., J={NUM_JOINTS}, C={self.coord_dims}), "
                             f"got {tuple(pose.shape)}")
        if conf.shape != pose.shape[:-1]:
            raise ValueError(f"PartEmbedding: conf must be {tuple(pose.shape[:-1])} like pose without C, "
                             f"got {tuple(conf.shape)}")
        if not pose.is_floating_point() or not (conf.is_floating_point() or conf.dtype == torch.bool):
            raise ValueError(f"PartEmbedding: pose and conf must be floating point, got {pose.dtype} and {conf.dtype}")
        pose = pose.to(self.part_type.dtype)  # e.g. float16 straight from the store into a float32 model
        visible = conf.to(pose.dtype)
        # a non-finite confidence marks a missing joint (as in the pose ops): where, not a product,
        # so that a NaN / inf never reaches the features
        shown = torch.isfinite(visible) & (visible > 0)
        if joint_mask is not None:
            if joint_mask.shape != conf.shape or joint_mask.dtype != torch.bool:
                raise ValueError(f"PartEmbedding: joint_mask must be bool {tuple(conf.shape)} (True: hidden), "
                                 f"got {joint_mask.dtype} {tuple(joint_mask.shape)}")
            shown = shown & ~joint_mask
        visible = torch.where(shown, visible, torch.zeros((), dtype=visible.dtype, device=visible.device))
        # Invisible joints carry no coordinates: their (possibly garbage) values must not leak.
        # torch.where, not a product: 0 * NaN is NaN (MediaPipe writes NaN at joints it did not find)
        coords = torch.where((visible > 0).unsqueeze(-1), pose, torch.zeros((), dtype=pose.dtype, device=pose.device))
        x = coords[..., :1] * self._x_sign.to(pose.dtype).unsqueeze(-1)
        feats = torch.cat([x, coords[..., 1:], visible.unsqueeze(-1)], dim=-1)  # (..., J, C+1)

        def flat(name: str) -> torch.Tensor:
            return feats[..., PART_SLICES[name], :].flatten(-2)

        tokens = torch.stack([
            self.body(flat("body")),
            self.hand(flat("left_hand")),
            self.hand(flat("right_hand")),
            self.face(flat("face")),
            self.mouth(flat("mouth")),
        ], dim=-2)  # (..., P, D)
        tokens = tokens + self.part_type.to(tokens.dtype)
        if joint_mask is not None:
            frac = torch.stack([joint_mask[..., PART_SLICES[n]].to(tokens.dtype).mean(-1) for n in PART_NAMES], dim=-1)
            tokens = tokens + frac.unsqueeze(-1) * self.mask_token.to(tokens.dtype)
        return tokens
