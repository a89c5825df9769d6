"""Fine-tune and evaluate on the downstream tasks: ``python -m slpfast.finetune`` (or under torchrun).

::

    python -m slpfast.finetune --task islr --init runs/pretrain/encoder.safetensors --data STORE
    python -m slpfast.finetune --task retrieval --init runs/pretrain/checkpoints/step_00000300.pt --eval-only
    torchrun --standalone --nproc_per_node=2 -m slpfast.finetune --task cslr --init none --train.steps=500
    python -m slpfast.finetune --help            # every option, its default and its meaning

Tasks and metrics (all in percent):

- ``islr``: isolated recognition, top-1 / top-5 per instance and per class;
- ``cslr``: continuous recognition with a CTC head, WER with greedy and beam-search decoding;
- ``retrieval``: sign<->text, R@1/5/10 and median rank in both directions (zero-shot with
  ``--eval-only`` and a pre-training checkpoint as ``--init``);
- ``slt``: gloss-free translation (small transformer decoder, or ``--task.slt_model=<local HF
  seq2seq dir>``), BLEU-1..4 and ROUGE-L (with the word vocabulary: lower-cased, as it writes).

Clips: ``islr`` and ``retrieval`` train on random windows of ``data.max_frames`` frames; ``cslr``
and ``slt`` on whole clips, since their targets describe the whole clip (clips that do not fit
``model.max_frames`` are left out of training, and the run says how many). Evaluation reads
whole clips up to ``model.max_frames`` (the centre of a longer one).

``--init`` is ``none`` (from scratch), an exported encoder ``.safetensors``, a pre-training
checkpoint or a fine-tuning checkpoint ``.pt``, or a run folder (its exported encoder, else its
latest checkpoint; see :mod:`slpfast.finetune_init`). ``--data``
is a store directory (default: the synthetic corpus). Training is the pre-training loop
(:class:`~slpfast.train.trainer.Trainer`: same log line, progress bar, checkpoints, resume,
DDP); afterwards every evaluation split is scored and the results are written as JSON
(``--results``, default ``<train.out_dir>/results.json``). ``--eval-only`` skips training and
writes ``<train.out_dir>/results_eval.json`` by default, so that evaluating a checkpoint inside
its own run folder never replaces that run's results (and their training summary).

Exit codes: 0 done (or stopped by SIGTERM or a first Ctrl-C after saving a checkpoint), 1 aborted
(non-finite losses, a model with non-finite weights to evaluate, or a checkpoint that could not be
written: a full disk), 2 bad arguments or configuration, 130 a second Ctrl-C (no checkpoint).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import tomllib
from dataclasses import dataclass, field

from slpfast.models.encoder import PoseEncoderConfig
from slpfast.train.config import DataConfig, OptimConfig, PretrainConfig, TextConfig, TrainConfig, _coerce, field_docs, output_path_problem


@dataclass
class TaskConfig:
    """The downstream task."""

    task: str = "islr"
    """islr, cslr, retrieval or slt (also --task)."""
    init: str = "none"
    """none, an encoder .safetensors, a pre-training or fine-tuning checkpoint .pt, or a run folder (its encoder.safetensors, else its latest checkpoint; the other way round for retrieval and --eval-only) (also --init)."""
    eval_only: bool = False
    """Only evaluate --init (also --eval-only)."""
    results: str = ""
    """Results JSON path (also --results); empty = <train.out_dir>/results.json (results_eval.json with --eval-only)."""
    train_split: str = "auto"
    """Training split; auto = <islr|sentence>_train of the synthetic corpus, else 'train'."""
    eval_splits: str = "auto"
    """Comma-separated evaluation splits; auto = the task's _val and _test splits."""
    label_fraction: float = 1.0
    """ISLR: fraction of the training labels used (class-stratified, at least one per class)."""
    label_seed: int = 0
    """Seed of the label subset."""
    freeze_encoder: bool = False
    """Train only the head (linear probe)."""
    head_dropout: float = 0.1
    """Dropout in the task head."""
    label_smoothing: float = 0.1
    """Label smoothing of the ISLR and SLT cross-entropy."""
    beam_size: int = 8
    """CSLR: CTC beam width."""
    slt_model: str = ""
    """SLT: local Hugging Face encoder-decoder directory; empty = the small transformer decoder."""
    slt_width: int = 256
    """SLT decoder width."""
    slt_layers: int = 2
    """SLT decoder layers."""
    slt_heads: int = 4
    """SLT decoder attention heads."""
    slt_max_len: int = 32
    """SLT: longest target / generated sentence in tokens."""
    slt_num_beams: int = 1
    """SLT with an HF model: beams of generate() (1 = greedy)."""
    eval_batch_size: int = 64
    """Clips per evaluation batch."""


