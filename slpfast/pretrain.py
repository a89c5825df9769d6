"""Pre-train the pose encoder: ``torchrun -m slpfast.pretrain`` (or ``python -m slpfast.pretrain``).

With no arguments it pre-trains the tiny model on the synthetic corpus (generated into
``~/.cache/slpfast/synthetic`` on first run) with masked pose modeling + sign-text contrastive
learning against the frozen MiniLM text encoder, for a few minutes on a CPU, and exports the
encoder to ``runs/pretrain/encoder.safetensors``::

    torchrun --standalone --nproc_per_node=2 -m slpfast.pretrain
    python -m slpfast.pretrain --config my.toml --model.size=base --train.steps=100000
    python -m slpfast.pretrain --help          # every option, its default and its meaning

Exit codes: 0 done (or stopped by SIGTERM or a first Ctrl-C after saving a checkpoint; a second
Ctrl-C aborts without one: 130), 1 aborted (non-finite losses, or a checkpoint or the export that could
not be written: a full disk), 2 bad configuration (also a store that fails its checks, or a checkpoint to
resume from that is damaged or does not fit the model).
"""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from slpfast.train.config import help_text, parse_args

    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(help_text())
        return 0
    try:
        cfg = parse_args(argv)
    except ValueError as e:
        print(f"slpfast.pretrain: {e}", file=sys.stderr)
        return 2
    from slpfast.data.shard_format import ShardError
    from slpfast.train.checkpoint import CheckpointWriteError
    from slpfast.train.trainer import NonFiniteLossError, ResumeError, Trainer

    try:
        trainer = Trainer(cfg)
    except (ValueError, ShardError) as e:  # e.g. a store path that holds no store, or a truncated shard
        print(f"slpfast.pretrain: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while setting up (generating the corpus, caching text features)
        if os.environ.get("RANK", "0") == "0":  # torchrun passes Ctrl-C to every worker: one line, not one per rank
            print("slpfast.pretrain: interrupted while setting up; nothing was trained", file=sys.stderr)
        return 130
    try:
        summary = trainer.run()
    except (ResumeError, ValueError) as e:  # a damaged checkpoint, one of another model shape / world
        # size, or settings that only meet their input here (a backend that cannot run this batch)
        print(f"slpfast.pretrain: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"slpfast.pretrain: {e}", file=sys.stderr)
        return 1
    except CheckpointWriteError as e:  # every rank raises it; rank 0 says it
        if trainer.dist.is_main:
            print(f"slpfast.pretrain: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C (the first one stops with a checkpoint): at once
        if trainer.dist.is_main:  # every worker gets the Ctrl-C: rank 0 says it
            print(f"slpfast.pretrain: aborted by a second Ctrl-C at step {trainer.step}, without a checkpoint; "
                  f"--train.resume=auto continues from the last one in {trainer.out_dir}", file=sys.stderr)
        return 130
    finally:
        trainer.close()
    hist = [r for r in summary["history"] if r.get("loss/loss") is not None]  # not the all-skipped intervals
    if trainer.dist.is_main and len(hist) >= 2:
        first, last = hist[0], hist[-1]
        terms = [k for k in first if k.startswith("loss/")]
        change = ", ".join(f"{k[5:]} {first[k]:.4f} -> {last[k]:.4f}" for k in terms)
        print(f"slpfast.pretrain: {summary['status']} at step {summary['step']}: {change}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
