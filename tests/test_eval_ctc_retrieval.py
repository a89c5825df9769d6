"""CTC decoding (greedy, prefix beam search) and retrieval metrics."""
import itertools
import math

import pytest
import torch

from slpfast.eval.ctc_decode import ctc_beam_decode, ctc_greedy_decode
from slpfast.eval.retrieval import positives_from_texts, retrieval_metrics


def _collapse(path, blank=0):
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return tuple(out)


def _bruteforce(probs):
    """Exact P(label sequence) by enumerating every frame path of a (T, V) prob matrix."""
    t, v = probs.shape
    total = {}
    for path in itertools.product(range(v), repeat=t):
        p = math.prod(float(probs[i, s]) for i, s in enumerate(path))
        key = _collapse(path)
        total[key] = total.get(key, 0.0) + p
    return total


def test_greedy_hand_computed():
    # V = 3 (blank=0, a=1, b=2); argmax path: a a - a b b - -> "a a b"
    path = [1, 1, 0, 1, 2, 2, 0]
    lp = torch.full((1, 7, 3), -5.0)
    lp[0, torch.arange(7), torch.tensor(path)] = 0.0
    assert ctc_greedy_decode(lp) == [[1, 1, 2]]
    # lengths cut the sequence: first 4 frames "a a - a" -> "a a"
    assert ctc_greedy_decode(lp, torch.tensor([4])) == [[1, 1]]
    assert ctc_greedy_decode(lp, torch.tensor([0])) == [[]]


def test_beam_beats_greedy_hand_computed():
    # two frames, P(blank)=0.6, P(a)=0.4 each: best path "- -" (0.36) decodes to "",
    # but P("a") = 0.4*0.4 + 0.4*0.6 + 0.6*0.4 = 0.64 > P("") = 0.36
    probs = torch.tensor([[[0.6, 0.4], [0.6, 0.4]]])
    assert ctc_greedy_decode(probs.log()) == [[]]
    seqs, scores = ctc_beam_decode(probs.log(), beam_size=4, return_scores=True)
    assert seqs == [[1]]
    assert math.exp(scores[0]) == pytest.approx(0.64)


@pytest.mark.parametrize("t,v", [(4, 3), (5, 3), (3, 4)])
def test_beam_exact_against_enumeration(t, v):
    for trial in range(4):
        probs = torch.softmax(torch.randn(t, v, dtype=torch.float64) * 2, -1)
        table = _bruteforce(probs)
        best = max(table, key=table.get)
        seqs, scores = ctc_beam_decode(probs.log()[None], beam_size=10 ** 4, prune_topk=None,
                                       return_scores=True)
        assert tuple(seqs[0]) == best
        assert math.exp(scores[0]) == pytest.approx(table[best], rel=1e-9)


def test_beam_batched_with_lengths_and_blank_index():
    lp = torch.randn(3, 6, 5).log_softmax(-1)
    lengths = torch.tensor([6, 2, 0])
    batched = ctc_beam_decode(lp, lengths, beam_size=6, blank=4)
    for i in range(3):
        n = int(lengths[i])
        assert batched[i] == ctc_beam_decode(lp[i:i + 1, :n], beam_size=6, blank=4)[0]
        assert 4 not in batched[i]
    assert batched[2] == []