def _train_defaults() -> TrainConfig:
    return TrainConfig(steps=200, out_dir="runs/finetune", export="", ckpt_every=0)


@dataclass
class FinetuneConfig:
    """Everything ``slpfast.finetune`` needs; sections shared with pre-training reuse its classes."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: PoseEncoderConfig = field(default_factory=PoseEncoderConfig)
    text: TextConfig = field(default_factory=TextConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=_train_defaults)
    resolved: dict = field(default_factory=dict)
    """Head sizes fixed from the data (classes, glosses, vocabulary, text encoder); checkpointed."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "FinetuneConfig":
        # the shared sections are checked by the pre-training validator
        PretrainConfig(model=self.model, text=self.text, data=self.data, optim=self.optim, train=self.train).validate()
        t = self.task
        checks = [
            (t.task in ("islr", "cslr", "retrieval", "slt"), "task.task", "must be islr, cslr, retrieval or slt"),
            (0.0 < t.label_fraction <= 1.0, "task.label_fraction", "must be in (0, 1]"),
            (t.label_seed >= 0, "task.label_seed", "must be >= 0"),
            (0.0 <= t.head_dropout < 1.0, "task.head_dropout", "must be in [0, 1)"),
            (0.0 <= t.label_smoothing < 1.0, "task.label_smoothing", "must be in [0, 1)"),
            (t.beam_size >= 1, "task.beam_size", "must be >= 1"),
            (t.slt_width >= 1 and t.slt_heads >= 1 and t.slt_width % t.slt_heads == 0, "task.slt_width",
             "must be a positive multiple of task.slt_heads"),
            (t.slt_layers >= 1, "task.slt_layers", "must be >= 1"),
            (t.slt_max_len >= 3, "task.slt_max_len", "must be >= 3 (bos, a word, eos)"),
            (t.slt_num_beams >= 1, "task.slt_num_beams", "must be >= 1"),
            (t.eval_batch_size >= 1, "task.eval_batch_size", "must be >= 1"),
            (not t.slt_model or os.path.isdir(t.slt_model), "task.slt_model", "must be a local directory"),
            (not t.results or output_path_problem(t.results, folder=False) is None, "task.results",
             f"(--results) {output_path_problem(t.results, folder=False) if t.results else ''}"),
        ]
        for ok, key, what in checks:
            if not ok:
                raise ValueError(f"config: {key} {what}, got {getattr(t, key.split('.')[1])!r}")
        if self.data.splits.strip() != "auto":  # shared [data] section: a pre-training setting
            raise ValueError(f"config: data.splits is for pre-training; fine-tuning reads task.train_split and "
                             f"task.eval_splits, got {self.data.splits!r}")
        return self


_SECTIONS = {"task": TaskConfig, "model": PoseEncoderConfig, "text": TextConfig, "data": DataConfig,
             "optim": OptimConfig, "train": TrainConfig}
#: short flags -> section.key (the issue's command line)
_SHORT = {"task": "task.task", "init": "task.init", "data": "data.store", "results": "task.results",
          "eval-only": "task.eval_only", "config": "config"}


def _set(cfg: FinetuneConfig, section: str, key: str, value, source: str) -> None:
    if section not in _SECTIONS:
        raise ValueError(f"config ({source}): unknown section {section!r}; sections are {sorted(_SECTIONS)}")
    obj = getattr(cfg, section)
    names = [f.name for f in dataclasses.fields(obj)]
    if key not in names:
        raise ValueError(f"config ({source}): unknown key {section}.{key}; keys of [{section}] are {names}")
    setattr(obj, key, _coerce(value, getattr(obj, key), f"{section}.{key}", source))


