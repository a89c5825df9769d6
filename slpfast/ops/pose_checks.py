"""Argument checks of the pose ops (:mod:`slpfast.ops.pose`), and where their metadata lives.

Host metadata: ``lengths`` / ``cu_seqlens`` (and ``clip_ids``, ``params``) may be CPU tensors
while ``pose`` is on a GPU. Their values are then checked on the host, for free, and only copied
to the device (pinned, non-blocking: :func:`slpfast._transfer.to_device`). Checking them on the device instead reads them back, a
device->host sync that drains the GPU's work queue; a training step that calls the ops on a
loader's host-side lengths therefore reads nothing back.
"""
from __future__ import annotations

import numpy as np
import torch

from .._transfer import to_device
from ..reference.pose import MIN_SPEED, AugmentConfig, PoseLayoutSpec
from ._validate import check_cu_seqlens, check_lengths, check_same_device, check_tensor, describe, fail, is_host_real

POSE_DTYPES = (torch.float32, torch.float16)
CONF_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_metadata_device(op: str, name: str, t: torch.Tensor | None, pose: torch.Tensor) -> None:
    """``t`` must be on pose's device or on the host."""
    if t is not None and t.device != pose.device and t.device.type != "cpu":
        fail(op, f"{name} must be on pose's device ({pose.device}) or on the CPU, got {describe(t)}")


def check_batch(op: str, pose, conf, lengths, cu_seqlens):
    """Validates a padded or packed batch.

    Returns ``(conf float32, seqs int64 where the caller gave them, seqs int64 on pose's device,
    packed)``; ``seqs`` are the lengths (B,) or the cu_seqlens (B+1,).
    """
    check_tensor(op, "pose", pose, ndim=(3, 4), dtypes=POSE_DTYPES)
    packed = pose.dim() == 3
    if pose.shape[-1] not in (2, 3):
        fail(op, f"pose must have C = 2 or 3 coordinates in its last dim, got {describe(pose)}")
    check_tensor(op, "conf", conf, dtypes=CONF_DTYPES)
    if tuple(conf.shape) != tuple(pose.shape[:-1]):
        fail(op, f"conf must have shape {tuple(pose.shape[:-1])} (pose without C), got {describe(conf)}")
    check_same_device(op, pose=pose, conf=conf)
    if packed:
        if cu_seqlens is None or lengths is not None:
            fail(op, "packed pose (N, J, C) needs cu_seqlens= (and no lengths)")
        check_tensor(op, "cu_seqlens", cu_seqlens, ndim=1, dtypes=(torch.int32, torch.int64))
        check_metadata_device(op, "cu_seqlens", cu_seqlens, pose)
        check_cu_seqlens(op, "cu_seqlens", cu_seqlens, pose.shape[0])
        seqs = cu_seqlens.to(torch.int64)
    else:
        if lengths is None or cu_seqlens is not None:
            fail(op, "padded pose (B, T, J, C) needs lengths= (and no cu_seqlens)")
        check_tensor(op, "lengths", lengths, ndim=1, dtypes=(torch.int32, torch.int64))
        check_metadata_device(op, "lengths", lengths, pose)
        check_lengths(op, "lengths", lengths, pose.shape[0], pose.shape[1])
        seqs = lengths.to(torch.int64)
    return conf.detach().to(torch.float32), seqs, to_device(seqs, pose.device), packed


def check_layout_matches(op: str, spec: PoseLayoutSpec, pose: torch.Tensor) -> None:
    if spec.num_joints != pose.shape[-2]:
        fail(op, f"pose has J={pose.shape[-2]} joints but the layout has {spec.num_joints} "
                 f"(pass layout=PoseLayoutSpec(...) for non-canonical data)")


def check_threshold(op: str, conf_threshold) -> float:
    # a bool is an int to Python, but True as a threshold (= 1.0, every joint invalid) is a slip
    if (isinstance(conf_threshold, (bool, np.bool_)) or not isinstance(conf_threshold, (int, float, np.number))
            or not np.isfinite(conf_threshold)):
        fail(op, f"conf_threshold must be a finite number, got {type(conf_threshold).__name__} {conf_threshold!r}")
    return float(conf_threshold)


