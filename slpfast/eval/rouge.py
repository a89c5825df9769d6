"""ROUGE-L (Lin 2004): longest-common-subsequence F-measure, averaged over sentences.

For a hypothesis h and reference r (token lists), with L = |LCS(h, r)|:
    P = L / |h|,  R = L / |r|,  F = (1 + beta^2) P R / (R + beta^2 P)   (0 when L = 0).
The corpus score is the mean sentence F in percent. ``beta = 1.2`` is the value of the
sign-language translation literature's evaluation code (Camgoz et al.'s SignJoey, used for
PHOENIX-2014T / CSL-Daily tables), so numbers are comparable to those papers; ``beta=1`` gives
the plain harmonic mean.

Tokens are whitespace-separated words, optionally lower-cased.
"""
from __future__ import annotations

from typing import Sequence

from slpfast.ops._validate import fail


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (O(|a| |b|) time, O(|b|) memory)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_sentence(hyp: str, ref: str, beta: float = 1.2, lowercase: bool = False) -> float:
    """ROUGE-L F-measure of one sentence pair, in [0, 1]."""
    if lowercase:
        hyp, ref = hyp.lower(), ref.lower()
    h, r = hyp.split(), ref.split()
    lcs = lcs_length(h, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(h), lcs / len(r)
    return (1 + beta ** 2) * p * rec / (rec + beta ** 2 * p)


def rouge_l(hyps: Sequence[str], refs: Sequence[str], beta: float = 1.2,
            lowercase: bool = False) -> dict[str, float]:
    """Sentence-averaged ROUGE-L F in percent.

    Args:
        hyps: N hypothesis strings.
        refs: N reference strings (one per hypothesis).
        beta: recall weight (1.2 as in SignJoey; 1.0 = F1).
        lowercase: case-insensitive matching.

    Returns:
        ``{"rouge_l": %, "n": N}``.
    """
    if isinstance(hyps, str) or isinstance(refs, str):
        fail("rouge_l", "hyps and refs must be lists of strings, got a single string")
    if len(hyps) != len(refs):
        fail("rouge_l", f"hyps and refs must have the same length, got {len(hyps)} and {len(refs)}")
    if len(hyps) == 0:
        fail("rouge_l", "hyps and refs are empty: ROUGE-L is undefined")
    for name, seq in (("hyps", hyps), ("refs", refs)):
        bad = next((i for i, x in enumerate(seq) if not isinstance(x, str)), None)
        if bad is not None:
            fail("rouge_l", f"{name}[{bad}] must be a string (one reference per hypothesis), "
                            f"got {type(seq[bad]).__name__}")
    if not beta > 0:
        fail("rouge_l", f"beta must be > 0, got {beta}")
    scores = [rouge_l_sentence(h, r, beta, lowercase) for h, r in zip(hyps, refs)]
    return {"rouge_l": 100.0 * sum(scores) / len(scores), "n": len(scores)}
