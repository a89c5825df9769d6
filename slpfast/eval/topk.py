"""Top-k accuracy for isolated sign recognition (ISLR), per instance and per class.

*Per instance* is the fraction of test clips whose label is among the k highest logits.
*Per class* is the mean over classes of each class's own top-k accuracy; only classes that have
at least one test clip enter the mean (a class absent from the test split has no accuracy).
Per-class accuracy is the number WLASL / MS-ASL report next to per-instance accuracy, because
the per-instance number is dominated by the frequent classes.

Everything is computed from per-class counters ``hits[k] (C,)`` and ``count (C,)``, so that
batched evaluation (:class:`TopKAccumulator`) and distributed evaluation (sum the counters
over ranks) give exactly the numbers of one call on the whole test set.

When ``k`` is larger than the number of classes C, top-k is top-C (every clip is a hit).
Ties count against the label, as the retrieval ranks do: the label is in the top k when fewer
than k other classes score at least as high as it. (``torch.topk`` breaks ties in no documented
order, so a collapsed model with constant logits was credited with whichever class it picked.)
"""
from __future__ import annotations

from typing import Sequence

import torch

from slpfast.ops._validate import describe, fail

_OP = "topk_accuracy"


def _check(logits, labels, ks) -> tuple[int, ...]:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        got = describe(logits) if isinstance(logits, torch.Tensor) else type(logits).__name__
        fail(_OP, f"logits must be a float tensor of shape (N, C), got {got}")
    if not logits.is_floating_point():
        fail(_OP, f"logits must be floating point, got {describe(logits)}")
    n, c = logits.shape
    if logits.numel() and bool(torch.isnan(logits).any()):  # topk ranks NaN first: a diverged model would score
        fail(_OP, f"logits contain NaN ({int(torch.isnan(logits).any(1).sum())} of {n} rows)")
    if c < 1:
        fail(_OP, f"logits must have at least one class, got {describe(logits)}")
    if (not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != n
            or labels.dtype not in (torch.int32, torch.int64)):
        got = describe(labels) if isinstance(labels, torch.Tensor) else type(labels).__name__
        fail(_OP, f"labels must be int32/int64 of shape (N,)=({n},), got {got}")
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= c:
            fail(_OP, f"labels must lie in [0, C-1={c - 1}] (filter unlabelled clips, label -1, "
                      f"before evaluating), got values in [{lo}, {hi}]")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        fail(_OP, f"ks must be a non-empty sequence of positive ints, got {ks}")
    return ks


def topk_counts(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class hit counters.

    Args:
        logits: (N, C) class scores.
        labels: (N,) int64 ground-truth class in [0, C).
        ks: the k values.

    Returns:
        ``hits (len(ks), C) int64`` (clips of class c with the label in the top k) and
        ``count (C,) int64`` (clips of class c).
    """
    ks = _check(logits, labels, ks)
    n, c = logits.shape
    labels = labels.long()
    lg = logits.detach()
    own = lg.gather(1, labels[:, None])                                 # (N, 1) the label's logit
    rank = (lg >= own).sum(1) - 1                                       # (N,) others at least as high
    hits = torch.zeros(len(ks), c, dtype=torch.int64, device=logits.device)
    for i, k in enumerate(ks):
        hits[i].index_add_(0, labels, (rank < min(k, c)).long())
    count = torch.bincount(labels, minlength=c).to(torch.int64)
    return hits, count


def summarize(hits: torch.Tensor, count: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Counters -> ``{"top{k}": per-instance %, "top{k}_per_class": per-class %, "n": N}``."""
    total = int(count.sum())
    if total == 0:
        fail(_OP, "no labelled clips to evaluate (N=0)")
    present = count > 0
    out: dict[str, float] = {"n": total}
    for i, k in enumerate(ks):
        out[f"top{k}"] = 100.0 * float(hits[i].sum()) / total
        per_class = hits[i][present].double() / count[present].double()
        out[f"top{k}_per_class"] = 100.0 * float(per_class.mean())
    return out


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)
                  ) -> dict[str, float]:
    """Top-k accuracy (percent) per instance and per class.

    Args:
        logits: (N, C) class scores.
        labels: (N,) int ground truth in [0, C).
        ks: which k to report (default top-1 and top-5).

    Returns:
        ``{"top1": .., "top1_per_class": .., "top5": .., "top5_per_class": .., "n": N}``.
    """
    ks = _check(logits, labels, ks)
    hits, count = topk_counts(logits, labels, ks)
    return summarize(hits, count, ks)


class TopKAccumulator:
    """Accumulates :func:`topk_counts` over batches (and ranks) for one final summary.

    ``update(logits (B, C), labels (B,))`` per batch; ``all_reduce()`` sums the counters over
    the default process group when torch.distributed is initialised; ``compute()`` returns the
    dict of :func:`topk_accuracy`.
    """

    def __init__(self, num_classes: int, ks: Sequence[int] = (1, 5)):
        if num_classes < 1:
            fail("TopKAccumulator", f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ks = tuple(int(k) for k in ks)
        self.hits = torch.zeros(len(self.ks), self.num_classes, dtype=torch.int64)
        self.count = torch.zeros(self.num_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[1] != self.num_classes:
            fail("TopKAccumulator", f"logits must have C={self.num_classes} columns, got {describe(logits)}")
        hits, count = topk_counts(logits, labels, self.ks)
        self.hits += hits.cpu()
        self.count += count.cpu()

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            # counters travel on the backend's device (NCCL needs CUDA tensors)
            dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            buf = torch.cat([self.hits.flatten(), self.count]).to(dev)
            dist.all_reduce(buf)
            buf = buf.cpu()
            self.hits = buf[: self.hits.numel()].view_as(self.hits).clone()
            self.count = buf[self.hits.numel():].clone()

    def compute(self) -> dict[str, float]:
        return summarize(self.hits, self.count, self.ks)
