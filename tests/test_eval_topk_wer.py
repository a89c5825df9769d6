"""ISLR top-k accuracy and CSLR WER against hand-computed values."""
import pytest
import torch

from slpfast.eval.topk import TopKAccumulator, topk_accuracy
from slpfast.eval.wer import edit_ops, word_error_rate


def _hand_case():
    # 4 classes, 5 clips. Ranking of each row (best first) written next to it.
    logits = torch.tensor([
        [0.9, 0.1, 0.0, 0.0],   # 0,1,2/3 ; label 0 -> top1 hit
        [0.5, 0.4, 0.3, 0.2],   # 0,1,2,3 ; label 1 -> top1 miss, top2 hit
        [0.1, 0.2, 0.3, 0.4],   # 3,2,1,0 ; label 0 -> rank 4: top3 miss
        [0.0, 0.0, 1.0, 0.5],   # 2,3,...  ; label 2 -> top1 hit
        [0.0, 0.3, 0.2, 0.1],   # 1,2,3,0 ; label 0 -> rank 4
    ])
    labels = torch.tensor([0, 1, 0, 2, 0])
    return logits, labels


def test_topk_hand_computed():
    logits, labels = _hand_case()
    r = topk_accuracy(logits, labels, ks=(1, 2, 5))
    # per instance: top1 hits = clips 0, 3 -> 2/5; top2 adds clip 1 -> 3/5; top5 (=top4) all
    assert r["top1"] == pytest.approx(40.0)
    assert r["top2"] == pytest.approx(60.0)
    assert r["top5"] == pytest.approx(100.0)
    # per class (classes 0,1,2 present, class 3 absent):
    # top1: class0 1/3, class1 0/1, class2 1/1 -> mean(1/3, 0, 1) = 4/9
    assert r["top1_per_class"] == pytest.approx(100 * 4 / 9)
    # top2: class0 1/3, class1 1/1, class2 1/1 -> 7/9
    assert r["top2_per_class"] == pytest.approx(100 * 7 / 9)
    assert r["top5_per_class"] == pytest.approx(100.0)
    assert r["n"] == 5


def test_topk_accumulator_matches_single_call():
    logits = torch.randn(37, 11)
    labels = torch.randint(0, 11, (37,))
    acc = TopKAccumulator(11, ks=(1, 5))
    for chunk in range(0, 37, 8):
        acc.update(logits[chunk:chunk + 8], labels[chunk:chunk + 8])
    acc.all_reduce()  # no process group: a no-op
    assert acc.compute() == topk_accuracy(logits, labels)


