"""Pre-training loop in-process: loss falls, exact resume after a kill, non-finite steps, export."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from _pretrain_common import ROOT, env, read_losses, tiny_args, tiny_store
from slpfast.train.config import parse_args
from slpfast.train.trainer import NonFiniteLossError, Trainer


def _trainer(store, out, **over) -> Trainer:
    return Trainer(parse_args(tiny_args(store, str(out), **over)))


def test_loss_falls_over_100_steps(tmp_path_factory, tmp_path):
    store = tiny_store(tmp_path_factory)
    tr = _trainer(store, tmp_path, **{"train.steps": 100, "train.log_every": 10, "train.ckpt_every": 0,
                                      "optim.lr": 2e-3, "optim.warmup_steps": 10})
    try:
        summary = tr.run()
    finally:
        tr.close()
    hist = summary["history"]
    assert summary["status"] == "completed" and len(hist) == 10
    first, last = hist[0], hist[-1]
    assert last["loss/loss"] < 0.75 * first["loss/loss"], (first, last)
    assert last["loss/mpm"] < 0.7 * first["loss/mpm"]
    assert last["loss/nce"] < first["loss/nce"]
    for rec in hist:
        assert rec["clips_per_s"] > 0 and 0 <= rec["data_wait"] <= 1 and rec["peak_mem_gib"] > 0
        assert rec["mfu"] is None  # CPU: no MFU
    # exported encoder loads and encodes
    from slpfast.models import PoseEncoder

    enc = PoseEncoder.from_pretrained(str(tmp_path / "encoder.safetensors"))
    out = enc(torch.randn(2, 5, 123, 2), torch.rand(2, 5, 123), torch.tensor([5, 3]))
    assert out.pooled.shape == (2, 32) and torch.isfinite(out.pooled).all()
    assert os.path.isfile(tmp_path / "metrics.jsonl")


def test_kill_and_resume_gives_identical_losses(tmp_path_factory, tmp_path):
    store = tiny_store(tmp_path_factory)
    over = {"train.steps": 40, "train.ckpt_every": 4, "mpm.strategy": "mixed", "text.finegrained_weight": 0.5}
    # uninterrupted reference run (in this process)
    ref_dir = tmp_path / "ref"
    tr = _trainer(store, ref_dir, **over)
    try:
        tr.run()
    finally:
        tr.close()
    ref = read_losses(str(ref_dir))
    assert sorted(ref) == list(range(1, 41))
    # a separate process, SIGKILLed after its second checkpoint
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "slpfast.pretrain", *tiny_args(store, str(run_dir), **over)],
                            cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = run_dir / "checkpoints" / "step_00000008.pt"
    deadline = time.time() + 180
    while not ck.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ck.exists(), "the run never reached its step-8 checkpoint"
    # resume in this process
    tr = _trainer(store, run_dir, **over, **{"train.resume": "auto"})
    try:
        start_ckpt = tr.maybe_resume()
        tr.cfg.train.resume = ""  # run() must not resume twice
        resumed_at = tr.step
        tr.run()
    finally:
        tr.close()
    assert start_ckpt is not None and 8 <= resumed_at < 40, resumed_at
    got = read_losses(str(run_dir))
    assert sorted(got) == list(range(1, 41))
    assert [got[s] for s in range(1, 41)] == [ref[s] for s in range(1, 41)]  # bit-identical on CPU


def test_nonfinite_steps_are_skipped_then_abort(tmp_path_factory, tmp_path):
    store = tiny_store(tmp_path_factory)
    tr = _trainer(store, tmp_path, **{"train.steps": 20, "train.max_nonfinite": 3, "train.ckpt_every": 0,
                                      "train.export": ""})
    real_forward = tr.model.forward
    poisoned = {2, 4, 5, 6, 7}  # step 2 alone: skipped; 4, 5, 6 in a row: abort at the third

    def forward(**kw):
        out = real_forward(**kw)
        if tr.step in poisoned:
            out["loss"] = out["loss"] * float("nan")
        return out

    tr.model.forward = forward
    before = {}
    orig_step = tr.train_step

    def spy():
        if tr.step == 2:
            before.update({k: v.detach().clone() for k, v in tr.raw_model.state_dict().items()})
        res = orig_step()
        if tr.step == 3:
            after = tr.raw_model.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step changed the weights"
        return res

    tr.train_step = spy
    try:
        with pytest.raises(NonFiniteLossError, match="3 consecutive"):
            tr.run()
    finally:
        tr.close()
    assert tr.nonfinite_total == 4 and tr.step == 7


def test_grad_accumulation_and_fine_grained_term(tmp_path_factory, tmp_path):
    store = tiny_store(tmp_path_factory)
    tr = _trainer(store, tmp_path, **{"train.steps": 3, "optim.accum_steps": 2, "train.ckpt_every": 0,
                                      "text.finegrained_weight": 0.5, "mpm.loss": "l1", "train.tensorboard": "true"})
    try:
        summary = tr.run()
        assert tr.data.loader.state_dict()["step"] == 6  # two micro-batches per optimizer step
    finally:
        tr.close()
    rec = summary["history"][-1]
    assert {"loss/loss", "loss/mpm", "loss/nce", "loss/fg"} <= set(rec)
    torch.testing.assert_close(rec["loss/loss"], rec["loss/mpm"] + rec["loss/nce"] + 0.5 * rec["loss/fg"],
                               rtol=1e-5, atol=1e-5)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))


def _losses_by(store, tmp_path, key: str, values, **over) -> dict:
    """value -> the per-step losses of a short run with ``--{key}=value`` (no checkpoints/export)."""
    losses = {}
    for value in values:
        tr = _trainer(store, tmp_path / value, **{"train.ckpt_every": 0, "train.export": "", key: value, **over})
        try:
            losses[value] = [r["loss/loss"] for r in tr.run()["history"]]
        finally:
            tr.close()
    return losses


def test_packed_batches_train_like_padded(tmp_path_factory, tmp_path):
    losses = _losses_by(tiny_store(tmp_path_factory), tmp_path, "data.packed", ("false", "true"),
                        **{"train.steps": 3, "text.finegrained_weight": 0.5})
    # same clips, augmentation, masks and weights: only the layout differs (float rounding)
    assert len(losses["true"]) == 3
    torch.testing.assert_close(losses["true"], losses["false"], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compiled_model_trains_like_eager(tmp_path_factory, tmp_path):
    """--train.compile=true (inductor; on CPU here, ~1.5 min of compiling): same losses as eager.
    On a GPU the triton attention backend is compiled by tests/test_attention_triton.py."""
    losses = _losses_by(tiny_store(tmp_path_factory), tmp_path, "train.compile", ("false", "true"),
                        **{"train.steps": 2})
    assert len(losses["true"]) == 2
    torch.testing.assert_close(losses["true"], losses["false"], rtol=1e-3, atol=1e-3)


@pytest.mark.cuda
def test_gpu_steps_bf16_with_mfu(tmp_path_factory, tmp_path):
    store = tiny_store(tmp_path_factory)
    tr = _trainer(store, tmp_path, **{"train.steps": 6, "train.log_every": 3, "train.ckpt_every": 0,
                                      "model.attn_backend": "auto", "data.packed": "true"})
    try:
        assert tr.device.type == "cuda" and tr.bf16
        hist = tr.run()["history"]
    finally:
        tr.close()
    assert all(torch.isfinite(torch.tensor(r["loss/loss"])) for r in hist)
    name = torch.cuda.get_device_name()
    if any(k in name for k in ("H100", "H200", "A100")):
        assert hist[-1]["mfu"] is not None and 0 < hist[-1]["mfu"] < 1
    assert hist[-1]["peak_mem_gib"] > 0


def test_dali_loader_trains_like_torch_loader(tmp_path_factory, tmp_path):
    pytest.importorskip("nvidia.dali")
    losses = _losses_by(tiny_store(tmp_path_factory), tmp_path, "data.loader", ("torch", "dali"),
                        **{"train.steps": 2})
    assert losses["dali"] == losses["torch"]  # the loaders yield identical batches


def test_resume_errors_are_one_line_exit_2(tmp_path_factory, tmp_path, capsys):
    """Resuming into a model of another shape, or from a damaged checkpoint, and a truncated store
    shard: exit 2 with one line naming the cause, not a load_state_dict / ShardError traceback."""
    import shutil

    from slpfast import pretrain

    store = tiny_store(tmp_path_factory)
    out = str(tmp_path / "run")
    assert pretrain.main(tiny_args(store, out, **{"train.steps": 1, "train.tensorboard": False})) == 0
    capsys.readouterr()
    rc = pretrain.main(tiny_args(store, out, **{"train.steps": 2, "train.resume": "auto", "model.dim": 64}))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "train.resume" in err and "another shape" in err and "model.dim: checkpoint 32, this run 64" in err
    with open(os.path.join(out, "checkpoints", "step_00000002.pt"), "wb") as f:
        f.write(b"PK\x03\x04 damaged")
    rc = pretrain.main(tiny_args(store, out, **{"train.steps": 3, "train.resume": "auto"}))
    err = capsys.readouterr().err
    assert rc == 2 and "step_00000002.pt cannot be read" in err and "Traceback" not in err, err
    # a checkpoint path that does not exist; a run folder resolves to its latest checkpoint
    rc = pretrain.main(tiny_args(store, out, **{"train.steps": 3, "train.resume": str(tmp_path / "nope.pt")}))
    err = capsys.readouterr().err
    assert rc == 2 and "nope.pt' does not exist" in err and "Traceback" not in err, err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = pretrain.main(tiny_args(store, out, **{"train.steps": 3, "train.resume": str(empty)}))
    err = capsys.readouterr().err
    assert rc == 2 and "holds no checkpoint" in err and "Traceback" not in err, err
    bad = str(tmp_path / "store")
    shutil.copytree(store, bad)
    shard = sorted(f for f in os.listdir(bad) if f.endswith(".slp"))[0]
    os.truncate(os.path.join(bad, shard), os.path.getsize(os.path.join(bad, shard)) - 10)
    rc = pretrain.main(tiny_args(bad, str(tmp_path / "run2"), **{"train.steps": 1}))
    err = capsys.readouterr().err
    assert rc == 2 and "truncated shard" in err and len(err.strip().splitlines()) == 1, err


def test_resume_over_other_data_exits_2(tmp_path_factory, tmp_path, capsys):
    """--train.resume=auto after the store changed (here: regenerated with another seed) continued
    mid-epoch at a meaningless position; it is now a one-line error."""
    from slpfast import pretrain
    from slpfast.data.synthetic import generate_corpus

    store = tiny_store(tmp_path_factory)
    out = str(tmp_path / "run")
    assert pretrain.main(tiny_args(store, out, **{"train.steps": 1})) == 0
    other = str(tmp_path / "other")
    generate_corpus(other, 96, seed=4, num_glosses=12, num_signers=3)
    capsys.readouterr()
    rc = pretrain.main(tiny_args(other, out, **{"train.steps": 2, "train.resume": "auto"}))
    err = capsys.readouterr().err
    assert rc == 2 and "loader state was saved over other data" in err and "Traceback" not in err, err


def test_resumed_run_does_not_duplicate_log_records(tmp_path_factory, tmp_path):
    """Steps logged after the last checkpoint of a killed run were logged again after the resume:
    metrics.jsonl held steps 1, 2, 3, 4, 3, 4."""
    import json

    store = tiny_store(tmp_path_factory)
    over = {"train.steps": 4, "train.ckpt_every": 2, "train.keep_last": 5}
    tr = _trainer(store, tmp_path, **over)
    try:
        tr.run()
    finally:
        tr.close()
    os.remove(tmp_path / "checkpoints" / "step_00000004.pt")  # as if killed after logging step 4
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss/lo')  # and mid-way through a line
    tr = _trainer(store, tmp_path, **over, **{"train.resume": "auto"})
    try:
        tr.run()
    finally:
        tr.close()
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]


def test_fresh_run_moves_an_earlier_run_aside(tmp_path_factory, tmp_path):
    """A fresh run in a folder with another run's checkpoints: keep-last used to delete the new
    run's own (lower-numbered) checkpoints and resume=auto then continued the old run."""
    store = tiny_store(tmp_path_factory)
    for steps in (6, 3):
        tr = _trainer(store, tmp_path, **{"train.steps": steps, "train.ckpt_every": 3, "train.keep_last": 1})
        try:
            tr.run()
        finally:
            tr.close()
        if steps == 6:  # what slpfast.finetune writes after a run: it describes the old run
            (tmp_path / "results.json").write_text('{"old": true}')
    ckpts = sorted(os.listdir(tmp_path / "checkpoints"))
    assert ckpts == ["step_00000003.pt"], ckpts  # the new run's checkpoint survives, alone
    assert sorted(read_losses(str(tmp_path))) == [1, 2, 3]  # its log is its own
    (archive,) = list((tmp_path / "previous").iterdir())
    assert sorted(os.listdir(archive / "checkpoints")) == ["step_00000006.pt"]  # the old run, whole
    assert sorted(read_losses(str(archive))) == [1, 2, 3, 4, 5, 6]
    assert (archive / "encoder.safetensors").exists() and (tmp_path / "encoder.safetensors").exists()
    assert (archive / "results.json").read_text() == '{"old": true}' and not (tmp_path / "results.json").exists()


