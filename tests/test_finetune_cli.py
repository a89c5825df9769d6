"""slpfast.finetune's command line and run() around the trainer: an option never becomes
another option's value, and a preempted run stops without evaluating."""
import os

import pytest

from slpfast import finetune


@pytest.mark.parametrize("argv,flag", [
    (["--results", "--train.steps=5"], "--results"),
    (["--init", "--eval-only"], "--init"),
    (["--task.results", "--task", "islr"], "--task.results"),
    (["--task", "islr", "--train.out_dir"], "--train.out_dir"),
])
def test_an_option_is_never_taken_as_the_previous_options_value(argv, flag):
    # `--results --train.steps=5` wrote the results to a file named "--train.steps=5" and
    # trained the default 200 steps, without a word
    with pytest.raises(ValueError, match=f"^{flag} needs a value"):
        finetune.parse_args(argv)
    assert finetune.main(argv) == 2


def test_values_that_start_with_one_dash_are_still_values():
    cfg = finetune.parse_args(["--task", "islr", "--train.seed", "3", "--optim.min_lr_ratio", "0.5"])
    assert cfg.train.seed == 3 and cfg.optim.min_lr_ratio == 0.5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from slpfast.data.synthetic import generate_corpus

    path = str(tmp_path_factory.mktemp("corpus") / "store")
    generate_corpus(path, num_clips=120, seed=3, num_glosses=10)
    return path


def test_a_preempted_run_saves_and_stops_without_evaluating(corpus, tmp_path, monkeypatch, capsys):
    """SIGTERM: the checkpoint is written and the command ends (exit 0); it used to evaluate
    every split first (past torchrun's 30 s grace on a CPU) and write a results.json for the
    half-trained model."""
    from slpfast.finetune_data import FinetuneData
    from slpfast.train.trainer import Trainer

    issue = Trainer.issue_step

    def issue_then_sigterm(self):
        pending = issue(self)
        self._on_sigterm(None, None)  # what the SIGTERM handler does, during the first step
        return pending

    def no_eval(self, model, split):
        raise AssertionError(f"evaluated {split} after a preemption")

    monkeypatch.setattr(Trainer, "issue_step", issue_then_sigterm)
    monkeypatch.setattr(FinetuneData, "evaluate", no_eval)
    out = str(tmp_path / "run")
    argv = ["--task", "islr", "--init", "none", "--data", corpus, f"--train.out_dir={out}", "--train.steps=5",
            "--data.batch_size=8", "--data.max_frames=32", "--train.progress=false", "--train.tensorboard=false"]
    res = finetune.run(finetune.parse_args(argv))
    # the stop is read at the end of a step; steps already issued still finish
    assert res["train"]["status"] == "preempted" and 1 <= res["steps"] < 5 and res["metrics"] == {}
    assert os.path.isfile(os.path.join(out, "checkpoints", f"step_{res['steps']:08d}.pt"))
    assert not os.path.exists(os.path.join(out, "results.json"))
    assert "not evaluated" in capsys.readouterr().out
    assert finetune.main(argv + [f"--train.out_dir={tmp_path / 'again'}"]) == 0


def test_eval_only_of_a_run_folder_takes_its_checkpoint_not_its_export(corpus, tmp_path):
    """A fine-tuning run folder with an exported encoder: --eval-only picked the encoder (no
    head) and refused it ("needs a fine-tuning checkpoint"), though the folder held one."""
    out = str(tmp_path / "run")
    common = ["--task", "islr", "--data", corpus, "--data.batch_size=8", "--data.max_frames=32",
              "--train.progress=false", "--train.tensorboard=false"]
    finetune.run(finetune.parse_args(common + ["--init", "none", f"--train.out_dir={out}", "--train.steps=1",
                                               "--train.export=encoder.safetensors"]))
    assert os.path.isfile(os.path.join(out, "encoder.safetensors"))
    res = finetune.run(finetune.parse_args(common + ["--init", out, "--eval-only",
                                                     f"--train.out_dir={tmp_path / 'eval'}"]))
    assert res["init_kind"] == "finetune" and res["steps"] == 1 and "islr_val" in res["metrics"]


def test_a_diverged_model_is_a_failed_run_not_bad_arguments(corpus, tmp_path, monkeypatch, capsys):
    """Weights that went non-finite: exit 1 with one line naming a parameter, no results file (its
    NaN scores reached the metrics, which refused them as bad input: exit 2, 'bad arguments')."""
    import torch

    from slpfast.train.trainer import Trainer

    run = Trainer.run

    def run_then_diverge(self, *a, **k):
        summary = run(self, *a, **k)
        with torch.no_grad():
            next(self.raw_model.parameters()).fill_(float("nan"))
        return summary

    monkeypatch.setattr(Trainer, "run", run_then_diverge)
    out = str(tmp_path / "run")
    argv = ["--task", "islr", "--init", "none", "--data", corpus, f"--train.out_dir={out}", "--train.steps=1",
            "--data.batch_size=8", "--data.max_frames=32", "--train.progress=false", "--train.tensorboard=false"]
    assert finetune.main(argv) == 1
    err = capsys.readouterr().err
    assert "non-finite weights" in err and err.count("\n") == 1, err
    assert not os.path.exists(os.path.join(out, "results.json"))


def test_a_full_disk_or_a_second_ctrl_c_ends_in_one_line(corpus, tmp_path, monkeypatch, capsys):
    """As pre-training: a checkpoint that cannot be written is exit 1, a second Ctrl-C exit 130,
    each one line (they were tracebacks from inside the trainer)."""
    import errno

    import torch
    from _pretrain_common import ctrl_c_twice_in_step

    argv = ["--task", "islr", "--init", "none", "--data", corpus, "--train.steps=3", "--train.ckpt_every=1",
            "--data.batch_size=8", "--data.max_frames=32", "--train.progress=false", "--train.tensorboard=false"]

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(torch, "save", full)
        assert finetune.main(argv + [f"--train.out_dir={tmp_path / 'full'}"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "No space left on device" in err, err

    ctrl_c_twice_in_step(monkeypatch, 1)  # in step 2: the first asks for a stop, the second aborts
    assert finetune.main(argv + [f"--train.out_dir={tmp_path / 'int'}"]) == 130
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and "interrupted; stopping" not in ln]
    assert "Traceback" not in err and len(lines) == 1 and "--train.resume=auto" in err, err


def test_evaluation_shows_a_progress_bar_per_split(corpus, tmp_path, capfd):
    out = str(tmp_path / "run")
    res = finetune.run(finetune.parse_args(
        ["--task", "islr", "--init", "none", "--data", corpus, f"--train.out_dir={out}", "--train.steps=1",
         "--data.batch_size=8", "--data.max_frames=32", "--train.tensorboard=false", "--train.progress=true"]))
    err = capfd.readouterr().err
    for split in res["metrics"]:
        assert f"evaluating {split}" in err, err[-1000:]
