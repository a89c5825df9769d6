"""Training logs: one line per interval, a tqdm bar on rank 0, JSONL and TensorBoard.

:class:`IntervalMeter` accumulates per-step numbers on every rank; at the end of an interval the
trainer all-reduces its totals (so throughput is global) and hands the record to
:class:`RunLogger`, which only rank 0 writes:

``step 120/300 | loss 0.8123 mpm 0.4110 nce 0.4013 | lr 8.1e-04 | gnorm 0.93 | 410 clips/s 25.1k frames/s | data 3.2% | mfu - | mem 1.21 GiB``
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time

import torch


class IntervalMeter:
    """Sums of one interval: loss terms, clips, frames, time in data loading and in total."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss_sums: dict[str, float] = {}
        self.steps = 0
        self.skipped = 0
        self.clips = 0
        self.frames = 0
        self.flops = 0.0
        self.data_s = 0.0
        self.grad_norm_sum = 0.0
        self.t0 = time.perf_counter()

    def add(self, losses: dict[str, float], clips: int, frames: int, data_s: float, grad_norm: float, flops: float) -> None:
        for k, v in losses.items():
            self.loss_sums[k] = self.loss_sums.get(k, 0.0) + v
        self.steps += 1
        self.clips += clips
        self.frames += frames
        self.data_s += data_s
        self.grad_norm_sum += grad_norm
        self.flops += flops

    def totals(self, keys: list[str]) -> torch.Tensor:
        """float64 vector [clips, frames, flops, data_s, loss sums in ``keys`` order, steps] to all-reduce."""
        vals = [self.clips, self.frames, self.flops, self.data_s] + [self.loss_sums.get(k, 0.0) for k in keys] + [self.steps]
        return torch.tensor(vals, dtype=torch.float64)


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated GPU memory, or this process's peak RSS on CPU, in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def _drop_records_after(path: str, step: int) -> None:
    """Rewrite a JSONL log (atomically) without the records of steps after ``step``: a run resumed
    from that step logs them again, and the killed run's copies would be duplicates."""
    keep = []
    with open(path) as f:
        for line in f:
            try:
                rec_step = json.loads(line).get("step")
            except ValueError:  # a line cut by the kill
                continue
            if not isinstance(rec_step, int) or rec_step <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(keep)
    os.replace(tmp, path)


class RunLogger:
    """Rank-0 sink for interval records (stdout line, JSONL, TensorBoard) plus the tqdm bar."""

    def __init__(self, out_dir: str, *, enabled: bool, total_steps: int, start_step: int, progress: bool,
                 tensorboard: bool, name: str = "pretrain"):
        self.enabled = enabled
        self.bar = None
        self.jsonl = None
        self.tb = None
        self._files = (out_dir, start_step, tensorboard, name)
        self._files_failed = False  # a log write failed (a full disk): the console only from then on
        if not enabled:
            return
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=name, dynamic_ncols=True,
                            file=sys.stderr, mininterval=1.0)

    def advance(self, n: int = 1, postfix: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def _open_files(self) -> None:
        """Open the JSONL and TensorBoard logs, at the first record: a run that fails before its
        first step leaves the folder (an earlier run's logs included) as it was."""
        out_dir, start_step, tensorboard, name = self._files
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "metrics.jsonl")
        if start_step > 0 and os.path.isfile(path):
            _drop_records_after(path, start_step)
        self.jsonl = open(path, "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))
            except ImportError:  # tensorboard is optional; say so once
                print(f"slpfast.{name}: tensorboard not installed, TensorBoard logs disabled", file=sys.stderr)

    def write(self, record: dict) -> None:
        """Print the interval line and append ``record`` to the JSONL and TensorBoard logs."""
        if not self.enabled:
            return
        line = format_line(record)
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)
        sys.stdout.flush()
        if self._files_failed:
            return
        try:
            if self.jsonl is None:
                self._open_files()
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
            if self.tb is not None:
                for k, v in record.items():
                    if isinstance(v, (int, float)) and k != "step" and v is not None:
                        self.tb.add_scalar(k, v, record["step"])
                self.tb.flush()
        except OSError as e:
            # Only rank 0 writes logs: raising here would leave the other ranks waiting for it in
            # the next collective. Training goes on; a checkpoint that cannot be written either
            # stops the run with its own error.
            self._files_failed = True
            print(f"slpfast.{self._files[3]}: cannot write the logs in train.out_dir={self._files[0]} "
                  f"({e.strerror or e}); from now on they go to the console only", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        for f in (self.jsonl, self.tb):
            if f is not None:
                try:
                    f.close()
                except OSError:  # a full disk: said at the write that failed
                    pass


def _num(v, fmt: str) -> str:
    """``v`` formatted, or "-" when there is none (an interval of skipped steps has no loss)."""
    return "-" if v is None else format(v, fmt)


def _rate(v: float) -> str:
    """A throughput with the digits that matter: a slow run (a base model on a CPU) showed
    "0 clips/s 0.0k frames/s" with fixed decimals."""
    if v >= 1e4:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def format_line(r: dict) -> str:
    losses = " ".join(f"{k[5:]} {_num(r[k], '.4f')}" for k in r if k.startswith("loss/"))
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
    return (f"step {r['step']}/{r['total_steps']} | {losses} | lr {r['lr']:.2e} | gnorm {_num(r['grad_norm'], '.3f')} | "
            f"{_rate(r['clips_per_s'])} clips/s {_rate(r['frames_per_s'])} frames/s | data {100 * r['data_wait']:.1f}% | "
            f"mfu {mfu} | mem {r['peak_mem_gib']:.2f} GiB" + (f" | skipped {r['skipped']}" if r.get("skipped") else ""))
