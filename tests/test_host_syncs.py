"""A training step waits for the GPU at most twice: nothing else drains the GPU's queue.

On the CPU, :class:`host_reads.HostReads` lists every host read of a tensor made by our code;
a GPU run skips the value checks that only run on CPU tensors and keeps its metadata on the
host, so the tests bound the reads to those sites plus the contrastive scale and the step's
one summary. On a GPU (``cuda`` tests, run by bench/gpu_check.sh), CUDA's trace hooks count
the real synchronizations, including those inside custom ops.
"""
from __future__ import annotations

import os

import pytest
import torch

from _pretrain_common import tiny_args, tiny_store
from host_reads import HostReads
from slpfast.train.config import parse_args
from slpfast.train.trainer import Trainer

#: host reads that a GPU run does not make: checks of values that run only on CPU tensors
CPU_ONLY_CHECKS = {"ops/_validate.py:check_lengths", "ops/_validate.py:check_cu_seqlens",
                   "ops/attention.py:_check_values", "ops/attention_backends.py:_sdpa_padded",
                   "models/masking.py:sample_joint_mask", "models/encoder.py:_packed_positions",
                   "ops/packing.py:unpack_packed"}
#: reads of metadata that lives on the host in a GPU run too (the lengths prepare() keeps there)
HOST_METADATA = {"train/data.py:prepare", "train/data.py:_valid_rows", "ops/pose.py:augment_pose"}
#: the reads a GPU step makes: the contrastive loss's scale, once per micro-batch (its kernels
#: take it as a host float), and the step's summary (losses, gradient norm, skip and stop flags)
#: once at its end
PER_MICRO_BATCH = {"ops/contrastive.py:_check_scale": 1}
PER_STEP = {"train/pending.py:result": 1}


def _step_reads(trainer: Trainer) -> HostReads:
    """HostReads of one train_step, the loader's batch and prepare()'s host lengths exempt."""
    batch = trainer.data.next_batch(0)
    trainer.data.next_batch = lambda step: batch
    prepare = trainer.data.prepare
    reads = HostReads(exempt=[v for v in batch.values() if isinstance(v, torch.Tensor)])

    def spy(*args, **kw):
        out = prepare(*args, **kw)
        reads.exempt(out["host_lengths"])
        return out

    trainer.data.prepare = spy
    with reads:
        trainer.train_step()
    return reads


@pytest.mark.parametrize("over", [{"data.packed": "false"}, {"data.packed": "true"}, {"optim.accum_steps": 2},
                                  {"text.finegrained_weight": 0.5, "mpm.strategy": "spans"}],
                         ids=["padded", "packed", "accumulation", "finegrained-spans"])
def test_train_step_reads_the_device_once(tmp_path_factory, tmp_path, over):
    tr = Trainer(parse_args(tiny_args(tiny_store(tmp_path_factory), str(tmp_path), **over)))
    try:
        tr.train_step()  # warm-up (first-call work is not what a step costs)
        reads = _step_reads(tr)
    finally:
        tr.close()
    accum = int(over.get("optim.accum_steps", 1))
    allowed = CPU_ONLY_CHECKS | HOST_METADATA | set(PER_MICRO_BATCH) | set(PER_STEP)
    unexpected = [s for s, f in zip(reads.sites, reads.functions) if f not in allowed]
    assert not unexpected, "new host reads in the training step:\n" + "\n".join(unexpected)
    bounds = {**{f: n * accum for f, n in PER_MICRO_BATCH.items()}, **PER_STEP}
    for function, most in bounds.items():
        n = reads.functions.count(function)
        assert n <= most, f"{function} reads the device {n} times per step (at most {most}):\n{reads.report()}"
    assert reads.functions.count("train/pending.py:result") == 1  # the summary is read


def test_host_reads_counts_the_reads_of_our_code():
    """The counter itself: reads made by slpfast code are recorded with their function, reads
    made outside slpfast/ and kernels/ are not."""
    from slpfast.models.masking import sample_joint_mask

    lengths = torch.tensor([3, 5])
    with HostReads() as reads:
        sample_joint_mask(lengths, 6, strategy="joints")
        int(lengths.max())  # this file is not slpfast code
    assert reads.functions == ["models/masking.py:sample_joint_mask"] * 2  # CPU lengths: min and max checked
    # (exemption is exercised by the step tests: train_step reads prepare()'s host lengths directly)