def test_rank_without_the_synthetic_corpus_says_so(tmp_path, monkeypatch):
    """A rank on a node that does not share rank 0's filesystem gets a one-line explanation,
    not a missing-file traceback from inside the store reader."""
    from slpfast.train import data as train_data
    from slpfast.train import distributed as D
    from slpfast.train.config import parse_args

    monkeypatch.setattr(D, "run_on_main", lambda info, fn, what: None)  # rank 0 generated it elsewhere
    cfg = parse_args([f"--data.synthetic_dir={tmp_path / 'not-here'}"])
    rank1 = D.DistInfo(1, 2, 0, 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="rank 1 .* does not see the corpus .* shared filesystem"):
        train_data.open_store(cfg, rank1)


def test_synthetic_dir_holding_a_real_store_is_left_alone(tmp_path_factory, tmp_path):
    """data.synthetic_dir pointing at a real store: a one-line error, and the store is untouched."""
    import json
    import shutil

    store = str(tmp_path / "real")
    shutil.copytree(tiny_store(tmp_path_factory), store)
    os.unlink(os.path.join(store, ".slpfast-synthetic"))  # the generator's mark on its own folders
    with open(os.path.join(store, "store.json")) as f:
        info = json.load(f)
    del info["meta"]["synthetic"]  # a converted store of real clips: no generator settings
    with open(os.path.join(store, "store.json"), "w") as f:
        json.dump(info, f)
    before = {f: os.path.getsize(os.path.join(store, f)) for f in os.listdir(store)}
    r = subprocess.run([sys.executable, "-m", "slpfast.pretrain", f"--data.synthetic_dir={store}",
                        f"--train.out_dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 2, r.stderr
    assert "data.synthetic_dir" in r.stderr and "not a synthetic corpus" in r.stderr and "Traceback" not in r.stderr
    assert {f: os.path.getsize(os.path.join(store, f)) for f in os.listdir(store)} == before


def _run(store, out, **over) -> dict:
    tr = _trainer(store, out, **over)
    try:
        return tr.run()
    finally:
        tr.close()


def _steps(folder) -> list[int]:
    return sorted(int(name[5:13]) for name in os.listdir(folder) if name.startswith("step_"))


def test_resume_from_an_older_checkpoint_sets_the_later_ones_aside(tmp_path_factory, tmp_path):
    """Resuming from step 2 of a run that reached step 6: its checkpoints 4 and 6 belong to the
    abandoned branch. Left in place, keep-last deleted the resumed run's own checkpoints (lower
    numbers) and resume=auto later continued the abandoned branch."""
    store = tiny_store(tmp_path_factory)
    over = {"train.ckpt_every": 2, "train.keep_last": 3}
    _run(store, tmp_path, **over, **{"train.steps": 6})
    assert _steps(tmp_path / "checkpoints") == [2, 4, 6]
    summary = _run(store, tmp_path, **over, **{"train.steps": 5,
                                               "train.resume": str(tmp_path / "checkpoints" / "step_00000002.pt")})
    assert summary["step"] == 5
    assert _steps(tmp_path / "checkpoints") == [2, 4, 5]  # this run's, the one it resumed from included
    (archive,) = list((tmp_path / "previous").iterdir())
    assert _steps(archive / "checkpoints") == [4, 6]  # the abandoned branch, kept whole
    from slpfast.train.checkpoint import resolve_resume

    assert resolve_resume("auto", str(tmp_path)).endswith("step_00000005.pt")


def test_keep_last_never_deletes_the_checkpoint_just_written(tmp_path):
    from slpfast.train.checkpoint import checkpoint_dir, save_checkpoint

    save_checkpoint(str(tmp_path), 6, {"x": 1}, keep_last=3)
    save_checkpoint(str(tmp_path), 9, {"x": 1}, keep_last=3)
    path = save_checkpoint(str(tmp_path), 3, {"x": 1}, keep_last=2)  # beside higher-numbered ones
    assert os.path.exists(path) and _steps(checkpoint_dir(str(tmp_path))) == [3, 9]
    save_checkpoint(str(tmp_path), 4, {"x": 1}, keep_last=1)
    assert _steps(checkpoint_dir(str(tmp_path))) == [4]


def test_resume_with_other_batching_exits_2(tmp_path_factory, tmp_path, capsys):
    """The saved data position counts batches: resumed with another batch size it pointed into the
    middle of other batches (clips seen twice or skipped), silently."""
    from slpfast import pretrain

    store = tiny_store(tmp_path_factory)
    out = str(tmp_path / "run")
    assert pretrain.main(tiny_args(store, out, **{"train.steps": 2})) == 0
    capsys.readouterr()
    rc = pretrain.main(tiny_args(store, out, **{"train.steps": 3, "train.resume": "auto", "data.batch_size": 4}))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "other batching: batch_size 8 (now 4)" in err, err
    rc = pretrain.main(tiny_args(store, out, **{"train.steps": 3, "train.resume": "auto", "data.max_frames": 24}))
    assert rc == 2 and "max_frames 32 (now 24)" in capsys.readouterr().err


def test_resume_applies_the_new_optimizer_settings(tmp_path_factory, tmp_path):
    """optim.* given on resume used to be ignored (the optimizer and scheduler states restored the
    checkpoint's): a lowered learning rate did not lower anything."""
    store = tiny_store(tmp_path_factory)
    over = {"train.steps": 6, "train.ckpt_every": 3, "optim.warmup_steps": 2}
    ref = _run(store, tmp_path / "ref", **over)["history"]
    _run(store, tmp_path / "run", **{**over, "train.steps": 3})
    tr = _trainer(store, tmp_path / "run", **over, **{"train.resume": "auto", "optim.lr": 5e-4,
                                                      "optim.weight_decay": 0.0})
    try:
        summary = tr.run()
        groups = tr.optimizer.param_groups
        assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.0
    finally:
        tr.close()
    assert any("optim.lr changed since the checkpoint (0.001 -> 0.0005)" in n for n in tr.resume_notes)
    ref_lr = {r["step"]: r["lr"] for r in ref}
    for rec in summary["history"]:  # the resumed steps 4..6 follow the same schedule at half the rate
        assert rec["lr"] == pytest.approx(0.5 * ref_lr[rec["step"]], rel=1e-12), rec["step"]


def test_fresh_run_moves_aside_an_earlier_run_that_left_only_logs(tmp_path_factory, tmp_path):
    store = tiny_store(tmp_path_factory)
    _run(store, tmp_path, **{"train.steps": 3, "train.ckpt_every": 0, "train.export": ""})
    import shutil

    shutil.rmtree(tmp_path / "checkpoints")  # as if killed before its first checkpoint
    _run(store, tmp_path, **{"train.steps": 2})
    assert sorted(read_losses(str(tmp_path))) == [1, 2]  # not [1, 2, 3, 1, 2]
    (archive,) = list((tmp_path / "previous").iterdir())
    assert sorted(read_losses(str(archive))) == [1, 2, 3]


def _ranked_run(rank, world_size, store, out, over):  # noqa: ARG001
    import weakref

    tr = Trainer(parse_args(tiny_args(store, out, **over)))
    summary = tr.run()
    assert summary["step"] == over["train.steps"]
    # close() frees the DDP wrapper, whose reducer holds the process group, while the group is
    # registered: freed at the process's end instead, it destroyed the Gloo group holding the GIL
    # and could hang there (a worker thread freeing its last collective's tensors needs the GIL)
    ddp = weakref.ref(tr.model)
    assert isinstance(ddp(), torch.nn.parallel.DistributedDataParallel)
    tr.close()
    assert ddp() is None


@pytest.mark.parametrize("objective", ["contrastive_only", "mpm_only"])
def test_two_ranks_train_with_one_objective_off(objective, tmp_path_factory, tmp_path):
    """mpm.weight=0 left the encoder's mask tokens without a gradient, and DDP failed its second
    step waiting for them."""
    from conftest import run_distributed

    off = {"contrastive_only": {"mpm.weight": 0}, "mpm_only": {"text.weight": 0}}[objective]
    run_distributed(_ranked_run, 2, tiny_store(tmp_path_factory), str(tmp_path),
                    {"train.steps": 3, "train.ckpt_every": 0, "train.export": "", **off})
    assert sorted(read_losses(str(tmp_path))) == [1, 2, 3]  # both ranks stepped past the second step


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                        ("NVIDIA H100 NVL", 835e12), ("NVIDIA H200", 989e12),
                                        ("NVIDIA A100-SXM4-80GB", 312e12), ("Some Future GPU", None)])