def parse_args(argv: list[str]) -> FinetuneConfig:
    """``--task T --init P --data S [--eval-only] [--results F] [--config F.toml] [--section.key=value]...``"""
    cfg = FinetuneConfig()
    pairs, config_path, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}; use --task/--init/--data or --section.key=value")
        name, eq, value = arg[2:].partition("=")
        if name != "eval-only" and _SHORT.get(name, name) != "config" and _SHORT.get(name, name).count(".") != 1:
            raise ValueError(f"unknown option --{name}; see --help")  # before asking for its value
        if name == "eval-only" and not eq:
            value = "true"
        elif not eq:
            # the next argument is the value, unless it is itself an option: taking it would
            # swallow that option silently (`--results --train.steps=5` wrote the results to a
            # file named "--train.steps=5" and trained the default 200 steps)
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ValueError(f"{arg} needs a value (--{name}=VALUE)"
                                 + (f", got the option {argv[i + 1]!r} next" if i + 1 < len(argv) else ""))
            value, i = argv[i + 1], i + 1
        i += 1
        name = _SHORT.get(name, name)
        if name == "config":
            config_path = value
        else:
            pairs.append((name, value))
    if config_path:
        try:
            with open(config_path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ValueError(f"--config file {config_path!r} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{config_path} is not valid TOML: {e}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ValueError(f"config ({config_path}): top-level key {section!r} must be a [section] table")
            for key, value in values.items():
                _set(cfg, section, key, value, config_path)
    for name, value in pairs:
        section, key = name.split(".")
        _set(cfg, section, key, value, "command line")
    if cfg.data.store:
        path = os.path.expanduser(cfg.data.store)
        if not os.path.isfile(os.path.join(path, "store.json")):
            raise ValueError(f"--data: {cfg.data.store!r} is not a store directory (no store.json); "
                             "give a store written by slpfast.data, or leave --data out for the synthetic corpus")
    return cfg.validate()


def help_text() -> str:
    lines = ["usage: python -m slpfast.finetune --task {islr,cslr,retrieval,slt} --init {none,FILE} "
             "[--data STORE] [--eval-only] [--results FILE] [--config FILE.toml] [--section.key=value ...]", ""]
    cfg = FinetuneConfig()
    for section, cls in _SECTIONS.items():
        lines.append(f"[{section}]  {(cls.__doc__ or '').strip().splitlines()[0]}")
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            lines.append(f"  --{section}.{f.name}={getattr(getattr(cfg, section), f.name)!r}")
            lines.append(f"      {docs.get(f.name, '')}")
        lines.append("")
    return "\n".join(lines)


def run(cfg: FinetuneConfig) -> dict:
    """Train (unless eval_only) then evaluate; returns the results dict (the same on every rank)."""
    import torch

    from slpfast.finetune_data import FinetuneData
    from slpfast.finetune_init import pretrain_text_setup
    from slpfast.finetune_tasks import MAIN_METRIC
    from slpfast.train.trainer import Trainer

    t = cfg.task
    trainer = Trainer(cfg, data_factory=FinetuneData)
    try:
        data, summary = trainer.data, None
        if t.eval_only:
            if t.task == "retrieval" and data.src.kind not in ("finetune", "pretrain"):
                raise ValueError(f"--eval-only: retrieval needs a fine-tuning checkpoint of it, or a pre-training "
                                 f"checkpoint (zero-shot: checkpoints/step_*.pt, which hold the sign-text "
                                 f"projections), as --init; got {data.src.kind!r}")
            if t.task != "retrieval" and data.src.kind != "finetune":
                raise ValueError(f"--eval-only: {t.task} needs a fine-tuning checkpoint of that task as --init "
                                 f"(got {data.src.kind!r}); only retrieval can be evaluated zero-shot from a "
                                 "pre-training checkpoint")
            if data.src.kind == "pretrain" and not pretrain_text_setup(data.src)["has_head"]:
                # its sign / text projections would be random: the recalls would be noise
                raise ValueError(f"--eval-only: {data.src.path} was pre-trained without the sign-text contrastive "
                                 "term (no sign_proj / text_proj), so it cannot retrieve zero-shot; fine-tune "
                                 "retrieval from it instead (drop --eval-only)")
        else:
            summary = trainer.run()
            if summary["status"] != "completed":
                # SIGTERM / Ctrl-C: the trainer saved a checkpoint and the run must end now (under
                # torchrun the workers have 30 s). Evaluating every split first (minutes of CTC beam
                # search on a CPU) would outlast that, and its results.json would stand for a model
                # that is not the finished one.
                if trainer.dist.is_main:
                    print(f"slpfast.finetune: {summary['status']} at step {trainer.step}: not evaluated and no "
                          f"results written; continue with --train.resume=auto --train.out_dir={trainer.out_dir}",
                          flush=True)
                return {"task": t.task, "init": t.init, "init_kind": data.src.kind, "eval_only": False,
                        "steps": trainer.step, "world_size": trainer.dist.world_size, "metrics": {},
                        "train": {"status": summary["status"]}, "results_path": None}
        model = trainer.raw_model
        bad = next((n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None)
        if bad is not None:
            # a diverged model (or a checkpoint of one): its scores would be NaN, which the metrics
            # reject as bad input (exit 2, "bad arguments"); this is a failed run (exit 1)
            from slpfast.train.trainer import NonFiniteLossError

            raise NonFiniteLossError(f"the model to evaluate has non-finite weights (first: {bad}); nothing was "
                                     "evaluated and no results were written")
        metrics = {s: data.evaluate(model, s) for s in data.eval_splits}
        # steps: the fine-tuning steps behind the evaluated model. With --eval-only that is the
        # fine-tuning checkpoint's step (the trainer itself ran none: 0 read as "untrained")
        steps = trainer.step
        if t.eval_only:
            steps = (data.src.step or 0) if data.src.kind == "finetune" else 0
        results = {"task": t.task, "init": t.init, "init_kind": data.src.kind, "init_step": data.src.step,
                   "eval_only": t.eval_only, "train_split": data.train_split,
                   "train_clips": int(len(data.train_indices)), "steps": steps,
                   "world_size": trainer.dist.world_size, "metrics": metrics}
        if summary is not None:
            hist = summary["history"]
            results["train"] = {"status": summary["status"], "first": hist[0] if hist else None,
                                "last": hist[-1] if hist else None}
        main_metric, higher_is_better = MAIN_METRIC[t.task]
        results["main_metric"] = {"name": main_metric, "higher_is_better": higher_is_better}
        out = t.results or os.path.join(trainer.out_dir, "results_eval.json" if t.eval_only else "results.json")
        results["results_path"] = out
        if trainer.dist.is_main:
            from slpfast.data.shard_format import atomic_write_bytes

            # atomic: a crash or a full disk never leaves a truncated results file over the last good one
            atomic_write_bytes(out, [json.dumps({**results, "config": cfg.to_dict()}, indent=2, default=str).encode()])
            for split, m in metrics.items():
                # the task's main metric first
                shown = {k: round(v, 2) for k, v in sorted(m.items(), key=lambda kv: kv[0] != main_metric)
                         if isinstance(v, float)}
                print(f"slpfast.finetune: {t.task} {split}: {shown}", flush=True)
            print(f"slpfast.finetune: results written to {out}", flush=True)
        return results
    finally:
        trainer.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(help_text())
        return 0
    try:
        cfg = parse_args(argv)
    except ValueError as e:
        print(f"slpfast.finetune: {e}", file=sys.stderr)
        return 2
    from slpfast.data.shard_format import ShardError
    from slpfast.train.checkpoint import CheckpointWriteError
    from slpfast.train.trainer import NonFiniteLossError

    try:
        run(cfg)
    except (ValueError, ShardError) as e:  # bad arguments, or a store that fails its checks
        print(f"slpfast.finetune: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"slpfast.finetune: {e}", file=sys.stderr)
        return 1
    except CheckpointWriteError as e:  # a full disk: every rank raises it, rank 0 says it
        if os.environ.get("RANK", "0") == "0":
            print(f"slpfast.finetune: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C (the first one stops with a checkpoint), or one while setting up
        if os.environ.get("RANK", "0") == "0":  # torchrun passes Ctrl-C to every worker: rank 0 says it
            print(f"slpfast.finetune: aborted by Ctrl-C, without a checkpoint of the current step or results; "
                  f"--train.resume=auto continues from the last checkpoint in {cfg.train.out_dir}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