def test_pipelined_run_matches_the_synchronous_one(tmp_path_factory, tmp_path):
    """run() with a step queued ahead of the one it reads (the GPU default) logs, checkpoints
    and skips exactly as the synchronous loop does."""
    store = tiny_store(tmp_path_factory)
    runs = {}
    for depth in (0, 1):
        over = {"train.steps": 9, "train.ckpt_every": 4, "train.log_every": 2, "train.export": ""}
        tr = Trainer(parse_args(tiny_args(store, str(tmp_path / f"d{depth}"), **over)))
        tr.pipeline_depth = depth
        forward = tr.model.forward

        def poisoned(**kw):  # step 5 (0-based counter 5 while it runs) is non-finite
            out = forward(**kw)
            if tr.step == 5:
                out["loss"] = out["loss"] * float("nan")
            return out

        tr.model.forward = poisoned
        try:
            summary = tr.run()
        finally:
            tr.close()
        runs[depth] = summary
        assert summary["status"] == "completed" and summary["step"] == 9 and summary["nonfinite_total"] == 1
        assert sorted(os.listdir(tmp_path / f"d{depth}" / "checkpoints")) == ["step_00000004.pt", "step_00000008.pt",
                                                                           "step_00000009.pt"]
    timing = ("mfu", "data_wait", "peak_mem_gib")

    def strip(history):  # the records without their timings
        return [{k: v for k, v in r.items() if "per_s" not in k and k not in timing} for r in history]

    assert strip(runs[0]["history"]) == strip(runs[1]["history"])


def test_pipelined_run_stops_on_sigterm(tmp_path_factory, tmp_path):
    tr = Trainer(parse_args(tiny_args(tiny_store(tmp_path_factory), str(tmp_path), **{"train.steps": 20})))
    tr.pipeline_depth = 1
    issue = tr.issue_step

    def issue_then_signal():
        pending = issue()
        if tr.step == 3:
            tr._on_sigterm(None, None)
        return pending

    tr.issue_step = issue_then_signal
    try:
        summary = tr.run()
    finally:
        tr.close()
    # the flag rides on step 4's flags; step 5 was queued before step 4 was read
    assert summary["status"] == "preempted" and summary["step"] == 5


def test_device_copier_on_the_cpu_is_a_plain_move():
    from slpfast.train.device_copy import DeviceCopier

    copier = DeviceCopier(torch.device("cpu"))
    a, b = torch.arange(5), torch.ones(2, 3)
    assert copier.stream is None
    out = copier(a, b)
    assert torch.equal(out[0], a) and torch.equal(out[1], b)


# --------------------------------------------------------------------------- on a GPU
_SYNCS = {"installed": False, "on": False, "n": 0}


def _count_sync(*_):
    if _SYNCS["on"]:
        _SYNCS["n"] += 1


def _syncs(fn) -> int:
    """Number of times the host waits for the GPU while ``fn()`` runs: stream, event and
    device synchronizations as CUDA's trace hooks report them, from any call path.
    (``torch.cuda.set_sync_debug_mode`` misses both a sync inside a ``torch.ops`` call, whose
    warning never reaches Python, and ``cudaEventSynchronize``.)"""
    from torch.cuda import _gpu_trace

    if not _SYNCS["installed"]:  # the hooks cannot be removed: one counter per process
        torch._C._activate_gpu_trace()
        _gpu_trace.register_callback_for_stream_synchronization(_count_sync)
        _gpu_trace.register_callback_for_event_synchronization(_count_sync)
        _gpu_trace.register_callback_for_device_synchronization(_count_sync)
        _SYNCS["installed"] = True
    torch.cuda.synchronize()
    _SYNCS["n"], _SYNCS["on"] = 0, True
    try:
        fn()
    finally:
        _SYNCS["on"] = False
    return _SYNCS["n"]


@pytest.fixture
def no_autotuning(monkeypatch):
    """Autotuning times candidates (synchronizing) on the first call per size bucket: a
    measured step must not be the first of its bucket."""
    monkeypatch.setenv("SLPFAST_ATTN_AUTOTUNE", "0")
    monkeypatch.setenv("SLPFAST_AUTOTUNE", "0")


@pytest.mark.cuda
def test_gpu_side_stream_copies_are_waited_for_without_a_sync():
    """Copies on the side stream overlap queued compute, and kernels queued after them on the
    compute stream see the copied values (the compute stream waits for the copy stream)."""
    from slpfast.train.device_copy import DeviceCopier

    copier = DeviceCopier(torch.device("cuda"))
    big = torch.randn(4096, 4096, device="cuda")
    host = [torch.full((1 << 22,), float(i)).pin_memory() for i in range(3)]

    def go():
        for _ in range(4):  # a queue of work on the compute stream
            big.matmul(big)
        return [t.sum() for t in copier(*host)]  # used at once, on the compute stream

    go()
    assert _syncs(go) == 0
    assert [float(s) for s in go()] == [float(i * (1 << 22)) for i in range(3)]


