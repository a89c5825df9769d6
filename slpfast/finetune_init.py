"""``--init``: where the fine-tuned model's weights come from, with clear errors.

``--init`` accepts

- ``none``: a randomly initialised encoder of the ``[model]`` config (training from scratch);
- ``*.safetensors``: a pose encoder exported by ``slpfast.pretrain`` (config in the metadata);
- ``*.pt``: a pre-training checkpoint (encoder + the contrastive head, used by retrieval, also
  zero-shot, + the trainable text encoder if pre-training had one), or a fine-tuning checkpoint
  of the same task (everything, for ``--eval-only`` or to continue).

Every tensor is checked against the model it goes into: a missing, unexpected or wrongly
shaped tensor is a ``ValueError`` that names the file and the tensors, never a raw
``load_state_dict`` traceback.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from torch import nn

from slpfast.models.encoder import PoseEncoder, PoseEncoderConfig

_HINT = ("give an encoder .safetensors exported by slpfast.pretrain, a pre-training or fine-tuning "
         "checkpoint .pt, or 'none'")


@dataclass
class InitSource:
    """What ``--init`` provided.

    kind: 'none', 'encoder' (safetensors), 'pretrain' or 'finetune' (checkpoints).
    encoder_config: the encoder's config (from the file, or the run's [model] for 'none').
    state: tensors by their names in the source model (encoder tensors under ``encoder.``).
    config: the source run's config dict (checkpoints only).
    step: the optimizer step the checkpoint was saved at (checkpoints only, else None).
    """

    kind: str
    path: str
    encoder_config: PoseEncoderConfig
    state: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    step: int | None = None


def read_init(path: str, model_cfg: PoseEncoderConfig, prefer_checkpoint: bool = False) -> InitSource:
    """Read ``--init`` (no model is built yet). A run folder gives its exported encoder, or
    with ``prefer_checkpoint`` (retrieval: the checkpoint also holds the sign-text projection
    heads) its latest checkpoint first."""
    if path in ("", "none", "None"):
        return InitSource("none", "", model_cfg)
    if os.path.isdir(path):
        path = _init_in_folder(path, prefer_checkpoint)
    if not os.path.isfile(path):
        raise ValueError(f"--init: {path!r} does not exist; {_HINT}")
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(path)
        except Exception as e:  # noqa: BLE001 - any parse failure means a bad file
            raise ValueError(f"--init: {path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
        if "slpfast_encoder_config" not in meta:
            raise ValueError(f"--init: {path} has no slpfast_encoder_config metadata; it is not a pose encoder "
                             "exported by slpfast.pretrain (PoseEncoder.save_pretrained)")
        cfg = _encoder_config(json.loads(meta["slpfast_encoder_config"]), path)
        return InitSource("encoder", path, cfg, {f"encoder.{k}": v for k, v in state.items()})
    if path.endswith(".pt"):
        from slpfast.train.checkpoint import load_checkpoint

        try:
            ckpt = load_checkpoint(path)
        except ValueError as e:
            raise ValueError(f"--init: {e}") from None
        config = ckpt.get("config") or {}
        if "model" not in config:
            raise ValueError(f"--init: checkpoint {path} has no model config; it was not written by slpfast")
        kind = "finetune" if "task" in config else "pretrain"
        step = ckpt.get("step")
        return InitSource(kind, path, _encoder_config(config["model"], path), dict(ckpt["model"]), config,
                          int(step) if step is not None else None)
    raise ValueError(f"--init: {path!r} has an unknown extension; {_HINT}")


def _init_in_folder(folder: str, prefer_checkpoint: bool = False) -> str:
    """A run folder given as ``--init``: its exported encoder, else its latest checkpoint (the
    other way round with ``prefer_checkpoint``)."""
    from slpfast.train.checkpoint import latest_checkpoint

    encoder = os.path.join(folder, "encoder.safetensors")
    run_dir = os.path.dirname(os.path.normpath(folder)) if os.path.basename(os.path.normpath(folder)) == \
        "checkpoints" else folder
    found = latest_checkpoint(run_dir)
    if prefer_checkpoint and found is not None:
        return found
    if os.path.isfile(encoder):
        return encoder
    if found is None:
        raise ValueError(f"--init: folder {folder!r} holds neither an encoder.safetensors nor checkpoints/step_*.pt; "
                         f"{_HINT}")
    return found


#: [model] fields that do not change the weights' shapes: the command line may set them over --init's
RUNTIME_MODEL_FIELDS = ("dropout", "attn_backend")


def model_config_for(user: PoseEncoderConfig, src: InitSource) -> PoseEncoderConfig:
    """The encoder config of the run: ``--init``'s (its weights fix the shapes), with the runtime
    fields (dropout, attention backend) the user set. A shape field the user set to a value other
    than the file's (``--model.size=base`` with a tiny encoder) is a ``ValueError``, never silently
    ignored."""
    if src.kind == "none":
        return src.encoder_config
    default, theirs = PoseEncoderConfig(), src.encoder_config
    conflicts, runtime = [], {}
    for f in dataclasses.fields(PoseEncoderConfig):
        mine = getattr(user, f.name)
        if mine == getattr(default, f.name):
            continue  # not set by the user
        if f.name in RUNTIME_MODEL_FIELDS:
            runtime[f.name] = mine
        elif mine != getattr(theirs, f.name):
            conflicts.append(f"model.{f.name}={mine!r} (the file has {getattr(theirs, f.name)!r})")
    if conflicts:
        raise ValueError(f"--init: {src.path} holds an encoder of another shape than asked: {', '.join(conflicts)}; "
                         "leave [model] out to use the file's, or use --init none to train that shape from scratch")
    return dataclasses.replace(theirs, **runtime).resolved()


def _encoder_config(d: dict, path: str) -> PoseEncoderConfig:
    try:
        return PoseEncoderConfig(**d).resolved()
    except (TypeError, ValueError) as e:
        raise ValueError(f"--init: the encoder config stored in {path} is invalid ({e})") from None


def load_strict(module: nn.Module, state: dict, prefix: str, source: str) -> None:
    """Load ``state[prefix + name]`` into every parameter/buffer of ``module``; every tensor must
    exist with the same shape, and no extra tensor under ``prefix`` may be left over."""
    own = module.state_dict()
    theirs = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shapes = sorted(f"{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(theirs)
                    if tuple(theirs[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        def show(xs):
            return ", ".join(xs[:6]) + (f" (+{len(xs) - 6} more)" if len(xs) > 6 else "")

        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {show(unexpected)}")
        if shapes:
            parts.append(f"shape mismatch (file vs model) {len(shapes)}: {show(shapes)}")
        raise ValueError(f"--init: the weights in {source} do not match the model's {prefix.rstrip('.') or 'model'} "
                         f"({'; '.join(parts)})")
    module.load_state_dict({k: theirs[k] for k in own})


def build_encoder(src: InitSource) -> PoseEncoder:
    """The pose encoder of the source, with its weights loaded (random for 'none')."""
    enc = PoseEncoder(src.encoder_config)
    if src.kind != "none":
        load_strict(enc, src.state, "encoder.", src.path)
    return enc


def pretrain_text_setup(src: InitSource) -> dict:
    """How the source pre-training run encoded text: ``{"kind", "path", "small_dim", "max_length",
    "proj_dim", "has_head", "text_dim"}`` (empty dict when the source has no contrastive head)."""
    if src.kind != "pretrain":
        return {}
    text = src.config.get("text", {})
    has_head = "sign_proj.weight" in src.state and "text_proj.weight" in src.state
    out = {k: text.get(k) for k in ("kind", "path", "small_dim", "max_length", "proj_dim")}
    out["has_head"] = has_head
    if has_head:
        out["text_dim"] = int(src.state["text_proj.weight"].shape[1])
        out["proj_dim"] = int(src.state["text_proj.weight"].shape[0])
    out["trainable_text"] = any(k.startswith("text_encoder.") for k in src.state)
    return out


def load_contrastive_head(head: nn.Module, src: InitSource) -> None:
    """Copy the pre-trained ``sign_proj``, ``text_proj`` and temperature into a RetrievalHead."""
    sub = {k: v for k, v in src.state.items() if k.split(".")[0] in ("sign_proj", "text_proj")}
    if "contrastive.log_scale" in src.state:
        sub["contrastive.log_scale"] = src.state["contrastive.log_scale"]
    load_strict(head, sub, "", f"{src.path} (contrastive head)")


def check_task(src: InitSource, task: str) -> None:
    """A fine-tuning checkpoint only initialises the task it was trained for."""
    if src.kind == "finetune" and src.config.get("task", {}).get("task") != task:
        raise ValueError(f"--init: {src.path} is a fine-tuning checkpoint of task "
                         f"{src.config.get('task', {}).get('task')!r}, not {task!r}")
    if src.kind == "finetune" and not src.config.get("resolved"):
        raise ValueError(f"--init: fine-tuning checkpoint {src.path} has no resolved head sizes; "
                         "it was not written by slpfast.finetune")


def load_task_model(model: nn.Module, src: InitSource, task: str) -> None:
    """Load a whole fine-tuning checkpoint into ``model`` (same task and shapes)."""
    check_task(src, task)
    load_strict(model, src.state, "", src.path)

