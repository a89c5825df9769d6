"""Pre-training as users launch it: torchrun (2 processes, gloo), two nodes on one machine,
SIGTERM, and configuration errors."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import torch

from _pretrain_common import ROOT, env, read_losses, run_module, tiny_args, tiny_store
from slpfast.models import default_text_model_path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_export(out_dir) -> None:
    from slpfast.models import PoseEncoder

    enc = PoseEncoder.from_pretrained(os.path.join(out_dir, "encoder.safetensors"))
    assert enc.dim == 32


def test_torchrun_two_processes_gloo(tmp_path_factory, tmp_path):
    store = tiny_store(tmp_path_factory)
    # the real frozen text encoder when installed: exercises caching on rank 0 + barrier
    kind = "minilm" if default_text_model_path() else "small"
    args = tiny_args(store, str(tmp_path), **{"train.steps": 4, "text.kind": kind, "train.ckpt_every": 2})
    p = run_module(["--standalone", "--nproc_per_node=2", "-m", "slpfast.pretrain", *args], timeout=300,
                   module="torch.distributed.run")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(read_losses(str(tmp_path))) == [1, 2, 3, 4]
    assert "completed at step 4" in p.stdout
    _check_export(tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "step_00000004.pt", weights_only=False)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert state["ranks"][0]["loader"]["rank"] == 0 and state["ranks"][1]["loader"]["rank"] == 1
    if kind == "minilm":
        from slpfast.data import Store

        assert Store(store).text_feature_names  # cached by rank 0 into the store


def test_two_nodes_on_one_machine(tmp_path_factory, tmp_path):
    store = tiny_store(tmp_path_factory)
    port = _port()
    args = tiny_args(store, str(tmp_path), **{"train.steps": 3})
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                               f"--node_rank={r}", "--master_addr=127.0.0.1", f"--master_port={port}",
                               "-m", "slpfast.pretrain", *args],
                              cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "completed at step 3" in outs[0]
    state = torch.load(tmp_path / "checkpoints" / "step_00000003.pt", weights_only=False)
    assert state["world_size"] == 2
    _check_export(tmp_path)


def test_sigterm_saves_and_exits_cleanly(tmp_path_factory, tmp_path):
    store = tiny_store(tmp_path_factory)
    args = tiny_args(store, str(tmp_path), **{"train.steps": 100000, "train.ckpt_every": 0})
    proc = subprocess.Popen([sys.executable, "-m", "slpfast.pretrain", *args], cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 180
    while (not metrics.exists() or metrics.stat().st_size == 0) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "preempted at step" in out + err
    ckpts = sorted(os.listdir(tmp_path / "checkpoints"))
    assert len(ckpts) == 1
    step = int(ckpts[0][5:13])
    assert 1 <= step < 100000
    assert max(read_losses(str(tmp_path))) == step
    assert not (tmp_path / "encoder.safetensors").exists()  # interrupted runs do not export
    # and it resumes from there
    p = run_module(tiny_args(store, str(tmp_path), **{"train.steps": step + 2, "train.resume": "auto"}))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from" in p.stdout + p.stderr and f"completed at step {step + 2}" in p.stdout + p.stderr


def test_config_errors_exit_2_with_a_clear_message(tmp_path):
    p = run_module(["--optim.lr=-1"], timeout=120)
    assert p.returncode == 2 and "optim.lr must be > 0" in p.stderr and "Traceback" not in p.stderr
    p = run_module(["--train.stepz=3"], timeout=120)
    assert p.returncode == 2 and "unknown key train.stepz" in p.stderr
    p = run_module([f"--data.store={tmp_path}"], timeout=120)
    assert p.returncode == 2 and "holds no store" in p.stderr and "Traceback" not in p.stderr
    p = run_module(["--help"], timeout=120)
    assert p.returncode == 0 and "--mpm.ratio=0.5" in p.stdout
