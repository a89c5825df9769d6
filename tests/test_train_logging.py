"""What the interval records say: an interval whose every step was skipped (non-finite) has no
loss, not a loss of 0."""
from __future__ import annotations

import json
import os

from _pretrain_common import tiny_args, tiny_store
from slpfast.train.config import parse_args
from slpfast.train.logging import format_line
from slpfast.train.trainer import Trainer


def test_an_interval_of_skipped_steps_logs_no_loss(tmp_path_factory, tmp_path):
    store = tiny_store(tmp_path_factory)
    tr = Trainer(parse_args(tiny_args(store, str(tmp_path), **{"train.steps": 6, "train.log_every": 2,
                                                               "train.ckpt_every": 0, "train.export": ""})))
    real_forward = tr.model.forward

    def forward(**kw):  # steps 3 and 4 (0-based 2, 3): the whole second interval is non-finite
        out = real_forward(**kw)
        if tr.step in (2, 3):
            out["loss"] = out["loss"] * float("nan")
        return out

    tr.model.forward = forward
    try:
        hist = tr.run()["history"]
    finally:
        tr.close()
    by_step = {r["step"]: r for r in hist}
    assert sorted(by_step) == [2, 4, 6]
    assert by_step[4]["skipped"] == 2 and by_step[4]["steps_in_interval"] == 0
    assert by_step[4]["loss/loss"] is None and by_step[4]["loss/mpm"] is None and by_step[4]["grad_norm"] is None
    for s in (2, 6):
        assert by_step[s]["loss/loss"] > 0 and by_step[s]["grad_norm"] > 0
    line = format_line(by_step[4])
    assert "loss -" in line and "gnorm -" in line and "skipped 2" in line, line
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        recs = {r["step"]: r for r in map(json.loads, f)}
    assert recs[4]["loss/loss"] is None and recs[2]["loss/loss"] == by_step[2]["loss/loss"]


def test_slow_and_fast_throughputs_keep_their_digits():
    rec = {"step": 1, "total_steps": 2, "loss/loss": 1.0, "lr": 1e-3, "grad_norm": 1.0, "clips_per_s": 0.4,
           "frames_per_s": 25.0, "data_wait": 0.0, "mfu": None, "peak_mem_gib": 1.0}
    assert "0.4 clips/s 25 frames/s" in format_line(rec)
    rec.update(clips_per_s=410.4, frames_per_s=25_140.0)
    assert "410 clips/s 25.1k frames/s" in format_line(rec)
