"""Word edit distance and word error rate (WER) for continuous sign recognition (CSLR).

WER = (S + D + I) / N, with S substitutions, D deletions, I insertions of the minimum-cost
Levenshtein alignment of each hypothesis against its reference and N the total number of
reference words, summed over the corpus before dividing (the corpus-level WER of
Phoenix-2014 / CSL-Daily evaluations, not a mean of sentence WERs).

A sentence is either a string (split on whitespace) or a sequence of tokens (gloss ids or
strings). When several alignments have the same minimum cost, the reported split into
S / D / I prefers substitutions, then deletions, then insertions; the total never depends
on that choice.
"""
from __future__ import annotations

from typing import Sequence, Union

from slpfast.ops._validate import fail

Sentence = Union[str, Sequence]


def _tokens(s: Sentence, op: str, name: str) -> list:
    if isinstance(s, str):
        return s.split()
    if isinstance(s, (list, tuple)):
        return list(s)
    try:  # numpy arrays / tensors of ids
        return list(s.tolist())
    except AttributeError:
        fail(op, f"{name} must be a string or a sequence of tokens, got {type(s).__name__}")


def edit_ops(ref: Sentence, hyp: Sentence) -> tuple[int, int, int]:
    """Minimum-cost alignment of ``hyp`` against ``ref``.

    Returns:
        ``(substitutions, deletions, insertions)``; their sum is the Levenshtein distance.
    """
    r = _tokens(ref, "edit_ops", "ref")
    h = _tokens(hyp, "edit_ops", "hyp")
    # DP cell = (cost, S, D, I) of the best alignment of r[:i] with h[:j]; two rows live at once.
    # "Best" is the least cost, then the most substitutions, then the most deletions: all three
    # add up along an alignment, so this lexicographic order obeys the DP's optimality and the
    # whole-sentence split follows the tie rule (preferring the diagonal move cell by cell
    # does not: ref "c b a b", hyp "c c d b a" gave 1 D + 2 I instead of 2 S + 1 I).
    rank = lambda cell: (cell[0], -cell[1], -cell[2])  # noqa: E731
    prev = [(j, 0, 0, j) for j in range(len(h) + 1)]
    for i in range(1, len(r) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(h) + 1):
            c, s, d, n = prev[j - 1]
            diag = (c, s, d, n) if r[i - 1] == h[j - 1] else (c + 1, s + 1, d, n)
            c, s, d, n = prev[j]            # reference word i deleted
            dele = (c + 1, s, d + 1, n)
            c, s, d, n = cur[j - 1]         # hypothesis word j inserted
            ins = (c + 1, s, d, n + 1)
            cur.append(min(diag, dele, ins, key=rank))
        prev = cur
    _, s, d, n = prev[-1]
    return s, d, n


def word_error_rate(refs: Sequence[Sentence], hyps: Sequence[Sentence]) -> dict[str, float]:
    """Corpus WER in percent.

    Args:
        refs: N reference sentences (strings or token sequences).
        hyps: N hypotheses, same order.

    Returns:
        ``{"wer": %, "sub": %, "del": %, "ins": %, "errors": S+D+I, "ref_words": N_words,
        "n": N}``; sub/del/ins are each divided by the reference word count.
    """
    if isinstance(refs, str) or isinstance(hyps, str):
        fail("word_error_rate", "refs and hyps must be lists of sentences, got a single string")
    if len(refs) != len(hyps):
        fail("word_error_rate", f"refs and hyps must have the same length, got {len(refs)} refs "
                                f"and {len(hyps)} hyps")
    S = D = I = words = 0
    for ref, hyp in zip(refs, hyps):
        s, d, i = edit_ops(ref, hyp)
        S, D, I = S + s, D + d, I + i
        words += len(_tokens(ref, "word_error_rate", "refs"))
    if words == 0:
        fail("word_error_rate", f"refs contain no words (N={len(refs)} sentences): WER is undefined")
    return {"wer": 100.0 * (S + D + I) / words, "sub": 100.0 * S / words,
            "del": 100.0 * D / words, "ins": 100.0 * I / words,
            "errors": S + D + I, "ref_words": words, "n": len(refs)}
