"""compute_metrics: the per-clip records of the task models turned into each task's metrics."""
import pytest
import torch

from slpfast.finetune_tasks import compute_metrics


def _retrieval_records(sign, text, texts):
    return [(i, torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), x)
            for i, (s, t, x) in enumerate(zip(sign, text, texts))]


def test_retrieval_counts_a_sentence_shared_by_many_clips_once():
    """Clips 1-5 share sentence "b". Clip 0 (sentence "a") ranks "b" first and its own sentence
    second: rank 2, not 6 (the five copies of "b" in the text gallery are one wrong answer)."""
    e = [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]
    texts = ["a"] + ["b"] * 5 + ["c"]
    sign = [[0.5, 0.9, 0.1]] + [e[1]] * 5 + [e[2]]
    text = [e[0]] + [e[1]] * 5 + [e[2]]
    m = compute_metrics("retrieval", _retrieval_records(sign, text, texts))
    assert m["s2t_R@1"] == pytest.approx(600 / 7)
    assert m["s2t_R@5"] == pytest.approx(100.0)          # was 6/7: clip 0 at rank 6
    assert m["s2t_MeanR"] == pytest.approx(8 / 7)
    # text->sign: each distinct sentence is one query, answered by any clip of it
    assert m["t2s_R@1"] == pytest.approx(100.0) and m["n_text"] == 3 and m["n_sign"] == 7


def test_retrieval_without_duplicates_is_the_plain_diagonal_metric():
    from slpfast.eval.retrieval import retrieval_metrics

    g = torch.Generator().manual_seed(0)
    sign, text = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    texts = [f"sentence {i}" for i in range(9)]
    m = compute_metrics("retrieval", _retrieval_records(sign.tolist(), text.tolist(), texts))
    assert m == pytest.approx(retrieval_metrics(sign @ text.t()))
