"""Pre-training when the run folder cannot be written (a full disk): one line, no hang, no
checkpoint lost."""
from __future__ import annotations

import errno
import os

import torch

from _pretrain_common import ctrl_c_twice_in_step, read_losses, tiny_args, tiny_store


def _full_disk_after(monkeypatch, ok_saves: int):
    """torch.save writes part of the file, then fails as on a full disk, after ``ok_saves`` saves."""
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] <= ok_saves:
            return real(obj, f, *a, **k)
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save)


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_keeps_the_earlier_one(tmp_path_factory, tmp_path,
                                                                                   capsys, monkeypatch):
    from slpfast import pretrain
    from slpfast.train.checkpoint import checkpoint_dir, load_checkpoint

    store = tiny_store(tmp_path_factory)
    out = str(tmp_path / "run")
    _full_disk_after(monkeypatch, ok_saves=1)
    rc = pretrain.main(tiny_args(store, out, **{"train.steps": 4, "train.ckpt_every": 2}))
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "train.out_dir" in err and "step_00000004.pt" in err and "No space left on device" in err, err
    # the step-2 checkpoint is whole; nothing half-written is left beside it
    assert sorted(os.listdir(checkpoint_dir(out))) == ["step_00000002.pt"]
    assert load_checkpoint(os.path.join(checkpoint_dir(out), "step_00000002.pt"))["step"] == 2
    assert not os.path.exists(os.path.join(out, "encoder.safetensors"))


def test_an_export_that_cannot_be_written_is_one_line(tmp_path_factory, tmp_path, capsys, monkeypatch):
    from slpfast import pretrain
    from slpfast.models import PoseEncoder

    def full(self, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(PoseEncoder, "save_pretrained", full)
    store = tiny_store(tmp_path_factory)
    out = str(tmp_path / "run")
    rc = pretrain.main(tiny_args(store, out, **{"train.steps": 1}))
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "train.export" in err and "No space left on device" in err and "step_" not in err.split("(")[0], err
    assert os.path.exists(os.path.join(out, "checkpoints", "step_00000001.pt"))


def test_logs_that_cannot_be_written_do_not_stop_the_run(tmp_path_factory, tmp_path, capsys, monkeypatch):
    """Only rank 0 writes logs: an error there must not leave the other ranks waiting for it."""
    from slpfast import pretrain
    from slpfast.train import logging as L

    class FullFile:
        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

        def close(self):
            pass

    real_open = L.RunLogger._open_files

    def open_files(self):
        real_open(self)
        self.jsonl.close()
        self.jsonl = FullFile()

    monkeypatch.setattr(L.RunLogger, "_open_files", open_files)
    store = tiny_store(tmp_path_factory)
    out = str(tmp_path / "run")
    rc = pretrain.main(tiny_args(store, out, **{"train.steps": 3}))
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.err.count("cannot write the logs") == 1 and "Traceback" not in cap.err, cap.err
    assert "step 3/3" in cap.out  # the console still gets every interval
    assert os.path.exists(os.path.join(out, "checkpoints", "step_00000003.pt"))
    assert read_losses(out) == {}


def test_a_second_ctrl_c_aborts_in_one_line_without_a_checkpoint(tmp_path_factory, tmp_path, capsys, monkeypatch):
    from slpfast import pretrain

    ctrl_c_twice_in_step(monkeypatch, 2)  # in step 3: the first asks for a stop, the second aborts
    store = tiny_store(tmp_path_factory)
    out = str(tmp_path / "run")
    rc = pretrain.main(tiny_args(store, out, **{"train.steps": 5, "train.ckpt_every": 1}))
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and "interrupted; stopping" not in ln]
    assert rc == 130 and "Traceback" not in err and len(lines) == 1, err
    assert "second Ctrl-C at step 2" in err and "--train.resume=auto" in err, err
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["step_00000001.pt", "step_00000002.pt"]


def _save_fails_on_rank0(rank, world, tmp):
    """Trainer.save under 2 gloo ranks whose rank 0 cannot write: every rank raises, at once."""
    import time
    from types import SimpleNamespace

    import pytest

    from slpfast.train.checkpoint import CheckpointWriteError
    from slpfast.train.distributed import DistInfo
    from slpfast.train.trainer import Trainer

    def trainer(state, out_dir):
        return SimpleNamespace(_state=lambda: state, dist=DistInfo(rank, world, rank, world, torch.device("cpu")),
                               out_dir=out_dir, step=4,
                               cfg=SimpleNamespace(train=SimpleNamespace(keep_last=2)))

    t0 = time.monotonic()
    with pytest.raises(CheckpointWriteError, match="train.out_dir: cannot write the checkpoint"):
        Trainer.save(trainer({"x": 1}, os.path.join(tmp, "a-file", "run")))  # under a file: no folder
    # a failure that is not the file system's: rank 0 shows its own, the others learn of it
    with pytest.raises(CheckpointWriteError if rank else AttributeError) as e:
        Trainer.save(trainer({"x": lambda: 0}, os.path.join(tmp, "run")))  # cannot be pickled
    assert rank == 0 or "rank 0 failed to save the checkpoint of step 4" in str(e.value)
    # not the group's timeout (30 s) in a barrier; a wide margin for a loaded CI machine
    elapsed = time.monotonic() - t0
    assert elapsed < 15.0
    with open(os.path.join(tmp, f"rank{rank}.txt"), "w") as f:  # what each rank saw, for the test
        f.write(f"{type(e.value).__name__} {elapsed:.1f}")


def test_a_save_that_fails_on_rank0_stops_every_rank(tmp_path):
    from conftest import run_distributed

    (tmp_path / "a-file").write_text("not a folder")
    run_distributed(_save_fails_on_rank0, 2, str(tmp_path), group_timeout_s=30.0, timeout=180)
    seen = {r: (tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)}
    # rank 0 raised its own error, rank 1 learnt of it, both well before the group's 30 s timeout
    assert [seen[0][0], seen[1][0]] == ["AttributeError", "CheckpointWriteError"], seen
    assert all(float(v[1]) < 15.0 for v in seen.values()), seen
