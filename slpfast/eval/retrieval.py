"""Sign <-> text retrieval metrics: Recall@K and median / mean rank, both directions.

Given a similarity matrix ``sim (N_sign, N_text)`` (higher = more similar) and which pairs are
correct (``positives``, default the diagonal: clip i goes with text i), the *rank* of a query
is 1 + the number of wrong candidates that score at least as high as its best correct one.
Ties count against the query (pessimistic): with "strictly higher", a collapsed encoder whose
embeddings are all equal scored R@1 = 100%.
R@K is the percentage of queries with rank <= K; MedR / MeanR are the median / mean rank.

``positives`` matters when several clips share one sentence (common in sign-language corpora
and in the synthetic corpus): a text query for "the cat sleeps" is then answered correctly by
any clip of that sentence, and counting an identical duplicate sentence as an error would
understate every method equally but arbitrarily. :func:`positives_from_texts` builds the mask
from the strings. The text side should then hold each distinct sentence once
(``positives_from_texts(clip_texts, distinct_texts)``, as ``slpfast.finetune`` does): every
column counts as a candidate of its own, so five copies of a wrong sentence would push the right
one five places down.

sign->text ("s2t") ranks texts for each clip (rows of ``sim``); text->sign ("t2s") ranks clips
for each text (columns).
"""
from __future__ import annotations

import numbers
from typing import Sequence

import torch

from slpfast.ops._validate import describe, fail

_OP = "retrieval_metrics"


def positives_from_texts(sign_texts: Sequence[str], text_texts: Sequence[str] | None = None
                         ) -> torch.Tensor:
    """(N_sign, N_text) bool mask: clip i matches text j when their strings are equal."""
    text_texts = sign_texts if text_texts is None else text_texts
    ids: dict[str, int] = {}
    a = torch.tensor([ids.setdefault(s, len(ids)) for s in sign_texts], dtype=torch.int64)
    b = torch.tensor([ids.setdefault(s, len(ids)) for s in text_texts], dtype=torch.int64)
    return a[:, None] == b[None, :]


def ranks(sim: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Rank (1-based) of the best correct candidate for each row: (N_query,) int64."""
    sim = sim.double()
    neg_inf = torch.tensor(float("-inf"), dtype=sim.dtype, device=sim.device)
    best_pos = torch.where(positives, sim, neg_inf).max(dim=1).values      # (Nq,)
    better = (sim >= best_pos[:, None]) & ~positives                        # wrong and not lower
    return better.sum(1) + 1


def _summary(r: torch.Tensor, prefix: str, ks: Sequence[int]) -> dict[str, float]:
    out = {f"{prefix}_R@{k}": 100.0 * float((r <= k).double().mean()) for k in ks}
    # the usual median (mean of the two middle ranks for an even count), as numpy and CLIP4Clip's
    # compute_metrics give it; torch.median would take the lower middle value
    out[f"{prefix}_MedR"] = float(r.double().quantile(0.5))
    out[f"{prefix}_MeanR"] = float(r.double().mean())
    return out


def retrieval_metrics(sim: torch.Tensor, positives: torch.Tensor | None = None,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@K (percent), median and mean rank in both directions.

    Args:
        sim: (N_sign, N_text) similarities, e.g. ``sign_emb @ text_emb.T``.
        positives: (N_sign, N_text) bool, True for correct pairs; default the diagonal
            (needs N_sign == N_text). Every row and every column needs at least one True.
        ks: the K of R@K (positive ints).

    Returns:
        ``{"s2t_R@1", ..., "s2t_MedR", "s2t_MeanR", "t2s_R@1", ..., "t2s_MeanR", "n_sign",
        "n_text"}``.
    """
    if not isinstance(sim, torch.Tensor) or sim.dim() != 2 or not sim.is_floating_point():
        got = describe(sim) if isinstance(sim, torch.Tensor) else type(sim).__name__
        fail(_OP, f"sim must be a float tensor of shape (N_sign, N_text), got {got}")
    n_sign, n_text = sim.shape
    if n_sign == 0 or n_text == 0:
        fail(_OP, f"sim must be non-empty, got {describe(sim)}")
    if torch.isnan(sim).any():
        fail(_OP, "sim contains NaN")
    if positives is None:
        if n_sign != n_text:
            fail(_OP, f"positives is required when sim is not square, got {describe(sim)}")
        positives = torch.eye(n_sign, dtype=torch.bool, device=sim.device)
    if (not isinstance(positives, torch.Tensor) or positives.dtype != torch.bool
            or tuple(positives.shape) != (n_sign, n_text)):
        got = describe(positives) if isinstance(positives, torch.Tensor) else type(positives).__name__
        fail(_OP, f"positives must be bool of shape {(n_sign, n_text)}, got {got}")
    positives = positives.to(sim.device)
    if not bool(positives.any(1).all()) or not bool(positives.any(0).all()):
        fail(_OP, "positives must have at least one True in every row and every column")
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        fail(_OP, f"ks must be a sequence of positive ints, got {ks!r}")
    ks = tuple(ks)
    # R@0 is 0 by definition and R@2.5 is R@2: both are mistakes, not metrics
    if not ks or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 for k in ks):
        fail(_OP, f"ks must be a non-empty sequence of positive ints, got {ks!r}")
    ks = tuple(int(k) for k in ks)
    out = _summary(ranks(sim, positives), "s2t", ks)
    out.update(_summary(ranks(sim.t(), positives.t()), "t2s", ks))
    out["n_sign"], out["n_text"] = n_sign, n_text
    return out