@pytest.mark.cuda
def test_sync_counter_sees_reads_inside_ops_and_event_waits():
    """The counter itself: a read of a device value, a blocking copy made inside a custom op's
    C++ code, and an event wait each count; queued work alone does not."""
    x = torch.ones(1000, device="cuda")
    assert _syncs(lambda: x.mul_(2).add_(1)) == 0
    assert _syncs(lambda: x.sum().item()) == 1
    event = torch.cuda.Event()
    event.record()
    assert _syncs(event.synchronize) == 1
    host = torch.ones(4, dtype=torch.int32)  # pageable: the copy synchronizes the stream
    assert _syncs(lambda: host.to("cuda")) >= 1


@pytest.mark.cuda
@pytest.mark.parametrize("packed", [False, True])
def test_gpu_encoder_forward_backward_has_no_sync(packed, no_autotuning):
    from slpfast.models.encoder import PoseEncoder, PoseEncoderConfig
    from slpfast.layouts import NUM_JOINTS

    torch.manual_seed(0)
    enc = PoseEncoder(PoseEncoderConfig(dim=64, heads=2, manual_layers=2, non_manual_layers=2)).cuda()
    lengths = torch.tensor([5, 17, 0, 32], device="cuda")
    B, T = 4, 32
    if packed:
        cu = torch.tensor([0, 5, 22, 22, 54], dtype=torch.int32, device="cuda")
        pose, conf = torch.randn(54, NUM_JOINTS, 2, device="cuda"), torch.rand(54, NUM_JOINTS, device="cuda")
        kw = dict(cu_seqlens=cu, max_seqlen=32)
    else:
        pose, conf = torch.randn(B, T, NUM_JOINTS, 2, device="cuda"), torch.rand(B, T, NUM_JOINTS, device="cuda")
        kw = dict(lengths=lengths)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = enc(pose, conf, **kw)
        out.pooled.float().sum().backward()

    step()  # warm-up: autotuning and compilation synchronize
    assert _syncs(step) == 0


@pytest.mark.cuda
def test_gpu_pose_ops_with_host_lengths_have_no_sync():
    from slpfast.ops import augment_pose, normalize_pose
    from slpfast.ops.pose import AugmentConfig
    from slpfast.layouts import NUM_JOINTS

    lengths = torch.tensor([7, 0, 31, 32])
    pose = torch.randn(4, 32, NUM_JOINTS, 3, device="cuda").half()
    conf = torch.rand(4, 32, NUM_JOINTS, device="cuda")
    ids = torch.tensor([3, 1, 4, 1])
    cfg = AugmentConfig(speed_min=0.8, speed_max=1.2, jitter_std=0.01)

    def both():
        normalize_pose(pose, conf, lengths)
        return augment_pose(pose, conf, lengths, seed=5, clip_ids=ids, config=cfg, normalize=True)

    both()
    assert _syncs(both) == 0
    out, out_conf, out_lengths = both()
    assert out_lengths.device.type == "cpu"
    # device metadata: the parameters are sampled on the GPU (equal to the host's within 1e-15,
    # see test_pose_cuda), the same outputs up to a rounding step of float16
    ref = augment_pose(pose, conf, lengths.cuda(), seed=5, clip_ids=ids.cuda(), config=cfg, normalize=True)
    assert torch.equal(out_lengths, ref[2].cpu())
    torch.testing.assert_close(out.float(), ref[0].float(), rtol=0, atol=2e-3)
    torch.testing.assert_close(out_conf, ref[1], rtol=0, atol=1e-6)


@pytest.mark.cuda
def test_gpu_train_step_syncs_at_most_twice(tmp_path_factory, tmp_path, no_autotuning):
    tr = Trainer(parse_args(tiny_args(tiny_store(tmp_path_factory), str(tmp_path), **{"model.attn_backend": "auto"})))
    try:
        tr.train_step()
        tr.train_step()
        n = _syncs(tr.train_step)
    finally:
        tr.close()
    assert n <= sum(PER_MICRO_BATCH.values()) + sum(PER_STEP.values()), f"{n} synchronizing calls in one step"


@pytest.mark.cuda
def test_to_device_never_reads_a_pinned_source_after_returning():
    """A pinned source was copied asynchronously from the caller's own buffer: overwriting it
    right after the call could change what arrived on the GPU."""
    from slpfast._transfer import to_device

    src = torch.arange(1 << 20, dtype=torch.float32).pin_memory()
    torch.cuda._sleep(50_000_000)  # keep the stream busy so the copy is still queued below
    out = to_device(src, torch.device("cuda"))
    src.fill_(-1.0)
    assert torch.equal(out.cpu(), torch.arange(1 << 20, dtype=torch.float32))
