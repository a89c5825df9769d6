"""Corpus BLEU (Papineni et al. 2002) for sign language translation, sacrebleu-compatible.

``corpus_bleu(hyps, refs)`` returns BLEU-1..4 (percent). With ``backend="auto"`` it uses
sacrebleu when that is installed (the number papers quote, with its signature) and the own
implementation below otherwise; both give the same numbers (tests compare them).

The own implementation follows sacrebleu's defaults exactly:

- tokenisation "13a" (mteval-v13a): split punctuation and symbols off words, split "." and ","
  unless they sit between digits, split "-" after a digit;
- clipped n-gram counts summed over the corpus, with several references per sentence the clip
  is the max count over the references, and the reference length is the closest one to the
  hypothesis length (the shorter on a tie);
- brevity penalty ``exp(1 - ref_len / hyp_len)`` when the corpus hypothesis is shorter;
- "exp" smoothing (NIST, Chen & Cherry 2014 method 3): the k-th n-gram order with zero
  matches gets precision ``1 / (2^k * total_n)``; BLEU is 0 when nothing matches at all.

BLEU-n for n < 4 is the same formula with the geometric mean over orders 1..n (sacrebleu's
``max_ngram_order=n``).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

from slpfast.ops._validate import fail

_OP = "corpus_bleu"

# mteval-v13a rules, in order (the same regular language as sacrebleu's TokenizerRegexp)
_RULES = [
    # ASCII punctuation and symbols except ' - . , (kept for the rules below) become tokens
    (re.compile(r"([{-~\[-` -&(-+:-@/])"), r" \1 "),
    (re.compile(r"([^0-9])([.,])"), r"\1 \2 "),      # . , unless preceded by a digit
    (re.compile(r"([.,])([^0-9])"), r" \1 \2"),      # . , unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),          # - after a digit
]


def tokenize_13a(line: str) -> str:
    """mteval-v13a tokenisation of one segment (returns tokens joined by single spaces)."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for ent, ch in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
            line = line.replace(ent, ch)
    line = f" {line} "
    for pattern, repl in _RULES:
        line = pattern.sub(repl, line)
    return " ".join(line.split())


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    c: Counter = Counter()
    for n in range(1, max_order + 1):
        for i in range(len(tokens) - n + 1):
            c[tuple(tokens[i:i + n])] += 1
    return c


def _closest_ref_len(hyp_len: int, ref_lens: list[int]) -> int:
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def bleu_stats(hyps: Sequence[str], refs: Sequence[Sequence[str]], max_order: int = 4,
               lowercase: bool = False, tokenize: bool = True) -> dict:
    """Sufficient statistics: hyp_len, ref_len, matches[n], totals[n] summed over the corpus.

    ``refs`` is a list of reference *streams* (sacrebleu's layout): ``refs[r][i]`` is the r-th
    reference of sentence i.
    """
    hyp_len = ref_len = 0
    matches = [0] * max_order
    totals = [0] * max_order

    def prep(s: str) -> list[str]:
        s = s.lower() if lowercase else s
        s = s.rstrip()
        return (tokenize_13a(s) if tokenize else s).split()

    for i, hyp in enumerate(hyps):
        h = prep(hyp)
        ref_counts: Counter = Counter()
        lens = []
        for stream in refs:
            if stream[i] is None:  # variable number of references: no r-th reference here
                continue
            r = prep(stream[i])
            lens.append(len(r))
            for g, k in _ngrams(r, max_order).items():
                ref_counts[g] = max(ref_counts[g], k)
        hyp_len += len(h)
        ref_len += _closest_ref_len(len(h), lens)
        for g, k in _ngrams(h, max_order).items():
            totals[len(g) - 1] += k
            matches[len(g) - 1] += min(k, ref_counts.get(g, 0))
    return {"hyp_len": hyp_len, "ref_len": ref_len, "matches": matches, "totals": totals}


def bleu_from_stats(stats: dict, order: int) -> float:
    """BLEU-``order`` in percent from :func:`bleu_stats` output, with "exp" smoothing."""
    hyp_len, ref_len = stats["hyp_len"], stats["ref_len"]
    matches, totals = stats["matches"][:order], stats["totals"][:order]
    if not any(matches):
        return 0.0
    bp = 1.0 if hyp_len >= ref_len else (math.exp(1 - ref_len / hyp_len) if hyp_len else 0.0)
    log_sum, smooth = 0.0, 1.0
    for m, t in zip(matches, totals):
        if t == 0:
            # hypotheses too short to have n-grams of this order: precision 0 -> log floor,
            # as sacrebleu's my_log(0) does (BLEU becomes ~0)
            log_sum += -9999999999.0
            continue
        if m == 0:
            smooth *= 2
            p = 100.0 / (smooth * t)
        else:
            p = 100.0 * m / t
        log_sum += math.log(p)
    return bp * math.exp(log_sum / order)


