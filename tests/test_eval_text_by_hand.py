"""BLEU / ROUGE-L against values derived by hand (n-grams counted in the comments, not by the
code under test), sacreBLEU's edge cases, and input validation."""
import math
import random
from itertools import combinations

import pytest

from slpfast.eval.bleu import corpus_bleu, tokenize_13a
from slpfast.eval.rouge import rouge_l, rouge_l_sentence


def _bleu(precisions, bp=1.0):
    return 100.0 * bp * math.exp(sum(map(math.log, precisions)) / len(precisions))


def test_bleu_corpus_with_punctuation_and_brevity_penalty():
    # 13a: "morgen regen, im norden." -> morgen regen , im norden .   (6 tokens)
    #      "morgen regen im norden."  -> morgen regen im norden .     (5 tokens)
    # 1-grams 5/6 (","), 2-grams 3/5 (morgen regen, im norden, norden .),
    # 3-grams 1/4 (im norden .), 4-grams 0/3
    # sentence 2: "sonne" vs "viel sonne heute": 1-grams 1/1, no 2..4-grams
    # corpus: matches 6, 3, 1, 0 of 7, 5, 4, 3; hyp_len 7 < ref_len 8
    # exp smoothing: the first order without matches gets 1 / (2 * 3)
    hyps = ["morgen regen, im norden.", "sonne"]
    refs = ["morgen regen im norden.", "viel sonne heute"]
    bp = math.exp(1 - 8 / 7)
    for backend in ("own", "auto"):
        r = corpus_bleu(hyps, refs, backend=backend)
        assert (r["hyp_len"], r["ref_len"]) == (7, 8)
        assert r["bp"] == pytest.approx(bp)
        assert r["bleu1"] == pytest.approx(_bleu([6 / 7], bp))
        assert r["bleu2"] == pytest.approx(_bleu([6 / 7, 3 / 5], bp))
        assert r["bleu3"] == pytest.approx(_bleu([6 / 7, 3 / 5, 1 / 4], bp))
        assert r["bleu4"] == pytest.approx(_bleu([6 / 7, 3 / 5, 1 / 4, 1 / 6], bp))


def test_bleu_exp_smoothing_doubles_per_zero_order():
    # "a b c d e" vs "a b x c d y e": 1-grams 5/5, 2-grams 2/4 (a b, c d), 3-grams 0/3, 4-grams 0/2
    # -> p3 = 1 / (2 * 3), p4 = 1 / (4 * 2); BP = exp(1 - 7/5)
    r = corpus_bleu(["a b c d e"], ["a b x c d y e"], backend="own")
    assert r["bleu4"] == pytest.approx(_bleu([1, 2 / 4, 1 / 6, 1 / 8], math.exp(1 - 7 / 5)))


def test_bleu_unicode_and_case():
    # case-sensitive: Über / München do not match: 1-grams 2/4, 2-grams 1/3 (schneit es),
    # 3-grams 0/2 -> 1/(2*2), 4-grams 0/1 -> 1/(4*1)
    hyp, ref = ["Über München schneit es"], ["über münchen schneit es"]
    assert corpus_bleu(hyp, ref, backend="own")["bleu4"] == pytest.approx(_bleu([2 / 4, 1 / 3, 1 / 4, 1 / 4]))
    assert corpus_bleu(hyp, ref, lowercase=True, backend="own")["bleu4"] == pytest.approx(100.0)


def test_bleu_multiple_references_clip_and_closest_length():
    # hyp "the the the cat" (4); refs "the cat sat" (3) and "the the dog is here" (5)
    # clip by the max count over refs: the 3 -> 2, cat 1 -> 1: 3/4; 2-grams the the x2 -> 1,
    # the cat -> 1: 2/3; 3-grams 0/2; 4-grams 0/1. Lengths 3 and 5 tie at distance 1: the
    # shorter (3) counts, so no brevity penalty.
    r = corpus_bleu(["the the the cat"], [["the cat sat"], ["the the dog is here"]], backend="own")
    assert r["ref_len"] == 3 and r["bp"] == 1.0
    assert r["bleu2"] == pytest.approx(100 * math.sqrt(3 / 4 * 2 / 3))
    assert r["bleu4"] == pytest.approx(_bleu([3 / 4, 2 / 3, 1 / 4, 1 / 4]))


def test_bleu_edge_cases():
    # a short hypothesis has no 4-grams: BLEU-4 is 0 (sacrebleu: log of a zero precision)
    r = corpus_bleu(["a b c"], ["a b c"], backend="own")
    assert r["bleu3"] == pytest.approx(100.0) and r["bleu4"] == 0.0
    # one empty hypothesis in a corpus: it adds reference length only
    r = corpus_bleu(["", "a b c d"], ["x y", "a b c d"], backend="own")
    assert (r["hyp_len"], r["ref_len"]) == (4, 6)
    assert r["bleu4"] == pytest.approx(100 * math.exp(1 - 6 / 4))
    # empty hypotheses only: 0 with BP 0; an empty reference: 0, no error
    r = corpus_bleu(["", ""], ["a", "b c"], backend="own")
    assert r["bleu4"] == 0.0 and r["bp"] == 0.0
    assert corpus_bleu(["a b"], [""], backend="own")["bleu1"] == 0.0


