"""Config (TOML + overrides + validation), optimizer schedule, checkpoints."""
from __future__ import annotations

import os

import pytest
import torch

from slpfast.train import checkpoint as ckpt
from slpfast.train.config import PretrainConfig, field_docs, help_text, parse_args
from slpfast.train.optim import build_optimizer, build_scheduler, param_groups, warmup_cosine


def test_defaults_validate_and_every_field_has_a_docstring():
    cfg = parse_args([])
    assert cfg.model.size == "tiny" and cfg.mpm.ratio == 0.5 and cfg.train.resume == ""
    import dataclasses

    from slpfast.train.config import _SECTION_CLASSES

    for section, cls in _SECTION_CLASSES.items():
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert missing == [], f"[{section}] fields without a docstring: {missing}"
    assert "--optim.lr=0.001" in help_text()


def test_toml_then_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[model]\nsize = "base"\n[optim]\nlr = 5e-4\nwarmup_steps = 7\n[train]\nsteps = 11\nprogress = false\n')
    cfg = parse_args(["--config", str(p), "--optim.lr=1e-2", "--train.steps", "12", "--mpm.strategy=spans",
                      "--train.tensorboard=false", "--optim.beta2=0.95"])
    assert cfg.model.size == "base" and cfg.optim.warmup_steps == 7
    assert cfg.optim.lr == 1e-2 and cfg.train.steps == 12 and cfg.mpm.strategy == "spans"
    assert cfg.train.progress is False and cfg.train.tensorboard is False and cfg.optim.beta2 == 0.95
    assert PretrainConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("argv, match", [
    (["--optim.lr=-1"], "optim.lr must be > 0"),
    (["--optim.lr=fast"], "optim.lr expects float"),
    (["--mpm.ratio=0"], "mpm.ratio"),
    (["--mpm.strategy=time"], "mpm.strategy"),
    (["--model.size=huge"], "model.size"),
    (["--model.dim=30", "--model.heads=4"], "divisible"),
    (["--train.steps=0"], "train.steps"),
    (["--train.progress=maybe"], "train.progress expects bool"),
    (["--text.kind=hf"], "text.path"),
    (["--data.max_frames=5000"], "data.max_frames"),
    (["--mpm.weight=0", "--text.weight=0"], "cannot all be 0"),
    (["--optim.nope=1"], "unknown key optim.nope"),
    (["--nosection.x=1"], "unknown section"),
    (["--lr=1"], "unknown option --lr"),
    (["--foo"], "unknown option --foo"),
    (["positional"], "unexpected argument"),
    (["--train.steps"], "needs a value"),
    # a missing value never takes the next option as the value (out_dir became '--train.steps=5')
    (["--train.out_dir", "--train.steps=5"], r"--train.out_dir needs a value .*got the option '--train.steps=5'"),
    (["--config", "--train.steps=5"], "--config needs a value"),
    (["--config", "/nonexistent.toml"], "does not exist"),
    (["--model.attn_backend=foo"], "model.attn_backend must be one of .*'flex'"),
    (["--text.backend=foo"], "text.backend must be one of .*'chunked'"),
    (["--train.out_dir=/etc/hostname"], "train.out_dir is a file"),
])
def test_config_errors_name_the_key(argv, match):
    with pytest.raises(ValueError, match=match):
        parse_args(argv)


def test_toml_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nlr = 1")
    with pytest.raises(ValueError, match="not valid TOML"):
        parse_args(["--config", str(bad)])
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[optim]\nlr = "high"\n')
    with pytest.raises(ValueError, match="optim.lr expects float"):
        parse_args(["--config", str(wrong)])
    flat = tmp_path / "flat.toml"
    flat.write_text("lr = 1\n")
    with pytest.raises(ValueError, match="section"):
        parse_args(["--config", str(flat)])


def test_warmup_cosine_schedule():
    f = lambda s: warmup_cosine(s, warmup=10, total=110, min_ratio=0.1)  # noqa: E731
    assert f(0) == pytest.approx(1 / 11) and f(9) == pytest.approx(10 / 11)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    assert f(500) == pytest.approx(0.1)
    vals = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_param_groups_exclude_norms_biases_embeddings():
    from slpfast.models import PoseEncoder, PoseEncoderConfig

    enc = PoseEncoder(PoseEncoderConfig(dim=32, heads=2, attn_backend="eager"))
    decay, no_decay = param_groups(enc, 0.1)
    names = {id(p): n for n, p in enc.named_parameters()}
    assert all(p.dim() == 2 for p in decay["params"])
    nd = {names[id(p)] for p in no_decay["params"]}
    assert "pos.weight" in nd and "parts.mask_token" in nd and any(n.endswith("norm1.weight") for n in nd)
    cfg = PretrainConfig().optim
    opt = build_optimizer(enc, cfg)
    sched = build_scheduler(opt, cfg, 100)
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.lr / (cfg.warmup_steps + 1))
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(cfg.lr * 2 / (cfg.warmup_steps + 1))