def check_flag(op: str, name: str, value) -> bool:
    """A bool flag: ``"no"``, 0.0 or None would silently mean something (truthiness)."""
    if not isinstance(value, (bool, np.bool_)):
        fail(op, f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_config(op: str, cfg) -> AugmentConfig:
    if not isinstance(cfg, AugmentConfig):
        fail(op, f"config must be an AugmentConfig, got {type(cfg).__name__}")
    # types first: a string field would otherwise fail inside numpy's comparisons (TypeError)
    for name in ("rotation_std", "shear_std", "scale_std", "translate_std", "jitter_std"):
        v = getattr(cfg, name)
        if not (is_host_real(v) and np.isfinite(v) and v >= 0):
            fail(op, f"config.{name} must be a finite number >= 0, got {type(v).__name__} {v!r}")
    for name in ("flip_p", "joint_drop_p", "frame_drop_p", "part_drop_p"):
        v = getattr(cfg, name)
        if not (is_host_real(v) and 0.0 <= v <= 1.0):
            fail(op, f"config.{name} must be a probability in [0, 1], got {type(v).__name__} {v!r}")
    if not isinstance(cfg.isotropic_scale, (bool, np.bool_)):  # "no" would be truthy
        fail(op, f"config.isotropic_scale must be a bool, got {type(cfg.isotropic_scale).__name__} "
                 f"{cfg.isotropic_scale!r}")
    if not (is_host_real(cfg.speed_min) and is_host_real(cfg.speed_max)
            and 0 < cfg.speed_min <= cfg.speed_max < float("inf")):
        fail(op, f"config needs 0 < speed_min <= speed_max (finite numbers), got speed_min={cfg.speed_min!r}, "
                 f"speed_max={cfg.speed_max!r}")
    if cfg.speed_min < MIN_SPEED:  # the default out_len is round(T / speed_min): bounded at 64 T
        fail(op, f"config.speed_min must be >= MIN_SPEED = 1/64 (a clip is resampled to at most 64x its "
                 f"length), got {cfg.speed_min!r}")
    return cfg


def check_seed(op: str, seed) -> int:
    """An int seed -> the signed int64 the ops take (same bits as ``seed mod 2**64``)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        fail(op, f"seed must be an int, got {seed!r}")
    seed = int(seed) & (2**64 - 1)
    return seed - 2**64 if seed >= 2**63 else seed


def check_params(op: str, params, batch: int, num_params: int, pose: torch.Tensor, num_parts: int) -> torch.Tensor:
    """Explicit per-clip parameters (B, num_params) -> float64, where they were given (on pose's
    device or on the host). Finite; speed ``params[:, 7] >= MIN_SPEED`` (1/64: output clips at
    most 64x their input); part-drop mask ``params[:, 8]`` an integer in ``[0, 2**num_parts)``.
    On a GPU the checks read their flags back in one sync (host params cost nothing)."""
    check_tensor(op, "params", params, ndim=2, dtypes=(torch.float32, torch.float64))
    if tuple(params.shape) != (batch, num_params):
        fail(op, f"params must have shape (B, {num_params})=({batch}, {num_params}), got {describe(params)}")
    check_metadata_device(op, "params", params, pose)
    params = params.detach().to(torch.float64)
    if not batch:
        return params
    speed, bits = params[:, 7], params[:, 8]
    bits_bad = (bits < 0) | (bits >= 2.0 ** num_parts) | (bits != bits.floor())
    finite, speed_ok, bits_ok = torch.stack(
        [torch.isfinite(params).all(), (speed >= MIN_SPEED).all(), ~bits_bad.any()]).tolist()
    if not finite:
        fail(op, "params must be finite")
    if not speed_ok:  # the output length is round(L / speed): bounded at 64 L
        fail(op, f"params[:, 7] (speed) must be >= MIN_SPEED = 1/64 (a clip is resampled to at most 64x its "
                 f"length), got min {float(speed.min())!r}")
    if not bits_ok:
        fail(op, f"params[:, 8] (part-drop bit mask) must be an integer in [0, 2**num_parts) = "
                 f"[0, {2 ** num_parts}), got {float(bits[bits_bad][0])!r}")
    return params
