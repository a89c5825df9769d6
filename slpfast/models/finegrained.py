"""Fine-grained sign-text term: sign frames against text tokens, both directions.

For sign clip i with frames f_i (T_i, E) and text j with tokens w_j (L_j, E) (all L2-normalized),
the token-frame similarities are s_tl = f_i[t] . w_j[l]. Then

- text -> sign: every token takes its best-matching frame, m_l = max_t s_tl, and the tokens are
  averaged with softmax weights softmax_l(m_l / tau): tokens that find a clear match count more
  (a soft version of "the words that are actually signed");
- sign -> text: symmetric, m_t = max_l s_tl, weights softmax_t(m_t / tau).

score(i, j) is the mean of the two, and the loss is the symmetric cross-entropy of
``logit_scale * score`` with the matching pairs on the diagonal (as in the global InfoNCE).
The term is computed over the local batch only: it needs the frames and tokens of every pair,
which are too large to all-gather.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_NEG = -1e4  # "minus infinity" that stays finite in bf16/fp16 and after * 0


def _weighted_max(sim: torch.Tensor, valid_a: torch.Tensor, valid_b: torch.Tensor, tau: float) -> torch.Tensor:
    """sim (Ni, Nj, A, Bn); valid_a (Ni|Nj...) broadcastable to (Ni,Nj,A), valid_b to (Ni,Nj,Bn).

    For each a: max over valid b, then softmax(./tau)-weighted mean over valid a. -> (Ni, Nj)
    """
    m = sim.masked_fill(~valid_b.unsqueeze(-2), _NEG).amax(-1)  # (Ni,Nj,A)
    any_b = valid_b.any(-1, keepdim=True)  # (Ni|1, Nj|1, 1)
    m = torch.where(valid_a & any_b, m, torch.zeros_like(m))
    logits = (m / tau).masked_fill(~valid_a, _NEG)
    w = torch.softmax(logits, dim=-1) * valid_a.to(m.dtype)  # all-invalid rows -> weights 0
    return (w * m).sum(-1)


def finegrained_scores(frames: torch.Tensor, frame_lengths: torch.Tensor, tokens: torch.Tensor,
                       token_lengths: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Pairwise fine-grained similarity.

    Args:
        frames: (N, T, E) L2-normalized sign frame embeddings (padded).
        frame_lengths: (N,) valid frames per clip.
        tokens: (N, L, E) L2-normalized text token embeddings (padded).
        token_lengths: (N,) valid tokens per text.
        tau: temperature of the softmax weighting.

    Returns:
        (N, N) scores, [i, j] = sign i against text j, in [-1, 1].
    """
    N, T, _ = frames.shape
    if tokens.dim() != 3 or tokens.shape[0] != N or tokens.shape[-1] != frames.shape[-1]:
        raise ValueError(f"finegrained_scores: tokens must be (N={N}, L, E={frames.shape[-1]}), got {tuple(tokens.shape)}")
    if frame_lengths.shape != (N,) or token_lengths.shape != (N,):
        raise ValueError(f"finegrained_scores: frame_lengths {tuple(frame_lengths.shape)} and token_lengths "
                         f"{tuple(token_lengths.shape)} must be (N,)=({N},)")
    if tau <= 0:
        raise ValueError(f"finegrained_scores: tau must be > 0, got {tau}")
    L = tokens.shape[1]
    fv = torch.arange(T, device=frames.device) < frame_lengths.to(frames.device).unsqueeze(1)  # (N,T)
    tv = torch.arange(L, device=frames.device) < token_lengths.to(frames.device).unsqueeze(1)  # (N,L)
    sim = torch.einsum("ite,jle->ijtl", frames, tokens)  # (N,N,T,L)
    # sign -> text: per frame t of sign i, best token of text j
    s2t = _weighted_max(sim, fv[:, None, :], tv[None, :, :], tau)
    # text -> sign: per token l of text j, best frame of sign i
    t2s = _weighted_max(sim.transpose(-1, -2), tv[None, :, :], fv[:, None, :], tau)
    return 0.5 * (s2t + t2s)


def finegrained_loss(frames, frame_lengths, tokens, token_lengths, logit_scale: torch.Tensor,
                     tau: float = 0.1) -> torch.Tensor:
    """Symmetric cross-entropy over :func:`finegrained_scores` scaled by ``logit_scale`` (scalar)."""
    scores = finegrained_scores(frames, frame_lengths, tokens, token_lengths, tau).float() * logit_scale.float()
    labels = torch.arange(scores.shape[0], device=scores.device)
    return 0.5 * (F.cross_entropy(scores, labels) + F.cross_entropy(scores.t(), labels))
