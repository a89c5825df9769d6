"""BLEU (own implementation vs hand-computed values and sacrebleu) and ROUGE-L."""
import math

import pytest

from slpfast.eval.bleu import corpus_bleu, tokenize_13a
from slpfast.eval.rouge import lcs_length, rouge_l, rouge_l_sentence

CASES = [
    (["the cat is on the mat"], ["the cat sat on the mat"]),
    (["a b c d e f", "g h i"], ["a b c d e f", "g x i j"]),
    (["Hello, world! It's 3.5 km-long.", "No match here"], ["Hello world, it's 3.5 km - long.", "Something else entirely ."]),
    (["the the the the"], ["the cat"]),
    (["one two three four five six seven", "short"], ["one two three four five six seven eight", "a short one"]),
    (["x"], ["y"]),
    (["it is raining today in the north", "tomorrow sunny", "the wind blows from the west"],
     ["today it is raining in the north", "tomorrow it will be sunny", "wind from the west"]),
]


def test_bleu_hand_computed():
    # hyp "the cat is on the mat" vs ref "the cat sat on the mat":
    # 1-grams 5/6, 2-grams 3/5 (the cat, on the, the mat), 3-grams 1/4 (on the mat), 4-grams 0/3
    # exp smoothing: p4 = 1 / (2 * 3); equal lengths -> BP = 1
    r = corpus_bleu(*CASES[0], backend="own")
    p = [5 / 6, 3 / 5, 1 / 4, 1 / 6]
    assert r["bleu4"] == pytest.approx(100 * math.exp(sum(map(math.log, p)) / 4))
    assert r["bleu1"] == pytest.approx(100 * 5 / 6)
    assert r["bleu2"] == pytest.approx(100 * math.sqrt(5 / 6 * 3 / 5))
    assert r["bp"] == 1.0
    # brevity penalty: hyp "a b" (2 words, all matched) vs ref "a b c d" -> BP = exp(1 - 4/2)
    r = corpus_bleu(["a b"], ["a b c d"], max_order=2, backend="own")
    assert r["bleu2"] == pytest.approx(100 * math.exp(1 - 2))
    # clipping: "the the the the" vs "the cat": 1-gram precision 1/4
    # (hyp longer than ref -> no brevity penalty)
    assert corpus_bleu(*CASES[3], max_order=1, backend="own")["bleu1"] == pytest.approx(25.0)
    # nothing matches -> 0
    assert corpus_bleu(["x"], ["y"], backend="own")["bleu4"] == 0.0


def test_tokenize_13a_hand_computed():
    assert tokenize_13a("Hello, world!") == "Hello , world !"
    assert tokenize_13a("It costs 3.5 dollars, i.e. 3,000 cents.") == \
        "It costs 3.5 dollars , i . e . 3,000 cents ."
    assert tokenize_13a("km-long 5-6 &quot;a&quot;") == 'km-long 5 - 6 " a "'


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("lowercase", [False, True])
def test_bleu_own_matches_sacrebleu(case, lowercase):
    pytest.importorskip("sacrebleu")
    hyps, refs = CASES[case]
    own = corpus_bleu(hyps, refs, lowercase=lowercase, backend="own")
    ref = corpus_bleu(hyps, refs, lowercase=lowercase, backend="sacrebleu")
    assert own["backend"] == "own" and ref["backend"] == "sacrebleu"
    for n in range(1, 5):
        assert own[f"bleu{n}"] == pytest.approx(ref[f"bleu{n}"], abs=1e-9), n
    assert own["hyp_len"] == ref["hyp_len"] and own["ref_len"] == ref["ref_len"]


def test_bleu_multiple_references_matches_sacrebleu():
    pytest.importorskip("sacrebleu")
    hyps = ["the cat is on the mat", "there is a cat here"]
    refs = [["the cat sat on the mat", "a cat is here"], ["there is a cat on the mat", "the cat is here"]]
    own = corpus_bleu(hyps, refs, backend="own")
    ref = corpus_bleu(hyps, refs, backend="sacrebleu")
    assert own["bleu4"] == pytest.approx(ref["bleu4"], abs=1e-9)
    assert own["ref_len"] == ref["ref_len"]


def test_bleu_bad_inputs():
    with pytest.raises(ValueError, match="one reference per hypothesis"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="hyps must be a list"):
        corpus_bleu("a b", ["a b"])
    with pytest.raises(ValueError, match="backend"):
        corpus_bleu(["a"], ["a"], backend="nltk")


def test_rouge_hand_computed():
    assert lcs_length("the cat sat on the mat".split(), "the cat on the mat".split()) == 5
    assert lcs_length("a b c d".split(), "b d a c".split()) == 2
    # P = 5/5, R = 5/6, beta 1.2
    b2 = 1.2 ** 2
    expect = (1 + b2) * 1.0 * (5 / 6) / (5 / 6 + b2 * 1.0)
    assert rouge_l_sentence("the cat on the mat", "the cat sat on the mat") == pytest.approx(expect)
    # beta = 1: F1 of P = 2/4, R = 2/4 -> 0.5
    assert rouge_l_sentence("a b c d", "b d a c", beta=1.0) == pytest.approx(0.5)
    r = rouge_l(["the cat on the mat", "x y", "A B"], ["the cat sat on the mat", "z", "a b"])
    assert r["rouge_l"] == pytest.approx(100 * (expect + 0 + 0) / 3)
    assert rouge_l(["A B"], ["a b"], lowercase=True)["rouge_l"] == pytest.approx(100.0)


def test_rouge_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        rouge_l(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        rouge_l([], [])