def test_mfu_peak_by_device_name(name, peak, monkeypatch):
    """The PCIe / NVL boards matched the SXM peak by substring: their MFU read ~20% low."""
    from slpfast.train import trainer

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert trainer._peak_flops(torch.device("cuda", 0)) == peak
    assert trainer._peak_flops(torch.device("cpu")) is None


def test_preempted_run_logs_its_partial_interval_and_keeps_its_nonfinite_streak(tmp_path_factory, tmp_path):
    """A run stopped between log intervals lost the steps since the last record; a run resumed in
    a streak of non-finite steps started counting toward train.max_nonfinite from 0 again."""
    store = tiny_store(tmp_path_factory)
    over = {"train.steps": 20, "train.log_every": 4, "train.ckpt_every": 0, "train.max_nonfinite": 3,
            "train.export": ""}
    tr = _trainer(store, tmp_path, **over)
    real_forward = tr.model.forward

    def forward(**kw):  # steps 5 and 6 (0-based 4, 5) are non-finite; SIGTERM during step 6
        out = real_forward(**kw)
        if tr.step in (4, 5):
            out["loss"] = out["loss"] * float("nan")
        if tr.step == 5:
            tr._stop_signal = True
        return out

    tr.model.forward = forward
    try:
        summary = tr.run()
    finally:
        tr.close()
    assert summary["status"] == "preempted" and summary["step"] == 6
    assert sorted(read_losses(str(tmp_path))) == [4, 6]  # step 6: the partial interval 5..6
    assert torch.load(tmp_path / "checkpoints" / "step_00000006.pt", weights_only=False)["extra"]["nonfinite_streak"] == 2
    tr = _trainer(store, tmp_path, **over, **{"train.resume": "auto"})
    real_forward = tr.model.forward
    tr.model.forward = lambda **kw: {**(o := real_forward(**kw)), "loss": o["loss"] * float("nan")}
    try:
        with pytest.raises(NonFiniteLossError, match="3 consecutive"):
            tr.run()  # the third in a row is the resumed run's first step
    finally:
        tr.close()
    assert tr.step == 7


