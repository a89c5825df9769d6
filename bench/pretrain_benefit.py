"""Does pre-training help downstream? ``python bench/pretrain_benefit.py [--quick] [--json PATH]``

On the synthetic corpus (generated into ``--workdir``):

1. pre-train the tiny encoder (MPM + sign-text contrastive, the ``slpfast.pretrain`` defaults) for
   ``--pretrain-steps`` steps, or take ``--pretrained CKPT.pt``;
2. ISLR with ``--label-fraction`` (default 10%, class-stratified) of the training labels:
   fine-tune from the pre-trained encoder and from scratch with the SAME budget (steps, batch,
   learning rate, seed); report top-1 / top-5 (per instance and per class) on islr_test;
3. retrieval: R@1 of the pre-trained encoder + contrastive head zero-shot, and after
   ``--finetune-steps`` steps of contrastive fine-tuning; sentence_test, both directions.

Every run is the real command path (``slpfast.pretrain`` Trainer, ``slpfast.finetune.run``).
The numbers are accuracies, not timings; on a CPU they come from short budgets and are only
meaningful as a comparison inside one run.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import Results, base_parser, int_at_least  # noqa: E402


def pretrain(store: str, out: str, steps: int, batch: int, max_frames: int, seed: int, progress: bool) -> str:
    from slpfast.train.config import parse_args
    from slpfast.train.trainer import Trainer

    cfg = parse_args([f"--data.store={store}", f"--train.steps={steps}", f"--data.batch_size={batch}",
                      f"--data.max_frames={max_frames}", f"--train.out_dir={out}", f"--train.seed={seed}",
                      f"--train.progress={progress}", "--train.tensorboard=false", f"--train.log_every={max(1, steps // 10)}"])
    tr = Trainer(cfg)
    try:
        tr.run()
    finally:
        tr.close()
    return os.path.join(out, "checkpoints", f"step_{steps:08d}.pt")


def finetune(store: str, out: str, task: str, init: str, extra: list[str]) -> dict:
    from slpfast import finetune as ft

    cfg = ft.parse_args(["--task", task, "--init", init, "--data", store, f"--train.out_dir={out}",
                         "--train.tensorboard=false", *extra])
    return ft.run(cfg)


def main(argv=None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/pretrain_benefit", help="corpus and runs go here")
    p.add_argument("--clips", type=int_at_least(1), default=2000, help="clips of the synthetic corpus")
    p.add_argument("--glosses", type=int_at_least(2), default=50, help="gloss vocabulary (ISLR classes)")
    p.add_argument("--pretrained", default="", help="use this pre-training checkpoint instead of pre-training")
    p.add_argument("--pretrain-steps", type=int_at_least(1), default=300)
    p.add_argument("--finetune-steps", type=int_at_least(1), default=150)
    p.add_argument("--batch-size", type=int_at_least(1), default=32)
    p.add_argument("--max-frames", type=int_at_least(2, 1024), default=96)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--label-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--progress", action="store_true", help="tqdm bars")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.glosses, args.pretrain_steps, args.finetune_steps = 160, 8, 4, 4
        args.batch_size, args.max_frames = 8, 48
    from slpfast.data.synthetic import generate_corpus

    t0 = time.perf_counter()
    work = os.path.abspath(os.path.expanduser(args.workdir))
    store = os.path.join(work, f"synthetic_{args.clips}_{args.glosses}")
    generate_corpus(store, args.clips, args.seed, num_glosses=args.glosses, overwrite=False)
    ckpt = args.pretrained or pretrain(store, os.path.join(work, "pretrain"), args.pretrain_steps, args.batch_size,
                                       args.max_frames, args.seed, args.progress)
    common = [f"--train.steps={args.finetune_steps}", f"--data.batch_size={args.batch_size}",
              f"--data.max_frames={args.max_frames}", f"--optim.lr={args.lr}", f"--train.seed={args.seed}",
              f"--train.progress={args.progress}", f"--train.log_every={max(1, args.finetune_steps // 5)}",
              "--task.eval_splits=" + "{}_test"]
    res = Results("pretrain_benefit", args.json, quick=args.quick)
    islr = [f"--task.label_fraction={args.label_fraction}", common[-1].format("islr"), *common[:-1]]
    for name, init in (("pretrained", ckpt), ("scratch", "none")):
        r = finetune(store, os.path.join(work, f"islr_{name}"), "islr", init, islr)
        m = r["metrics"]["islr_test"]
        res.add(task="islr", init=name, label_fraction=args.label_fraction, train_clips=r["train_clips"],
                steps=r["steps"], metric="top1", value=m["top1"], top5=m["top5"],
                top1_per_class=m["top1_per_class"], top5_per_class=m["top5_per_class"], n_test=m["n"])
    ret = [common[-1].format("sentence"), *common[:-1]]
    zs = finetune(store, os.path.join(work, "retrieval_zeroshot"), "retrieval", ckpt, ret + ["--eval-only"])
    ftr = finetune(store, os.path.join(work, "retrieval_finetuned"), "retrieval", ckpt, ret)
    for name, r in (("zero-shot", zs), ("fine-tuned", ftr)):
        m = r["metrics"]["sentence_test"]
        res.add(task="retrieval", init=name, label_fraction=1.0, train_clips=r["train_clips"], steps=r["steps"],
                metric="s2t_R@1", value=m["s2t_R@1"], t2s_R1=m["t2s_R@1"], s2t_R5=m["s2t_R@5"],
                s2t_MedR=m["s2t_MedR"], n_test=m["n_sign"])
    res.print_table(["task", "init", "label_fraction", "train_clips", "steps", "metric", "value", "top5",
                     "top1_per_class", "t2s_R1", "s2t_MedR", "n_test"])
    print(f"pretrain_benefit: {time.perf_counter() - t0:.0f} s; pre-training checkpoint {ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
