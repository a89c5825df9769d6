"""Shared set-up of the pre-training tests: a tiny synthetic store and tiny-model arguments."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STORE = {}


def tiny_store(tmp_path_factory) -> str:
    """A 96-clip synthetic store, generated once per test session."""
    if "path" not in _STORE:
        from slpfast.data.synthetic import generate_corpus

        path = str(tmp_path_factory.mktemp("pretrain_store"))
        generate_corpus(path, 96, seed=3, num_glosses=12, num_signers=3)
        _STORE["path"] = path
    return _STORE["path"]


def tiny_args(store: str, out_dir: str, **over) -> list[str]:
    """Command-line overrides for a tiny, fast, deterministic run."""
    cfg = {
        "data.store": store, "train.out_dir": out_dir, "model.dim": 32, "model.heads": 2,
        "model.manual_layers": 1, "model.non_manual_layers": 1, "data.batch_size": 8, "data.max_frames": 32,
        "text.kind": "small", "text.small_dim": 32, "text.proj_dim": 32, "train.progress": "false",
        "train.tensorboard": "false", "train.threads": 1, "train.log_every": 1, "optim.warmup_steps": 2,
        "model.attn_backend": "sdpa",
    }
    cfg.update(over)
    return [f"--{k}={v}" for k, v in cfg.items()]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    e["HF_HUB_OFFLINE"] = "1"
    return e


def run_module(args: list[str], timeout: float = 240, module: str = "slpfast.pretrain") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def read_losses(out_dir: str, key: str = "loss/loss") -> dict[int, float]:
    """step -> loss from metrics.jsonl (the last record of a step wins, as after a resume)."""
    out = {}
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            out[r["step"]] = r[key]
    return out


def ctrl_c_twice_in_step(monkeypatch, step: int) -> None:
    """The trainer gets two Ctrl-C while it issues the step after ``step``: the first asks for a
    stop, the second aborts (what its SIGINT handler does for each)."""
    import signal

    from slpfast.train.trainer import Trainer

    real = Trainer.issue_step

    def issue_step(self):
        if self.step == step:
            self._on_sigint(signal.SIGINT, None)
            self._on_sigint(signal.SIGINT, None)
        return real(self)

    monkeypatch.setattr(Trainer, "issue_step", issue_step)