def test_ctc_bad_inputs():
    with pytest.raises(ValueError, match=r"log_probs must be a float tensor of shape \(B, T, V\)"):
        ctc_greedy_decode(torch.randn(4, 5))
    with pytest.raises(ValueError, match="lengths must lie in"):
        ctc_beam_decode(torch.randn(1, 4, 3), torch.tensor([5]))
    with pytest.raises(ValueError, match="blank must be in"):
        ctc_greedy_decode(torch.randn(1, 4, 3), blank=3)
    with pytest.raises(ValueError, match="beam_size"):
        ctc_beam_decode(torch.randn(1, 4, 3), beam_size=0)
    bad = torch.randn(1, 4, 3)
    bad[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ctc_greedy_decode(bad)


def test_retrieval_hand_computed():
    sim = torch.tensor([
        [0.9, 0.1, 0.0],   # clip 0: text 0 first -> rank 1
        [0.8, 0.5, 0.9],   # clip 1: texts 2, 0 above text 1 -> rank 3
        [0.0, 0.7, 0.6],   # clip 2: text 1 above text 2 -> rank 2
    ])
    r = retrieval_metrics(sim, ks=(1, 2, 10))
    assert r["s2t_R@1"] == pytest.approx(100 / 3)
    assert r["s2t_R@2"] == pytest.approx(200 / 3)
    assert r["s2t_R@10"] == pytest.approx(100.0)
    assert r["s2t_MedR"] == 2.0 and r["s2t_MeanR"] == pytest.approx(2.0)
    # text->sign ranks columns. text 0: clip 0 (0.9) best -> 1; text 1: clip 2 (0.7) above
    # clip 1 (0.5) -> 2; text 2: clip 1 (0.9) above clip 2 (0.6) -> 2
    assert r["t2s_R@1"] == pytest.approx(100 / 3)
    assert r["t2s_R@2"] == pytest.approx(100.0)
    assert r["t2s_MedR"] == 2.0 and r["t2s_MeanR"] == pytest.approx(5 / 3)


def test_retrieval_duplicate_texts():
    texts = ["a", "b", "a"]
    pos = positives_from_texts(texts)
    assert pos.tolist() == [[True, False, True], [False, True, False], [True, False, True]]
    sim = torch.tensor([[0.1, 0.0, 0.9], [0.0, 1.0, 0.0], [0.5, 0.4, 0.2]])
    # diagonal ground truth: clip 0 ranks text 0 2nd; with duplicates text 2 == text 0 -> 1st
    assert retrieval_metrics(sim)["s2t_R@1"] == pytest.approx(100 / 3)
    assert retrieval_metrics(sim, pos)["s2t_R@1"] == pytest.approx(100.0)


def test_retrieval_bad_inputs():
    with pytest.raises(ValueError, match="positives is required"):
        retrieval_metrics(torch.randn(2, 3))
    with pytest.raises(ValueError, match="positives must be bool"):
        retrieval_metrics(torch.randn(2, 2), torch.eye(2))
    with pytest.raises(ValueError, match="every row and every column"):
        retrieval_metrics(torch.randn(2, 2), torch.tensor([[True, True], [False, False]]))
    for ks in [(0,), (1, -5), (2.5,), (True,), (), "15", 5]:
        with pytest.raises(ValueError, match="ks must be"):
            retrieval_metrics(torch.randn(2, 2), ks=ks)
    import numpy as np
    assert "s2t_R@2" in retrieval_metrics(torch.randn(2, 2), ks=(np.int64(2),))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[float("nan")]]))


def test_retrieval_ties_count_against_the_query():
    """A collapsed encoder (all similarities equal) scored R@1 = 100 with 'strictly higher' ranks."""
    m = retrieval_metrics(torch.zeros(12, 12), ks=(1, 5))
    assert m["s2t_R@1"] == 0.0 and m["t2s_R@1"] == 0.0 and m["s2t_MedR"] == 12.0 and m["s2t_R@5"] == 0.0
    # one tie with a wrong candidate: rank 2 for that query, others unaffected
    sim = torch.eye(3)
    sim[0, 2] = 1.0
    m = retrieval_metrics(sim, ks=(1,))
    assert m["s2t_R@1"] == pytest.approx(200 / 3) and m["s2t_MeanR"] == pytest.approx(4 / 3)


def test_median_rank_of_an_even_count_is_the_usual_median():
    """torch.median took the lower middle rank: ranks 1,1,2,3 gave MedR 1, papers (numpy,
    CLIP4Clip) report 1.5."""
    sim = torch.tensor([[1.0, 0.0, 0.0, 0.0],    # rank 1
                        [0.0, 1.0, 0.0, 0.0],    # rank 1
                        [0.0, 0.0, 0.5, 0.9],    # rank 2
                        [0.9, 0.8, 0.0, 0.1]])   # rank 3
    r = retrieval_metrics(sim)
    assert r["s2t_MedR"] == 1.5


def test_ctc_decoders_take_minus_inf_log_probs():
    lp = torch.tensor([[[float("-inf"), 0.0, float("-inf")], [0.0, float("-inf"), float("-inf")]]])
    assert ctc_greedy_decode(lp) == [[1]]
    assert ctc_beam_decode(lp, beam_size=4) == [[1]]
    bad = lp.clone()
    bad[0, 1] = float("-inf")
    with pytest.raises(ValueError, match="frame 1 of sample 0 is -inf for every symbol"):
        ctc_greedy_decode(bad)
    assert ctc_greedy_decode(bad, lengths=torch.tensor([1])) == [[1]]  # past the length: not read
    for v in (float("nan"), float("inf")):
        bad = lp.clone()
        bad[0, 0, 0] = v
        with pytest.raises(ValueError, match="NaN or \\+inf"):
            ctc_greedy_decode(bad)
