"""Downstream evaluation metrics (all scores in percent, 0..100).

- :mod:`.topk`: ISLR top-k accuracy, per instance and per class (``topk_accuracy``,
  ``TopKAccumulator`` for batched / distributed evaluation).
- :mod:`.wer`: word edit distance and WER with substitution / deletion / insertion counts.
- :mod:`.ctc_decode`: CTC greedy and prefix beam-search decoding.
- :mod:`.retrieval`: R@1/5/10, median and mean rank, sign->text and text->sign.
- :mod:`.bleu`: corpus BLEU-1..4 (sacrebleu when installed, an equivalent own implementation
  otherwise).
- :mod:`.rouge`: ROUGE-L (LCS F-measure), sentence-averaged.
"""
from __future__ import annotations

import importlib

_NAMES = {
    "topk_accuracy": "topk",
    "TopKAccumulator": "topk",
    "edit_ops": "wer",
    "word_error_rate": "wer",
    "ctc_greedy_decode": "ctc_decode",
    "ctc_beam_decode": "ctc_decode",
    "retrieval_metrics": "retrieval",
    "corpus_bleu": "bleu",
    "tokenize_13a": "bleu",
    "rouge_l": "rouge",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slpfast.eval' has no attribute {name!r}")