def test_a_run_shorter_than_its_warmup_says_so(tmp_path_factory, tmp_path, capsys):
    store = tiny_store(tmp_path_factory)
    _run(store, tmp_path / "short", **{"train.steps": 2, "optim.warmup_steps": 5, "train.export": ""})
    assert "optim.warmup_steps=5 >= train.steps=2" in capsys.readouterr().out
    _run(store, tmp_path / "long", **{"train.steps": 2, "optim.warmup_steps": 1, "train.export": ""})
    assert "warmup_steps" not in capsys.readouterr().out


def test_a_fresh_run_that_fails_at_start_leaves_the_earlier_run_in_place(tmp_path_factory, tmp_path):
    """The earlier run used to be moved aside before the new one had run a step: a start-up error
    (here a backend that cannot run on this machine) then hid it from resume=auto."""
    store = tiny_store(tmp_path_factory)
    _run(store, tmp_path, **{"train.steps": 2})
    before = sorted(os.listdir(tmp_path))
    tr = _trainer(store, tmp_path, **{"train.steps": 2, "model.attn_backend": "xformers"})
    try:
        with pytest.raises(ValueError, match="xformers"):
            tr.run()
    finally:
        tr.close()
    assert sorted(os.listdir(tmp_path)) == before and not (tmp_path / "previous").exists()
    assert sorted(read_losses(str(tmp_path))) == [1, 2]


