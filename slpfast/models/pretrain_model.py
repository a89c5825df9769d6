"""The pre-training model: pose encoder + MPM decoder + sign-text heads, returning its losses.

One encoder pass per step on the MPM-masked pose serves both objectives (as FLIP trains CLIP
on masked images): the MPM decoder reconstructs the hidden joints from the per-frame
features, and the pooled clip embedding is contrasted with the text. This halves the encoder
cost of running a separate unmasked pass.

Text comes in as :class:`~slpfast.models.text_encoder.TextFeatures` from a frozen encoder
(computed or cached outside this module, so DDP never sees its weights), or as raw strings
when the model owns a trainable :class:`~slpfast.models.text_encoder.SmallTextEncoder`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slpfast.models.encoder import PoseEncoder, PoseEncoderConfig
from slpfast.models.finegrained import finegrained_loss
from slpfast.models.mpm import MPMDecoder, mpm_loss
from slpfast.models.text_encoder import TextFeatures


class PretrainModel(nn.Module):
    """Pose encoder and the heads of both pre-training objectives.

    Args:
        model_cfg: :class:`PoseEncoderConfig`.
        text_dim: width of the text features D_text.
        proj_dim: joint embedding width E.
        mpm_weight, nce_weight, fg_weight: loss weights (0 removes the term and its head).
        mpm_loss_kind, mpm_beta: reconstruction loss (see :func:`slpfast.models.mpm.mpm_loss`).
        fg_tau: softmax temperature of the fine-grained term.
        init_temperature, contrastive_backend: for :class:`slpfast.nn.ContrastiveLoss`.
        text_encoder: a trainable text encoder owned (and trained) by this model, or None.
    """

    def __init__(self, model_cfg: PoseEncoderConfig, *, text_dim: int, proj_dim: int = 128,
                 mpm_weight: float = 1.0, nce_weight: float = 1.0, fg_weight: float = 0.0,
                 mpm_loss_kind: str = "smooth_l1", mpm_beta: float = 0.05, fg_tau: float = 0.1,
                 init_temperature: float = 0.07, contrastive_backend: str = "auto",
                 text_encoder: nn.Module | None = None):
        super().__init__()
        from slpfast.nn import ContrastiveLoss

        self.encoder = PoseEncoder(model_cfg)
        d = self.encoder.dim
        self.coord_dims = self.encoder.config.coord_dims
        self.weights = {"mpm": float(mpm_weight), "nce": float(nce_weight), "fg": float(fg_weight)}
        self.mpm_loss_kind, self.mpm_beta, self.fg_tau = mpm_loss_kind, mpm_beta, fg_tau
        self.decoder = MPMDecoder(d, self.coord_dims) if mpm_weight > 0 else None
        # Joints that normalization takes relative to themselves (each hand's wrist, the face's
        # nose tip) are always 0 (plus augmentation jitter) in the model's input: they are not
        # reconstruction targets (they only diluted the loss with constants and noise).
        from slpfast.reference.pose import canonical_spec

        anchor = torch.as_tensor(canonical_spec().anchor)
        self.register_buffer("_mpm_targets", anchor != torch.arange(anchor.numel()), persistent=False)
        if self.decoder is None:
            # Without MPM no joint is ever hidden, so the mask tokens get no gradient; frozen,
            # DDP does not wait for them (it fails its second step on parameters that never
            # receive a gradient) and AdamW does not carry state for them.
            self.encoder.parts.mask_token.requires_grad_(False)
        self.text_encoder = text_encoder
        uses_text = nce_weight > 0 or fg_weight > 0
        if uses_text:
            # Both terms share one learnable temperature (logit scale).
            self.contrastive = ContrastiveLoss(init_temperature, backend=contrastive_backend)
        if nce_weight > 0:
            self.sign_proj = nn.Linear(d, proj_dim)
            self.text_proj = nn.Linear(text_dim, proj_dim)
        if fg_weight > 0:
            self.frame_proj = nn.Linear(d, proj_dim)
            self.token_proj = nn.Linear(text_dim, proj_dim)

    def forward(self, pose: torch.Tensor, conf: torch.Tensor, lengths: torch.Tensor, *,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                joint_mask: torch.Tensor | None = None, text: TextFeatures | None = None,
                texts: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch.

        Args:
            pose: (B, T, J, C>=coord_dims) normalized (and augmented) pose, or packed
                (total, J, C) with ``cu_seqlens``; the MPM target.
            conf: (B, T, J) or packed (total, J) confidences.
            lengths: (B,) valid frames of the padded form (the packed form takes its frames
                from ``cu_seqlens`` and does not read it).
            cu_seqlens, max_seqlen: the packed form's (B+1,) offsets and longest clip (host int).
            joint_mask: bool shaped like conf, True = hidden from the encoder (required when MPM is on);
                past each clip's length it is ignored (padding is never a reconstruction target).
            text: cached/frozen text features, or None to encode ``texts`` with the owned encoder.
            texts: raw strings (B,), used with an owned trainable text encoder.

        Returns:
            dict with the weighted sum ``loss`` and each active unweighted term (``mpm``, ``nce``, ``fg``).
        """
        pose = pose[..., : self.coord_dims]
        if self.decoder is not None and joint_mask is None:
            raise ValueError("PretrainModel: joint_mask is required when the MPM loss is on")
        if cu_seqlens is not None:
            out = self.encoder(pose, conf, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, joint_mask=joint_mask)
        else:
            out = self.encoder(pose, conf, lengths, joint_mask=joint_mask)
        terms: dict[str, torch.Tensor] = {}
        if self.decoder is not None:
            pred = self.decoder(out.frames)
            targets = joint_mask & self._mpm_targets  # (B, T, J) or packed (total, J)
            if cu_seqlens is None:
                # padding is never a target, whatever the caller's mask holds there (the encoder
                # ignores it; the loss would score the decoder against the padding's garbage)
                valid = torch.arange(pose.shape[1], device=pose.device) < lengths.to(pose.device).unsqueeze(1)
                targets = targets & valid.unsqueeze(-1)
            terms["mpm"] = mpm_loss(pred, pose, conf, targets, kind=self.mpm_loss_kind, beta=self.mpm_beta)
        if self.weights["nce"] > 0 or self.weights["fg"] > 0:
            if text is None:
                if self.text_encoder is None or texts is None:
                    raise ValueError("PretrainModel: pass text features, or texts with a trainable text encoder")
                text = self.text_encoder(texts)
            if self.weights["nce"] > 0:
                sign = F.normalize(self.sign_proj(out.pooled).float(), dim=-1)
                txt = F.normalize(self.text_proj(text.pooled.to(out.pooled.dtype)).float(), dim=-1)
                terms["nce"] = self.contrastive(sign, txt)
            if self.weights["fg"] > 0:
                frames, frame_lengths = out.frames, lengths
                if cu_seqlens is not None:  # the token-level term works on padded frames
                    from slpfast.ops import unpack_packed
                    from slpfast.ops.packing import unpack_rows

                    # a caller that passes max_seqlen vouches for cu_seqlens (as masked_attention
                    # takes them): on a GPU they are then not read back to be checked
                    trusted = max_seqlen is not None and cu_seqlens.device.type != "cpu"
                    frames = (unpack_rows if trusted else unpack_packed)(frames, cu_seqlens, max_seqlen)
                    # the valid frames are those the offsets unpacked (a lengths that disagrees with
                    # them would count padding as frames, or drop frames): taken from them, no read
                    frame_lengths = cu_seqlens[1:] - cu_seqlens[:-1]
                frames = F.normalize(self.frame_proj(frames).float(), dim=-1)
                tokens = F.normalize(self.token_proj(text.tokens.to(out.frames.dtype)).float(), dim=-1)
                terms["fg"] = finegrained_loss(frames, frame_lengths, tokens, text.lengths, self.contrastive.scale,
                                               tau=self.fg_tau)
        total = sum(self.weights[k] * v.float() for k, v in terms.items())
        return {"loss": total, **terms}
