"""CTC decoding: greedy (best path) and prefix beam search.

A CTC output is a per-frame distribution over ``V`` symbols, one of which (``blank``) means
"no output". A label sequence is read off a frame path by collapsing repeats and then removing
blanks ("a a - a b" -> "a a b"). The probability of a label sequence is the sum over all the
frame paths that collapse to it.

- :func:`ctc_greedy_decode` takes the most probable symbol of each frame (best *path*).
- :func:`ctc_beam_decode` is the prefix beam search of Hannun et al. (2014): it keeps the
  ``beam_size`` most probable label *prefixes*, each with two probabilities, of ending in a
  blank (``p_b``) and of ending in its last label (``p_nb``), so that "a - a" (two labels)
  and "a a" (one label) are counted apart. With a beam as large as the number of prefixes
  and no token pruning it returns the exact most probable label sequence, which the tests
  check by enumerating every path.

Inputs may be logits or log-probabilities: a ``log_softmax`` (in float64, on the CPU) is
applied first, which leaves log-probabilities unchanged.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from slpfast.ops._validate import check_lengths, describe, fail

_NEG_INF = -math.inf


def _prepare(op: str, log_probs, lengths, blank: int) -> tuple[np.ndarray, list[int]]:
    """-> float64 log-probabilities (B, T, V) as numpy and host lengths."""
    if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 3 or not log_probs.is_floating_point():
        got = describe(log_probs) if isinstance(log_probs, torch.Tensor) else type(log_probs).__name__
        fail(op, f"log_probs must be a float tensor of shape (B, T, V), got {got}")
    b, t, v = log_probs.shape
    if lengths is None:
        lengths = torch.full((b,), t, dtype=torch.int64)
    check_lengths(op, "lengths", lengths, b, t)
    if not 0 <= blank < v:
        fail(op, f"blank must be in [0, V-1={v - 1}], got {blank}")
    x = log_probs.detach().to("cpu", torch.float64)
    # -inf is a valid log-probability (log 0: a masked symbol, or .log() of a peaked softmax);
    # NaN and +inf are not, nor a frame where every symbol is impossible
    if bool(torch.isnan(x).any()) or bool(torch.isposinf(x).any()):
        fail(op, "log_probs contain NaN or +inf values")
    lens = [int(n) for n in lengths.cpu()]
    impossible = torch.isneginf(x).all(-1)                                  # (B, T)
    for i, n in enumerate(lens):
        if bool(impossible[i, :n].any()):
            fail(op, f"log_probs: frame {int(impossible[i, :n].nonzero()[0])} of sample {i} is -inf for every symbol")
    return torch.log_softmax(x, dim=-1).numpy(), lens


def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None,
                      blank: int = 0) -> list[list[int]]:
    """Best-path decoding.

    Args:
        log_probs: (B, T, V) logits or log-probabilities.
        lengths: (B,) valid frames per sample (default: all T).
        blank: index of the blank symbol.

    Returns:
        B label sequences (lists of ints, blanks removed, repeats collapsed).
    """
    lp, lens = _prepare("ctc_greedy_decode", log_probs, lengths, blank)
    best = lp.argmax(-1)                                                   # (B, T)
    out = []
    for row, n in zip(best, lens):
        row = row[:n]
        keep = np.ones(n, dtype=bool)
        keep[1:] = row[1:] != row[:-1]                                     # collapse repeats
        out.append([int(x) for x in row[keep] if x != blank])
    return out


def _lse(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def _beam_one(lp: np.ndarray, beam_size: int, blank: int, prune_topk: int | None
              ) -> tuple[list[int], float]:
    """Prefix beam search over one (T, V) log-probability matrix."""
    beams: dict[tuple, list[float]] = {(): [0.0, _NEG_INF]}              # prefix -> [p_b, p_nb]
    v = lp.shape[1]
    for frame in lp:
        if prune_topk is not None and prune_topk < v:
            cand = np.argpartition(-frame, prune_topk - 1)[:prune_topk]
            if blank not in cand:                                          # blank always extends
                cand = np.append(cand, blank)
        else:
            cand = range(v)
        nxt: dict[tuple, list[float]] = {}

        def slot(prefix):
            s = nxt.get(prefix)
            if s is None:
                s = nxt[prefix] = [_NEG_INF, _NEG_INF]
            return s

        for prefix, (pb, pnb) in beams.items():
            total = _lse(pb, pnb)
            last = prefix[-1] if prefix else None
            for c in cand:
                c = int(c)
                p = frame[c]
                if c == blank:
                    s = slot(prefix)
                    s[0] = _lse(s[0], total + p)
                elif c == last:
                    # "a a" stays "a"; "a - a" (prefix ended in blank) becomes "a a"
                    s = slot(prefix)
                    s[1] = _lse(s[1], pnb + p)
                    s = slot(prefix + (c,))
                    s[1] = _lse(s[1], pb + p)
                else:
                    s = slot(prefix + (c,))
                    s[1] = _lse(s[1], total + p)
        ranked = sorted(nxt.items(), key=lambda kv: _lse(*kv[1]), reverse=True)
        beams = dict(ranked[:beam_size])
    prefix, (pb, pnb) = max(beams.items(), key=lambda kv: _lse(*kv[1]))
    return list(prefix), _lse(pb, pnb)


def ctc_beam_decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None,
                    beam_size: int = 8, blank: int = 0, prune_topk: int | None = 16,
                    return_scores: bool = False):
    """CTC prefix beam search.

    Args:
        log_probs: (B, T, V) logits or log-probabilities.
        lengths: (B,) valid frames per sample (default: all T).
        beam_size: prefixes kept after each frame (1 is close to, not equal to, greedy).
        blank: index of the blank symbol.
        prune_topk: only the ``prune_topk`` most probable symbols of each frame (plus blank)
            extend the prefixes; ``None`` tries every symbol (exact search with a large beam).
        return_scores: also return each best sequence's log-probability.

    Returns:
        B label sequences (lists of ints), and with ``return_scores`` a list of B floats
        (log-probability of the sequence summed over its frame paths).
    """
    op = "ctc_beam_decode"
    if not isinstance(beam_size, int) or beam_size < 1:
        fail(op, f"beam_size must be a positive int, got {beam_size!r}")
    if prune_topk is not None and (not isinstance(prune_topk, int) or prune_topk < 1):
        fail(op, f"prune_topk must be a positive int or None, got {prune_topk!r}")
    lp, lens = _prepare(op, log_probs, lengths, blank)
    seqs, scores = [], []
    for i, n in enumerate(lens):
        seq, score = _beam_one(lp[i, :n], beam_size, blank, prune_topk)
        seqs.append(seq)
        scores.append(score)
    return (seqs, scores) if return_scores else seqs
