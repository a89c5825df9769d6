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

Memory: the similarities of all pairs are an (N, N, T, L) tensor (N=256 clips of T=256 frames
against L=32 tokens: 2 GiB in fp32, several times that with the masked copies autograd keeps).
Above ``max_elements`` the texts are taken in column blocks, each under activation
checkpointing, so that one block's similarities are alive at a time, in the forward and in the
backward (which recomputes each block once: ~1.5x the term's compute for a bounded footprint).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

_NEG = -1e4  # "minus infinity" that stays finite in bf16/fp16 and after * 0
MAX_ELEMENTS = 1 << 25  # similarities alive at once (128 MiB in fp32) before texts go in blocks


def _weighted_max(sim: torch.Tensor, valid_a: torch.Tensor, valid_b: torch.Tensor, tau: float) -> torch.Tensor:
    """sim (Ni, Nj, A, Bn); valid_a (Ni|Nj...) broadcastable to (Ni,Nj,A), valid_b to (Ni,Nj,Bn).

    For each a: max over valid b, then softmax(./tau)-weighted mean over valid a. -> (Ni, Nj)
    """
    sim = sim.masked_fill(~valid_b.unsqueeze(-2), _NEG)
    # amax refuses an empty axis (a batch of empty clips pads to T = 0; texts to L = 0): then no
    # b is valid and m becomes 0 below; the sum keeps m in the graph (every parameter of the
    # projections still gets a gradient, 0, as DDP expects)
    m = sim.amax(-1) if sim.shape[-1] else sim.sum(-1)  # (Ni,Nj,A)
    any_b = valid_b.any(-1, keepdim=True)  # (Ni|1, Nj|1, 1)
    m = torch.where(valid_a & any_b, m, torch.zeros_like(m))
    logits = (m / tau).masked_fill(~valid_a, _NEG)
    w = torch.softmax(logits, dim=-1) * valid_a.to(m.dtype)  # all-invalid rows -> weights 0
    return (w * m).sum(-1)


def finegrained_scores(frames: torch.Tensor, frame_lengths: torch.Tensor, tokens: torch.Tensor,
                       token_lengths: torch.Tensor, tau: float = 0.1, max_elements: int = MAX_ELEMENTS) -> torch.Tensor:
    """Pairwise fine-grained similarity.

    Args:
        frames: (N, T, E) L2-normalized sign frame embeddings (padded).
        frame_lengths: (N,) valid frames per clip.
        tokens: (N, L, E) L2-normalized text token embeddings (padded).
        token_lengths: (N,) valid tokens per text.
        tau: temperature of the softmax weighting.
        max_elements: most similarities (N x M x T x L) computed at once; more go in column blocks
            of M texts, each recomputed in the backward (the same values and gradients in fp32;
            under bf16 autocast each block's gradient is rounded before they are summed).

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
    if max_elements < 1:
        raise ValueError(f"finegrained_scores: max_elements must be >= 1, got {max_elements}")
    L = tokens.shape[1]
    fv = torch.arange(T, device=frames.device) < frame_lengths.to(frames.device).unsqueeze(1)  # (N,T)
    tv = torch.arange(L, device=frames.device) < token_lengths.to(frames.device).unsqueeze(1)  # (N,L)
    cols = max(1, max_elements // max(1, N * T * L))  # texts per block
    if cols >= N:
        return _scores_block(frames, fv, tokens, tv, tau)
    recompute = torch.is_grad_enabled() and (frames.requires_grad or tokens.requires_grad)
    blocks = []
    for j in range(0, N, cols):
        args = (frames, fv, tokens[j:j + cols], tv[j:j + cols], tau)
        blocks.append(checkpoint(_scores_block, *args, use_reentrant=False) if recompute else _scores_block(*args))
    return torch.cat(blocks, dim=1)


def _scores_block(frames: torch.Tensor, fv: torch.Tensor, tokens: torch.Tensor, tv: torch.Tensor,
                  tau: float) -> torch.Tensor:
    """Scores of every sign against a block of M texts.

    frames (N, T, E), fv (N, T) valid frames; tokens (M, L, E), tv (M, L) valid tokens -> (N, M).
    """
    sim = torch.einsum("ite,jle->ijtl", frames, tokens)  # (N,M,T,L)
    # sign -> text: per frame t of sign i, best token of text j
    s2t = _weighted_max(sim, fv[:, None, :], tv[None, :, :], tau)
    # text -> sign: per token l of text j, best frame of sign i
    t2s = _weighted_max(sim.transpose(-1, -2), tv[None, :, :], fv[:, None, :], tau)
    return 0.5 * (s2t + t2s)


def finegrained_loss(frames, frame_lengths, tokens, token_lengths, logit_scale: torch.Tensor,
                     tau: float = 0.1, max_elements: int = MAX_ELEMENTS) -> torch.Tensor:
    """Symmetric cross-entropy over :func:`finegrained_scores` scaled by ``logit_scale`` (scalar)."""
    scores = finegrained_scores(frames, frame_lengths, tokens, token_lengths, tau, max_elements).float()
    scores = scores * logit_scale.float()
    labels = torch.arange(scores.shape[0], device=scores.device)
    return 0.5 * (F.cross_entropy(scores, labels) + F.cross_entropy(scores.t(), labels))