def test_topk_bad_inputs():
    with pytest.raises(ValueError, match="labels must lie in"):
        topk_accuracy(torch.randn(3, 4), torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match=r"labels must be int32/int64 of shape \(N,\)"):
        topk_accuracy(torch.randn(3, 4), torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"logits must be a float tensor of shape \(N, C\)"):
        topk_accuracy(torch.randn(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="N=0"):
        topk_accuracy(torch.randn(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="C=4 columns"):
        TopKAccumulator(4).update(torch.randn(2, 5), torch.tensor([0, 1]))


def test_edit_ops_hand_computed():
    assert edit_ops("a b c", "a b c") == (0, 0, 0)
    assert edit_ops("a b c", "a x c") == (1, 0, 0)
    assert edit_ops("a b c", "a c") == (0, 1, 0)
    assert edit_ops("a b c", "a b c d") == (0, 0, 1)
    assert edit_ops("", "a b") == (0, 0, 2)
    assert edit_ops("a b", "") == (0, 2, 0)
    # kitten -> sitting on characters: 2 substitutions + 1 insertion
    assert edit_ops(list("kitten"), list("sitting")) == (2, 0, 1)
    # token ids work as well as strings
    assert edit_ops([1, 2, 3, 4], [2, 3, 4, 5]) == (0, 1, 1)


def test_wer_hand_computed():
    refs = ["the cat sat on the mat", "hello world", [7, 8, 9]]
    hyps = ["the cat sat mat", "hello there world", [7, 9, 9]]
    # sentence 1: 2 deletions (on, the); sentence 2: 1 insertion; sentence 3: 1 substitution
    r = word_error_rate(refs, hyps)
    assert r["errors"] == 4 and r["ref_words"] == 11
    assert r["wer"] == pytest.approx(100 * 4 / 11)
    assert r["del"] == pytest.approx(100 * 2 / 11)
    assert r["ins"] == pytest.approx(100 * 1 / 11)
    assert r["sub"] == pytest.approx(100 * 1 / 11)
    # WER can exceed 100%
    assert word_error_rate(["a"], ["b c d"])["wer"] == pytest.approx(300.0)


def test_edit_distance_matches_bruteforce_recursion():
    import functools
    import random

    rng = random.Random(1)
    for _ in range(50):
        a = [rng.randrange(3) for _ in range(rng.randrange(7))]
        b = [rng.randrange(3) for _ in range(rng.randrange(7))]

        @functools.lru_cache(None)
        def d(i, j):
            if i == 0 or j == 0:
                return i + j
            return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

        s, de, ins = edit_ops(a, b)
        assert s + de + ins == d(len(a), len(b))
        assert de - ins == len(a) - len(b)  # every alignment satisfies this


def test_wer_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        word_error_rate(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no words"):
        word_error_rate([""], ["a"])
    with pytest.raises(ValueError, match="single string"):
        word_error_rate("a b", "a b")


def test_topk_nan_logits_are_an_error_not_a_hit():
    """torch.topk ranks NaN first, so a diverged model's NaN logit at the label counted as a hit."""
    logits = torch.tensor([[float("nan"), 1.0, 2.0], [0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match=r"topk_accuracy: logits contain NaN \(1 of 2 rows\)"):
        topk_accuracy(logits, torch.tensor([0, 2]))
    acc = TopKAccumulator(3, ks=(1,))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(logits, torch.tensor([0, 2]))
    # -inf (a masked class) stays valid
    assert topk_accuracy(torch.tensor([[float("-inf"), 1.0, 2.0]]), torch.tensor([2]), ks=(1,))["top1"] == 100.0


def test_edit_ops_split_follows_the_tie_rule_over_the_whole_sentence():
    """Cell-by-cell preference of the diagonal gave 1 D + 2 I here, where 2 S + 1 I costs the same."""
    assert edit_ops("c b a b", "c c d b a") == (2, 0, 1)
    import random

    def best_split(r, h):  # every minimum-cost alignment, exhaustively; the rule's preferred split
        from functools import lru_cache

        @lru_cache(None)
        def go(i, j):
            if i == len(r):
                return {(0, 0, len(h) - j)}
            if j == len(h):
                return {(0, len(r) - i, 0)}
            outs = set()
            for s, d, n in go(i + 1, j + 1):
                outs.add((s + (r[i] != h[j]), d, n))
            for s, d, n in go(i + 1, j):
                outs.add((s, d + 1, n))
            for s, d, n in go(i, j + 1):
                outs.add((s, d, n + 1))
            cost = min(sum(o) for o in outs)
            return {o for o in outs if sum(o) == cost}
        return max(go(0, 0), key=lambda o: (o[0], o[1]))

    rng = random.Random(0)
    for _ in range(300):
        r = [rng.choice("abcd") for _ in range(rng.randint(0, 6))]
        h = [rng.choice("abcd") for _ in range(rng.randint(0, 6))]
        assert edit_ops(r, h) == best_split(r, h), (r, h)


def test_topk_ties_count_against_the_label():
    """torch.topk broke ties in no set order: constant logits scored 100% top-1 on one label."""
    logits = torch.zeros(5, 5)
    r = topk_accuracy(logits, torch.arange(5), ks=(1, 4, 5))
    assert r["top1"] == 0.0 and r["top4"] == 0.0 and r["top5"] == 100.0
    logits = torch.tensor([[1.0, 2.0, 2.0, 0.0]])  # label 1 ties with class 2 for first place
    r = topk_accuracy(logits, torch.tensor([1]), ks=(1, 2))
    assert r["top1"] == 0.0 and r["top2"] == 100.0