def test_resume_with_other_steps_follows_the_new_schedule_and_says_so(tmp_path_factory, tmp_path):
    store = tiny_store(tmp_path_factory)
    _run(store, tmp_path, **{"train.steps": 4, "train.ckpt_every": 2})
    tr = _trainer(store, tmp_path, **{"train.steps": 8, "train.resume": "auto"})
    try:
        summary = tr.run()
    finally:
        tr.close()
    assert any("train.steps changed since the checkpoint (4 -> 8)" in n for n in tr.resume_notes), tr.resume_notes
    from slpfast.train.optim import warmup_cosine

    cfg = tr.cfg.optim
    for rec in summary["history"]:  # every resumed step on the 8-step schedule, the first one included
        want = cfg.lr * warmup_cosine(rec["step"], warmup=cfg.warmup_steps, total=8, min_ratio=cfg.min_lr_ratio)
        assert rec["lr"] == pytest.approx(want, rel=1e-12), rec
    tr = _trainer(store, tmp_path, **{"train.steps": 8, "train.resume": "auto"})
    try:
        assert tr.run()["step"] == 8
    finally:
        tr.close()
    assert any("already at train.steps=8: nothing to train" in n for n in tr.resume_notes), tr.resume_notes


def test_resume_from_files_that_are_not_pretraining_checkpoints_says_what_they_are(tmp_path_factory, tmp_path,
                                                                                    capsys):
    from slpfast import pretrain

    store = tiny_store(tmp_path_factory)
    out = tmp_path / "run"
    assert pretrain.main(tiny_args(store, str(out), **{"train.steps": 1})) == 0
    state = torch.load(out / "checkpoints" / "step_00000001.pt", weights_only=False)
    state["config"]["task"] = {"task": "islr"}
    torch.save(state, tmp_path / "finetune.pt")
    (tmp_path / "junk.pt").write_text("garbage\n")
    cases = [(out / "encoder.safetensors", "is an exported encoder (safetensors), not a training checkpoint"),
             (tmp_path / "finetune.pt", "is a fine-tuning checkpoint and this is a pre-training run"),
             (tmp_path / "junk.pt", "cannot be read: not a complete file written by torch.save")]
    capsys.readouterr()
    for path, match in cases:
        rc = pretrain.main(tiny_args(store, str(tmp_path / "other"), **{"train.steps": 2, "train.resume": str(path)}))
        err = capsys.readouterr().err
        assert rc == 2 and match in err and "delete it" not in err and len(err.strip().splitlines()) == 1, err