def test_checkpoints_atomic_keep_last_and_resume_resolution(tmp_path):
    out = str(tmp_path)
    assert ckpt.resolve_resume("auto", out) is None and ckpt.resolve_resume("", out) is None
    state = {"model": {"w": torch.arange(3)}, "optimizer": {}, "scheduler": {}, "ranks": [{}]}
    for step in (10, 20, 30, 40):
        ckpt.save_checkpoint(out, step, state, keep_last=2)
    paths = ckpt.list_checkpoints(out)
    assert [os.path.basename(p) for p in paths] == ["step_00000030.pt", "step_00000040.pt"]
    # a leftover temp file (crash mid-write) is never picked up
    open(os.path.join(ckpt.checkpoint_dir(out), ".step_00000050.pt.tmp123"), "wb").write(b"partial")
    assert ckpt.resolve_resume("auto", out).endswith("step_00000040.pt")
    loaded = ckpt.load_checkpoint(paths[-1])
    assert loaded["step"] == 40 and torch.equal(loaded["model"]["w"], torch.arange(3))
    with pytest.raises(ValueError, match="does not exist"):
        ckpt.resolve_resume(str(tmp_path / "nope.pt"), out)
    # a run's folder, or its checkpoints/ folder: the latest checkpoint in it
    assert ckpt.resolve_resume(out, "elsewhere").endswith("step_00000040.pt")
    assert ckpt.resolve_resume(ckpt.checkpoint_dir(out) + "/", "elsewhere").endswith("step_00000040.pt")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="holds no checkpoint"):
        ckpt.resolve_resume(str(tmp_path / "sub"), out)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(open(paths[-1], "rb").read()[:100])
    with pytest.raises(ValueError, match="cannot be read"):
        ckpt.load_checkpoint(str(trunc))


def test_rng_capture_restore():
    import random

    import numpy as np

    s = ckpt.capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.restore_rng(s)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_flops_coefficients_count_every_frame_matmul():
    from slpfast.models import PoseEncoderConfig, PretrainModel
    from slpfast.train.data import flops_coefficients

    model = PretrainModel(PoseEncoderConfig(dim=32, heads=2, manual_layers=2, non_manual_layers=1,
                                            attn_backend="eager"), text_dim=8)
    a, b = flops_coefficients(model)
    blocks = 3 * (32 * 96 + 32 * 32 + 2 * 32 * 128)  # qkv, out, MLP of each of the 3 blocks
    assert a > 6 * blocks and b == 12 * 32 * 3
    # parameters of every Linear applied per frame: 6 FLOPs per weight per frame
    per_frame = sum(m.weight.numel() for m in model.encoder.modules() if isinstance(m, torch.nn.Linear))
    per_frame += sum(m.weight.numel() for m in model.decoder.modules() if isinstance(m, torch.nn.Linear))
    assert a == 6 * per_frame


@pytest.mark.parametrize("argv, match", [
    (["--optim.lr=inf"], r"optim.lr must be a finite number, got inf"),  # crashed at step 1 in contrastive_loss
    (["--text.weight=inf"], r"text.weight must be a finite number"),
    (["--model.mlp_ratio=inf"], r"model.mlp_ratio must be a finite number"),
    (["--train.seed=-1"], r"train.seed must be >= 0"),  # was 'expected non-negative integer' from numpy
    (["--data.synthetic_seed=-2"], r"data.synthetic_seed must be >= 0"),
])
def test_non_finite_and_negative_seed_are_config_errors(argv, match):
    with pytest.raises(ValueError, match=match):
        parse_args(argv)


def test_partial_checkpoints_of_killed_writers_are_removed(tmp_path):
    """A run SIGKILLed mid-save left a checkpoint-sized '.step_*.pt.tmp<pid>' for ever."""
    import subprocess
    import sys

    out = str(tmp_path)
    d = ckpt.checkpoint_dir(out)
    os.makedirs(d)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    stray = os.path.join(d, f".step_00000050.pt.tmp{dead}")
    alive = os.path.join(d, f".step_00000060.pt.tmp{os.getppid()}")  # a writer still running
    for p in (stray, alive):
        open(p, "wb").write(b"partial")
    state = {"model": {}, "optimizer": {}, "scheduler": {}, "ranks": [{}]}
    ckpt.save_checkpoint(out, 10, state, keep_last=2)
    assert sorted(os.listdir(d)) == sorted(["step_00000010.pt", os.path.basename(alive)])


def test_output_paths_are_checked_before_the_run(tmp_path):
    """An export or results path under a file failed with a traceback after the whole run."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["--train.out_dir", str(afile / "run")], f"train.out_dir cannot be created: {afile} is a file"),
        (["--train.export", str(afile / "enc.safetensors")], f"train.export cannot be created: {afile} is a file"),
        (["--train.export", str(tmp_path)], "train.export is a folder, not a file"),
    ]
    for argv, match in cases:
        with pytest.raises(ValueError, match=match):
            parse_args([f"--train.out_dir={tmp_path / 'run'}", *argv] if "--train.out_dir" not in argv else argv)
    # relative export names land in out_dir: a folder of that name there is refused
    (tmp_path / "run" / "encoder.safetensors").mkdir(parents=True)
    with pytest.raises(ValueError, match="train.export is a folder"):
        parse_args([f"--train.out_dir={tmp_path / 'run'}"])
    from slpfast import finetune

    with pytest.raises(ValueError, match=r"task.results \(--results\) cannot be created"):
        finetune.parse_args(["--task", "islr", "--results", str(afile / "r.json")])
    with pytest.raises(ValueError, match=r"task.results \(--results\) is a folder"):
        finetune.parse_args(["--task", "islr", "--results", str(tmp_path)])
    parse_args([f"--train.out_dir={tmp_path / 'new' / 'deeper'}"])  # creatable: fine
