"""Pose normalization and augmentation: ``normalize_pose``, ``augment_pose``, ``sample_augment_params``.

Batches are padded, ``pose (B, T, J, C)`` + ``lengths (B,)``, or packed, ``pose (N, J, C)`` +
``cu_seqlens (B+1,)``; pose float32 or float16, C = 2 or 3; ``conf`` has pose's shape without C
(any float dtype, used as float32). The layout defaults to the canonical one
(:mod:`slpfast.layouts`, J = 123); any other is described by a
:class:`~slpfast.reference.pose.PoseLayoutSpec`. Semantics: :mod:`slpfast.reference.pose`.

Metadata on the host: ``lengths`` / ``cu_seqlens``, ``clip_ids`` and ``params`` may be CPU
tensors while the pose is on a GPU. They are then checked on the host and copied to the device
without blocking, and ``augment_pose`` returns the output lengths on the host too: the call reads
nothing back from the GPU (see :mod:`slpfast.ops.pose_checks`). Metadata on the GPU works as
well, at the price of a device->host sync for its checks.

Backends: ``extension`` (``torch.ops.slpfast`` from csrc/: CPU on ``torch.get_num_threads()``
threads, with an AVX2/F16C build of its loops picked at run time (``SLPFAST_POSE_NO_SIMD=1``
forces the baseline one, same bits); CUDA in one fused pass) and ``reference`` (numpy, one clip
at a time). Randomness is Philox keyed by (seed, clip id): the same on CPU and CUDA and
independent of how clips are batched.

The ops are not differentiable: their outputs never require grad (data preprocessing).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from .. import _extension
from ..reference import pose as ref
from ..reference.pose import AugmentConfig, PoseLayoutSpec
from ._dispatch import Backend, Dispatcher
from ._validate import check_int, check_tensor, describe, fail
from .._transfer import to_device
from .pose_checks import (check_batch, check_config, check_flag, check_layout_matches, check_metadata_device,
                          check_params, check_seed, check_threshold)

__all__ = ["normalize_pose", "augment_pose", "sample_augment_params", "AugmentConfig", "PoseLayoutSpec",
           "layout_table"]

NUM_PARAMS = ref.NUM_PARAMS
_LIB_LOADED = _extension.load().loaded


# ----------------------------------------------------------------------------- layout table
def layout_table(spec: PoseLayoutSpec) -> list[int]:
    """The int table the C++ ops read (csrc/core/pose_math.h): a 16-int header then the
    anchor, scale_group, flip_perm and part_id tables (an ``int[]`` argument: host memory on
    every device)."""
    J = spec.num_joints
    if len(spec.scale_pairs) > 4:
        raise ValueError(f"layout: at most 4 scale pairs, got {len(spec.scale_pairs)}")
    head = [J, spec.shoulders[0], spec.shoulders[1], spec.num_parts, len(spec.scale_pairs)]
    head += [int(i) for pair in spec.scale_pairs for i in pair]
    head += [0] * (16 - len(head))
    body = np.concatenate([spec.anchor, spec.scale_group, spec.flip_perm, spec.part_id]).astype(np.int64)
    return [int(v) for v in head] + body.tolist()


@functools.lru_cache(maxsize=4)
def _canonical(hand_scale: bool) -> tuple[PoseLayoutSpec, list[int]]:
    spec = ref.canonical_spec(hand_scale)
    return spec, layout_table(spec)


def _resolve_layout(layout: PoseLayoutSpec | None, hand_scale: bool) -> tuple[PoseLayoutSpec, list[int]]:
    if layout is None:
        return _canonical(bool(hand_scale))
    if not isinstance(layout, PoseLayoutSpec):
        raise ValueError(f"layout must be a PoseLayoutSpec or None, got {type(layout).__name__}")
    return layout, layout_table(layout)


# ----------------------------------------------------------------------------- torch.library
if _LIB_LOADED:

    @torch.library.register_fake("slpfast::normalize_pose")
    def _normalize_fake(pose, conf, seqs, layout, conf_threshold):
        batch = seqs.shape[0] - 1 if pose.dim() == 3 else pose.shape[0]
        return torch.empty_like(pose), torch.empty_like(conf), pose.new_empty((batch, 5), dtype=torch.float64)

    @torch.library.register_fake("slpfast::sample_augment_params")
    def _sample_fake(clip_ids, seed, sample_config, num_parts):
        return clip_ids.new_empty((clip_ids.shape[0], NUM_PARAMS), dtype=torch.float64)

    @torch.library.register_fake("slpfast::augment_pose")
    def _augment_fake(pose, conf, seqs, out_seqs, out_len, params, clip_ids, seed, layout, elem_config, normalize,
                      conf_threshold):
        shape = (out_len, *pose.shape[1:]) if pose.dim() == 3 else (pose.shape[0], out_len, *pose.shape[2:])
        return pose.new_empty(shape), conf.new_empty(shape[:-1])

    def _non_differentiable(ctx, inputs, output):
        ctx.mark_non_differentiable(*(output if isinstance(output, tuple) else (output,)))

    def _no_backward(ctx, *grads):  # never reached: outputs are marked non-differentiable
        raise RuntimeError("slpfast pose ops are not differentiable")

    for _name in ("normalize_pose", "sample_augment_params", "augment_pose"):
        torch.library.register_autograd(f"slpfast::{_name}", _no_backward, setup_context=_non_differentiable)


def _ext_available() -> list[str]:
    return _extension.unavailable_reasons("cpu")


def _ext_supports(pose: torch.Tensor, **_) -> list[str]:
    return _extension.unavailable_reasons(pose.device.type)


# ----------------------------------------------------------------------------- helpers
def _clips(seqs: torch.Tensor, packed: bool, T: int):
    """(start row, length) of every clip, on the host (reference backend)."""
    s = seqs.cpu().tolist()
    if packed:
        return [(s[b], s[b + 1] - s[b]) for b in range(len(s) - 1)]
    return [(b * T, n) for b, n in enumerate(s)]


# ----------------------------------------------------------------------------- normalize_pose
def _normalize_ext(pose, conf, seqs, packed, spec, table, thr):
    return torch.ops.slpfast.normalize_pose(pose.detach(), conf, seqs, table, thr)


def _normalize_ref(pose, conf, seqs, packed, spec, table, thr):
    J, C = pose.shape[-2:]
    x = pose.detach().cpu().numpy().reshape(-1, J, C)
    c = conf.cpu().numpy().reshape(-1, J)
    out, out_c = np.zeros_like(x), np.zeros(c.shape, np.float32)
    clips = _clips(seqs, packed, 0 if packed else pose.shape[1])
    info = np.zeros((len(clips), 5))
    for b, (st, n) in enumerate(clips):
        out[st:st + n], out_c[st:st + n], inf = ref.normalize_clip(x[st:st + n], c[st:st + n], spec, thr, x.dtype.type)
        info[b, :C], info[b, 3], info[b, 4] = inf["centre"], 1.0 / inf["inv_scale"], inf["fallback"]
    dev = pose.device
    return (torch.from_numpy(out).reshape(pose.shape).to(dev), torch.from_numpy(out_c).reshape(conf.shape).to(dev),
            torch.from_numpy(info).to(dev))


_NORMALIZE = Dispatcher("normalize_pose", [
    Backend("extension", _normalize_ext, _ext_available, _ext_supports),
    Backend("reference", _normalize_ref),
])


def normalize_pose(pose: torch.Tensor, conf: torch.Tensor, lengths: torch.Tensor | None = None, *,
                   cu_seqlens: torch.Tensor | None = None, layout: PoseLayoutSpec | None = None,
                   hand_scale: bool = False, conf_threshold: float = 0.0, return_info: bool = False,
                   backend: str = "auto"):
    """Normalize every clip: body about the shoulders, hands about their wrists, face and mouth
    about the nose tip (see :mod:`slpfast.reference.pose`).

    Args:
        pose: (B, T, J, C) with ``lengths`` (B,), or packed (N, J, C) with ``cu_seqlens`` (B+1,);
            float32/float16, C = 2 or 3.
        conf: pose's shape without C. Joints with conf <= ``conf_threshold``, a non-finite conf
            (NaN or inf) or a non-finite coordinate come out as zeros with confidence 0.
        layout: joint layout (default: canonical); ``hand_scale`` scales the canonical hands
            by their own size (mean wrist-middle_mcp length) instead of the shoulder width.
    Returns:
        ``(pose, conf)``: normalized pose (input shape and dtype; padding rows zero) and conf
        float32 (0 = invalid); with ``return_info`` also ``info (B, 5)`` float64: centre x, y, z,
        scale and how the frame was found (0 shoulders, 1 bounding box, 2 nothing valid).
    """
    op = "normalize_pose"
    conf32, seqs, seqs_dev, packed = check_batch(op, pose, conf, lengths, cu_seqlens)
    hand_scale = check_flag(op, "hand_scale", hand_scale)
    return_info = check_flag(op, "return_info", return_info)
    spec, table = _resolve_layout(layout, hand_scale)
    check_layout_matches(op, spec, pose)
    thr = check_threshold(op, conf_threshold)
    impl = _NORMALIZE.select(backend, pose=pose)
    out, out_conf, info = impl.run(pose, conf32, seqs_dev, packed, spec, table, thr)
    return (out, out_conf, info) if return_info else (out, out_conf)


# ----------------------------------------------------------------------------- sampling
def _sample_ext(clip_ids, seed, cfg, num_parts):
    return torch.ops.slpfast.sample_augment_params(clip_ids, seed, cfg.sample_config(), num_parts)


def _sample_ref(clip_ids, seed, cfg, num_parts):
    rows = [ref.sample_params(seed, c, cfg, num_parts) for c in clip_ids.cpu().tolist()]
    out = np.stack(rows) if rows else np.zeros((0, NUM_PARAMS))
    return torch.from_numpy(out).to(clip_ids.device)


_SAMPLE = Dispatcher("sample_augment_params", [
    Backend("extension", _sample_ext, _ext_available, lambda clip_ids, **_: _ext_supports(clip_ids)),
    Backend("reference", _sample_ref),
])


def sample_augment_params(clip_ids: torch.Tensor, seed: int, config: AugmentConfig = AugmentConfig(), *,
                          num_parts: int = 5, backend: str = "auto") -> torch.Tensor:
    """Per-clip augmentation parameters (B, 9) float64 on ``clip_ids``' device: flip, angle,
    shear, scale_x, scale_y, tx, ty, speed, dropped-part bit mask. A pure function of
    (seed, clip id, config): the same on every device and in every batch."""
    op = "sample_augment_params"
    check_tensor(op, "clip_ids", clip_ids, ndim=1, dtypes=(torch.int32, torch.int64))
    seed = check_seed(op, seed)
    num_parts = check_int(op, "num_parts", num_parts, 1, 16)
    cfg = check_config(op, config)
    ids = clip_ids.to(torch.int64)
    return _SAMPLE.select(backend, clip_ids=ids).run(ids, seed, cfg, num_parts)


# ----------------------------------------------------------------------------- augment_pose
def _augment_ext(pose, conf, seqs, out_seqs, out_len, params, clip_ids, seed, table, spec, cfg, normalize, thr,
                 packed):
    return torch.ops.slpfast.augment_pose(pose.detach(), conf, seqs, out_seqs, out_len, params, clip_ids, seed, table,
                                          cfg.elem_config(), normalize, thr)


def _augment_ref(pose, conf, seqs, out_seqs, out_len, params, clip_ids, seed, table, spec, cfg, normalize, thr,
                 packed):
    J, C = pose.shape[-2:]
    x = pose.detach().cpu().numpy().reshape(-1, J, C)
    c = conf.cpu().numpy().reshape(-1, J)
    out_shape = (out_len, J, C) if packed else (pose.shape[0], out_len, J, C)
    out = np.zeros((int(np.prod(out_shape[:-2])), J, C), x.dtype)
    out_c = np.zeros(out.shape[:-1], np.float32)
    prm, ids = params.cpu().numpy(), clip_ids.cpu().tolist()
    spans_in = _clips(seqs, packed, 0 if packed else pose.shape[1])
    spans_out = _clips(out_seqs, packed, out_len)
    for b, ((si, n), (so, m)) in enumerate(zip(spans_in, spans_out)):
        out[so:so + m], out_c[so:so + m] = ref.augment_clip(
            x[si:si + n], c[si:si + n], prm[b], spec, dtype=x.dtype.type, seed=seed, clip_id=ids[b], out_len=m,
            cfg=cfg, normalize=normalize, thr=thr)
    dev = pose.device
    return torch.from_numpy(out).reshape(out_shape).to(dev), torch.from_numpy(out_c).reshape(out_shape[:-1]).to(dev)


_AUGMENT = Dispatcher("augment_pose", [
    Backend("extension", _augment_ext, _ext_available, _ext_supports),
    Backend("reference", _augment_ref),
])


def _resampled_lengths(lengths: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
    """round(L / speed), >= 1 for non-empty clips (same float64 formula as the C++ core)."""
    out = torch.floor(lengths.to(torch.float64) / speed + 0.5).clamp_min(1).to(torch.int64)
    return torch.where(lengths > 0, out, torch.zeros_like(out))


def augment_pose(pose: torch.Tensor, conf: torch.Tensor, lengths: torch.Tensor | None = None, *,
                 cu_seqlens: torch.Tensor | None = None, seed: int | None = None,
                 clip_ids: torch.Tensor | None = None, params: torch.Tensor | None = None,
                 config: AugmentConfig = AugmentConfig(), normalize: bool = False,
                 layout: PoseLayoutSpec | None = None, hand_scale: bool = False, conf_threshold: float = 0.0,
                 out_len: int | None = None, backend: str = "auto"):
    """Augment every clip with parameters drawn per clip (shared by its frames).

    Per output frame and joint: temporal resampling (speed, linear interpolation), horizontal
    flip (left/right swapped, x negated: apply to normalized poses), 2-D affine as pose-format's
    augment2d (+ translation), Gaussian jitter and joint / frame / part dropout (confidence 0).
    See :class:`AugmentConfig` and csrc/core/pose_augment.h for the exact definitions.

    Args:
        pose, conf, lengths / cu_seqlens: as :func:`normalize_pose`.
        seed: Philox seed, any Python int (taken modulo 2**64: -1 and 2**64 - 1 are the same
            seed); with ``clip_ids`` (B,) int (default ``arange(B)``, where the lengths are) it
            keys every random draw, so a clip's result does not depend on its batch or device.
            Needed unless ``params`` is given (and then still for jitter and dropout).
        params: explicit per-clip parameters (B, 9) (see :func:`sample_augment_params`)
            instead of sampling them: finite, speed ``params[:, 7] >= 1/64`` (``MIN_SPEED``:
            a clip is resampled to at most 64x its length) and the part-drop mask
            ``params[:, 8]`` an integer in ``[0, 2**num_parts)``.
        normalize: apply :func:`normalize_pose` first, fused into the same pass.
        out_len: padded output length (int >= 0; padded input only); default round(T / config.speed_min) when
            sampling (``config.speed_min >= 1/64``), the longest output clip with explicit
            ``params``. Longer clips are cut to it.
    Returns:
        ``(pose, conf, out_lengths)`` for padded input, pose (B, out_len, J, C);
        ``(pose, conf, out_cu_seqlens)`` for packed input; the lengths / cu_seqlens on the device
        of the ones given (host lengths and clip ids: nothing is read back from a GPU). Dropped
        or invalid joints are zeros with confidence 0.
    """
    op = "augment_pose"
    conf32, seqs, seqs_dev, packed = check_batch(op, pose, conf, lengths, cu_seqlens)
    normalize = check_flag(op, "normalize", normalize)
    hand_scale = check_flag(op, "hand_scale", hand_scale)
    if out_len is not None:
        if packed:  # packed output has exactly the resampled rows: a length would be ignored
            fail(op, f"out_len sets the padded output length; packed input (cu_seqlens) takes none, got {out_len!r}")
        out_len = check_int(op, "out_len", out_len, 0)
    spec, table = _resolve_layout(layout, hand_scale)
    check_layout_matches(op, spec, pose)
    thr = check_threshold(op, conf_threshold)
    cfg = check_config(op, config)
    batch = seqs.shape[0] - 1 if packed else pose.shape[0]
    if clip_ids is None:
        clip_ids = torch.arange(batch, device=seqs.device)
    check_tensor(op, "clip_ids", clip_ids, ndim=1, dtypes=(torch.int32, torch.int64))
    if clip_ids.shape[0] != batch:
        fail(op, f"clip_ids must have shape (B,)=({batch},), got {describe(clip_ids)}")
    check_metadata_device(op, "clip_ids", clip_ids, pose)
    clip_ids = clip_ids.to(torch.int64)
    needs_seed = cfg.jitter_std > 0 or cfg.joint_drop_p > 0 or cfg.frame_drop_p > 0
    if seed is None and (params is None or needs_seed):
        fail(op, "seed is required (to sample the parameters, or for jitter and dropout)")
    seed = 0 if seed is None else check_seed(op, seed)
    in_lengths = seqs[1:] - seqs[:-1] if packed else seqs
    if params is None:  # sampled where the clip ids are (the same bits on every device)
        params = sample_augment_params(clip_ids, seed, cfg, num_parts=spec.num_parts, backend=backend)
        default_len = ref.resampled_length(pose.shape[1], cfg.speed_min) if not packed else None
    else:
        params = check_params(op, params, batch, NUM_PARAMS, pose, spec.num_parts)
        default_len = None
    # output lengths where the input lengths are: on the host when they were given there
    out_lengths = _resampled_lengths(in_lengths, params[:, 7].to(in_lengths.device))
    if packed:
        out_lengths_dtype = cu_seqlens.dtype
        out_seqs = torch.zeros(batch + 1, dtype=torch.int64, device=in_lengths.device)
        out_seqs[1:] = torch.cumsum(out_lengths, 0)
        out_len = int(out_seqs[-1])
    else:
        if out_len is None:
            out_len = default_len if default_len is not None else int(out_lengths.max()) if batch else 0
        out_seqs = out_lengths.clamp_max(out_len)
        out_lengths_dtype = lengths.dtype
    dev = pose.device
    impl = _AUGMENT.select(backend, pose=pose)
    out, out_conf = impl.run(pose, conf32, seqs_dev, to_device(out_seqs, dev), out_len, to_device(params, dev),
                             to_device(clip_ids, dev), seed, table, spec, cfg, bool(normalize), thr, packed)
    return out, out_conf, out_seqs.to(out_lengths_dtype)