def test_a_resume_that_fails_at_start_or_has_nothing_to_do_changes_nothing(tmp_path_factory, tmp_path):
    """A resume from an older checkpoint that failed at start-up had already moved the later
    checkpoints aside; a resume at or past train.steps re-saved the checkpoint (and re-exported)
    with that invocation's settings."""
    store = tiny_store(tmp_path_factory)
    _run(store, tmp_path, **{"train.steps": 4, "train.ckpt_every": 2})
    ckpts = tmp_path / "checkpoints"
    tr = _trainer(store, tmp_path, **{"train.steps": 4, "train.resume": str(ckpts / "step_00000002.pt"),
                                      "model.attn_backend": "xformers"})
    try:
        with pytest.raises(ValueError, match="xformers"):
            tr.run()
    finally:
        tr.close()
    assert _steps(ckpts) == [2, 4] and not (tmp_path / "previous").exists()
    before = {p: p.read_bytes() for p in (ckpts / "step_00000004.pt", tmp_path / "encoder.safetensors")}
    summary = _run(store, tmp_path, **{"train.steps": 3, "train.resume": "auto", "optim.lr": 5e-4})
    assert summary["step"] == 4 and _steps(ckpts) == [2, 4]
    assert all(p.read_bytes() == b for p, b in before.items())