def _normalize_refs(hyps, refs) -> list[list[str]]:
    if isinstance(hyps, str) or not isinstance(hyps, (list, tuple)):
        fail(_OP, f"hyps must be a list of strings, got {type(hyps).__name__}")
    if isinstance(refs, str) or not isinstance(refs, (list, tuple)):
        fail(_OP, f"refs must be a list of strings (or of reference lists), got {type(refs).__name__}")
    if not len(hyps):
        fail(_OP, "hyps is empty: BLEU of an empty corpus is undefined")
    bad = next((i for i, h in enumerate(hyps) if not isinstance(h, str)), None)
    if bad is not None:
        fail(_OP, f"hyps[{bad}] must be a string, got {type(hyps[bad]).__name__}")
    if len(refs) and all(isinstance(r, str) for r in refs):
        streams = [list(refs)]                                  # one reference per sentence
    elif len(refs) and all(isinstance(r, (list, tuple)) for r in refs):
        streams = [list(s) for s in refs]
    else:
        fail(_OP, "refs must be a list of N strings or a list of R reference streams of N strings")
    for k, s in enumerate(streams):
        if len(s) != len(hyps):
            fail(_OP, f"refs: every reference stream needs one reference per hypothesis: "
                      f"{len(hyps)} hyps, got a stream of {len(s)}"
                      + (f" (refs[{k}])" if len(streams) > 1 else ""))
        bad = next((i for i, x in enumerate(s) if x is not None and not isinstance(x, str)), None)
        if bad is not None:
            fail(_OP, f"refs: reference {bad} of stream {k} must be a string (or None for no "
                      f"reference), got {type(s[bad]).__name__}")
    # None marks a missing reference (a variable number of references per sentence, as
    # sacrebleu allows); every sentence needs at least one
    bad = next((i for i in range(len(hyps)) if all(s[i] is None for s in streams)), None)
    if bad is not None:
        fail(_OP, f"refs: sentence {bad} has no reference (None in every stream)")
    return streams


def _have_sacrebleu() -> bool:
    try:
        import sacrebleu  # noqa: F401
        return True
    except ImportError:
        return False


def corpus_bleu(hyps: Sequence[str], refs, max_order: int = 4, lowercase: bool = False,
                backend: str = "auto") -> dict[str, float]:
    """Corpus BLEU-1..``max_order`` in percent.

    Args:
        hyps: N hypothesis strings.
        refs: N reference strings, or R reference streams of N strings each (sacrebleu's
            layout: ``refs[r][i]`` is the r-th reference of sentence i, not the per-sentence
            lists ``refs[i][r]``); ``None`` in a stream marks a sentence with fewer references.
        max_order: highest n-gram order (BLEU-4 by default).
        lowercase: case-insensitive BLEU.
        backend: "auto" (sacrebleu if installed, else own), "sacrebleu" or "own".

    Returns:
        ``{"bleu1": .., ..., "bleu4": .., "bp": .., "hyp_len": .., "ref_len": .., "backend": ..}``.
    """
    streams = _normalize_refs(hyps, refs)
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 1:
        fail(_OP, f"max_order must be a positive int (4 for BLEU-4), got {max_order!r}")
    if backend not in ("auto", "sacrebleu", "own"):
        fail(_OP, f"backend must be 'auto', 'sacrebleu' or 'own', got {backend!r}")
    if backend == "sacrebleu" and not _have_sacrebleu():
        raise RuntimeError("corpus_bleu: backend='sacrebleu' but sacrebleu is not installed "
                           "(pip install sacrebleu, or use backend='own')")
    use_sacre = backend == "sacrebleu" or (backend == "auto" and _have_sacrebleu())
    out: dict[str, float] = {}
    if use_sacre:
        from sacrebleu.metrics import BLEU

        for n in range(1, max_order + 1):
            score = BLEU(max_ngram_order=n, lowercase=lowercase).corpus_score(list(hyps), streams)
            out[f"bleu{n}"] = float(score.score)
        out.update(bp=float(score.bp), hyp_len=int(score.sys_len), ref_len=int(score.ref_len))
        out["backend"] = "sacrebleu"
        return out
    stats = bleu_stats(hyps, streams, max_order, lowercase)
    for n in range(1, max_order + 1):
        out[f"bleu{n}"] = bleu_from_stats(stats, n)
    hl, rl = stats["hyp_len"], stats["ref_len"]
    out.update(bp=1.0 if hl >= rl else (math.exp(1 - rl / hl) if hl else 0.0), hyp_len=hl, ref_len=rl)
    out["backend"] = "own"
    return out