def test_tokenize_13a_more():
    assert tokenize_13a("Es ist 5-6 Grad (kalt).") == "Es ist 5 - 6 Grad ( kalt ) ."
    assert tokenize_13a("1,000.5 km/h; don't") == "1,000.5 km / h ; don't"
    assert tokenize_13a("Preis: 3,50€ &lt;unk&gt;") == "Preis : 3,50€ < unk >"
    assert tokenize_13a("  a\tb  ") == "a b"


def test_bleu_missing_references_as_sacrebleu():
    """None marks a sentence with fewer references (sacrebleu's variable-reference layout)."""
    hyps = ["the cat sat on the mat", "a dog ran"]
    refs = [["the cat sat on a mat", "a dog ran away"], ["the cat is on the mat", None]]
    own = corpus_bleu(hyps, refs, backend="own")
    # sentence 2 has one reference (4 words): ref_len = closest(6; 6, 6) + 4
    assert own["ref_len"] == 10
    if _have_sacrebleu():
        ref = corpus_bleu(hyps, refs, backend="sacrebleu")
        for n in range(1, 5):
            assert own[f"bleu{n}"] == pytest.approx(ref[f"bleu{n}"], abs=1e-9)
    with pytest.raises(ValueError, match="sentence 1 has no reference"):
        corpus_bleu(hyps, [["x y", None], ["z", None]], backend="own")


def test_bleu_validation_names_the_argument():
    with pytest.raises(ValueError, match="refs.*2 hyps, got a stream of 1"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"refs\[1\]"):
        corpus_bleu(["a", "b"], [["a", "b"], ["a"]])
    with pytest.raises(ValueError, match="hyps is empty"):
        corpus_bleu([], [])
    with pytest.raises(ValueError, match="hyps is empty"):
        corpus_bleu([], ["a"], backend="sacrebleu" if _have_sacrebleu() else "own")
    with pytest.raises(ValueError, match=r"hyps\[1\] must be a string"):
        corpus_bleu(["a", None], ["a", "b"], backend="own")
    with pytest.raises(ValueError, match="refs: reference 0 of stream 1"):
        corpus_bleu(["a"], [["a"], [3]], backend="own")
    # max_order 0 returned no BLEU at all (own) or an UnboundLocalError (sacrebleu); 2.5 a TypeError
    backends = ["own"] + (["sacrebleu"] if _have_sacrebleu() else [])
    for backend in backends:
        for bad in (0, -1, 2.5, True, "4"):
            with pytest.raises(ValueError, match="max_order must be a positive int"):
                corpus_bleu(["a b"], ["a b"], max_order=bad, backend=backend)


def _have_sacrebleu():
    try:
        import sacrebleu  # noqa: F401
        return True
    except ImportError:
        return False


def test_bleu_own_matches_sacrebleu_random_corpora():
    pytest.importorskip("sacrebleu")
    rng = random.Random(0)
    words = "a b c the cat , . 3.5 km-long x-y Über (x) don't".split()
    for _ in range(40):
        n, r = rng.randint(1, 4), rng.randint(1, 3)
        sent = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(0, 9)))  # noqa: E731
        hyps = [sent() for _ in range(n)]
        refs = [[sent() for _ in range(n)] for _ in range(r)]
        own = corpus_bleu(hyps, refs, backend="own")
        sb = corpus_bleu(hyps, refs, backend="sacrebleu")
        for k in ("bleu1", "bleu2", "bleu3", "bleu4", "bp", "hyp_len", "ref_len"):
            assert own[k] == pytest.approx(sb[k], abs=1e-9), (k, hyps, refs)


def _lcs_brute(a, b):
    # the longest subsequence of a that is also a subsequence of b (tiny inputs only)
    def is_sub(s, t):
        it = iter(t)
        return all(x in it for x in s)
    for k in range(min(len(a), len(b)), 0, -1):
        if any(is_sub(c, b) for c in combinations(a, k)):
            return k
    return 0


def test_rouge_l_hand_computed_and_edges():
    # LCS("a b c d e", "a c e f") = a c e = 3: P = 3/5, R = 3/4, beta = 1.2 (SignJoey)
    b2 = 1.2 ** 2
    p, r = 3 / 5, 3 / 4
    assert _lcs_brute("a b c d e".split(), "a c e f".split()) == 3
    assert rouge_l_sentence("a b c d e", "a c e f") == pytest.approx((1 + b2) * p * r / (r + b2 * p))
    rng = random.Random(1)
    for _ in range(30):
        h = [rng.choice("abc") for _ in range(rng.randint(1, 6))]
        t = [rng.choice("abc") for _ in range(rng.randint(1, 6))]
        lcs = _lcs_brute(h, t)
        want = 0.0 if lcs == 0 else (1 + b2) * (lcs / len(h)) * (lcs / len(t)) / (lcs / len(t) + b2 * lcs / len(h))
        assert rouge_l_sentence(" ".join(h), " ".join(t)) == pytest.approx(want)
    # empty hypothesis or reference: 0, never a division by zero
    assert rouge_l(["", "a b"], ["a b", ""])["rouge_l"] == 0.0
    assert rouge_l(["a b", "x"], ["a b", "y"])["rouge_l"] == pytest.approx(50.0)


def test_rouge_l_validation_names_the_argument():
    with pytest.raises(ValueError, match=r"refs\[0\] must be a string"):
        rouge_l(["a b"], [["a b", "a c"]])
    with pytest.raises(ValueError, match=r"hyps\[1\] must be a string"):
        rouge_l(["a", None], ["a", "b"])
