"""Fine-tuning under 2 gloo ranks (as torchrun would start it): DDP training steps, evaluation
sharded over the ranks and gathered, equal to a single-process evaluation of the same weights."""
import os

import pytest

from conftest import run_distributed

COMMON = ["--data.batch_size=4", "--data.max_frames=32", "--train.log_every=1", "--train.progress=false",
          "--train.tensorboard=false", "--task.eval_batch_size=8", "--train.device=cpu"]


def _ranked(rank, world_size, corpus, out):
    from slpfast import finetune

    cfg = finetune.parse_args(["--task", "islr", "--init", "none", "--data", corpus, f"--train.out_dir={out}",
                               "--train.steps=2", *COMMON])
    res = finetune.run(cfg)
    assert res["world_size"] == 2 and res["steps"] == 2
    import json

    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(res["metrics"], f)


def test_two_ranks_train_and_evaluate(tmp_path):
    import json

    from slpfast import finetune
    from slpfast.data.synthetic import generate_corpus

    corpus = str(tmp_path / "store")
    generate_corpus(corpus, num_clips=80, seed=5, num_glosses=8)
    out = str(tmp_path / "run")
    run_distributed(_ranked, 2, corpus, out)
    ranks = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(2)]
    assert ranks[0] == ranks[1]  # every rank returns the gathered metrics
    single = finetune.run(finetune.parse_args([
        "--task", "islr", "--init", os.path.join(out, "checkpoints", "step_00000002.pt"), "--eval-only",
        "--data", corpus, f"--train.out_dir={tmp_path / 'eval'}", *COMMON]))
    for split, m in single["metrics"].items():
        assert m["n"] == ranks[0][split]["n"]  # no clip lost or counted twice by the sharding
        for k in ("top1", "top5", "top1_per_class", "top5_per_class"):
            assert ranks[0][split][k] == pytest.approx(m[k], abs=1e-9), (split, k)
