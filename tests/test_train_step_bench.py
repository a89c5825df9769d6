"""bench/train_step.py: how steps are timed, how MFU is computed, and the baseline's data path."""
from __future__ import annotations

import argparse
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import train_step as bench  # noqa: E402
from _pretrain_common import tiny_args, tiny_store  # noqa: E402


class _Pending:
    def __init__(self, stats):
        self.stats = stats

    def result(self):
        return None, dict(self.stats)


class _FakeTrainer:
    """Steps whose FLOPs are their own index: which step a number came from is visible."""

    def __init__(self, depth):
        self.pipeline_depth, self.issued = depth, 0

    def issue_step(self):
        self.issued += 1
        return _Pending({"flops": float(self.issued - 1)})


@pytest.mark.parametrize("depth", [0, 1])
def test_time_steps_gives_the_flops_of_the_timed_steps(depth):
    """MFU took the FLOPs of the last step run (on a GPU one past the timed ones) against the
    median time of the timed steps; the clips' lengths, and so the FLOPs, vary per batch."""
    tr = _FakeTrainer(depth)
    times, host, flops, _ = bench.time_steps(tr, warmup=2, repeats=4)
    assert len(times) == len(flops) == 4
    assert flops == [2.0, 3.0, 4.0, 5.0]  # the warm-up steps (0, 1) and any drained step left out


def test_mfu_is_mean_timed_flops_over_median_time():
    assert bench.mfu([1e12, 3e12, 2e12], [100.0, 300.0, 200.0], 1e13) == pytest.approx(1.0)
    assert bench.mfu([1e12], [100.0], None) is None  # CPU: no peak
    with pytest.raises(ValueError):
        bench.mfu([1e12], [100.0, 200.0], 1e13)


def test_baseline_prepare_keeps_host_lengths_and_copies_like_the_trainer(tmp_path_factory, tmp_path):
    """The baseline moved its batch with blocking .to(device) copies and gave the trainer no host
    lengths, so the trainer read the device lengths back: on a GPU two waits per step for the
    queued step, which the slpfast side does not have (it overlaps host and GPU work)."""
    from slpfast.train.config import parse_args
    from slpfast.train.trainer import Trainer
    from _train_baseline import baseline_collate

    tr = Trainer(parse_args(tiny_args(tiny_store(tmp_path_factory), str(tmp_path))))
    try:
        copied = []
        real_copy = tr.data.copier

        def recording_copy(*tensors):
            copied.extend(tensors)
            return real_copy(*tensors)

        tr.data.copier = recording_copy
        bench._baseline(tr, argparse.Namespace(workers=1))
        ds = tr.data.loader.dataset
        batch = baseline_collate([ds[k] for k in range(tr.cfg.data.batch_size)])
        out = tr.data.prepare(batch, 0, 0, tr.device)
        assert out["host_lengths"] is batch["lengths"]
        assert any(t is batch["pose"] for t in copied) and any(t is batch["conf"] for t in copied)
        assert any(t is batch["lengths"] for t in copied)
        # a whole step runs on the prepared batch and counts its clips and frames from the host
        tr.data.next_batch = lambda step: batch
        _, stats = tr.train_step()
        assert stats["clips"] == len(batch["lengths"]) and stats["frames"] == int(batch["lengths"].sum())
        assert stats["flops"] > 0
    finally:
        tr.close()
