"""Reference pose normalization and augmentation in numpy float64: the executable spec of
``torch.ops.slpfast.normalize_pose`` / ``augment_pose`` (csrc/core/pose_*.h).

One clip at a time, vectorised over frames and joints; the batched helpers at the bottom loop
over clips, which is what research code does per sample in DataLoader workers.

Conventions (identical in C++):

- A joint is *valid* when its confidence is finite and ``> conf_threshold`` and all its
  coordinates are finite; invalid joints come out as zeros with confidence 0 ("zeroed and
  flagged"). An infinite confidence is invalid like a NaN one: resampling would interpolate it
  into NaN (``c0 + w * (c1 - c0)``).
- Speeds (``params[:, 7]``, ``AugmentConfig.speed_min``) are at least ``MIN_SPEED`` = 1/64:
  a clip is resampled to at most 64 times its length (``resampled_length``), so a tiny speed
  cannot overflow the output length or allocate without bound.
- The part-drop bit mask (``params[:, 8]``) is an integer in ``[0, 2**num_parts)``.
- Normalization (pose-format's ``normalize`` for the body): centre = mean shoulder midpoint and
  scale = mean shoulder distance (all C coordinates), over the frames where both shoulders are
  valid. Joints with ``anchor[j] >= 0`` are taken relative to that joint in the same frame
  (hands: the wrist, face and mouth: the nose tip) and invalid when it is. Joints with
  ``scale_group[j] = k >= 0`` are divided by the mean length of scale pair k instead (hand size).
  With no frame where both shoulders are valid the clip falls back to its bounding box
  (centre = box centre, scale = max of the x and y extents); with nothing valid, identity.
- Random numbers: Philox4x32-10 keyed by (seed, clip id); see csrc/core/pose_philox.h.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import layouts

MIN_SCALE = 1e-6
#: Smallest speed (params[:, 7], AugmentConfig.speed_min): output clips are at most 64x their
#: input length. Far below any useful augmentation (0.5 already doubles a clip), and it keeps
#: round(L / speed) a small int64 for every valid length instead of an overflow or a TiB buffer.
MIN_SPEED = 1.0 / 64
NUM_PARAMS = 9  # flip, angle, shear, scale_x, scale_y, tx, ty, speed, part_drop_bits
STREAM_PARAMS, STREAM_JITTER, STREAM_JOINT_DROP, STREAM_FRAME_DROP = 0, 1, 2, 3
_M32 = np.uint64(0xFFFFFFFF)


# ----------------------------------------------------------------------------- layout spec
@dataclass(frozen=True)
class PoseLayoutSpec:
    """Everything the ops need to know about a joint layout (canonical or any other)."""

    num_joints: int
    shoulders: tuple[int, int]
    anchor: np.ndarray        # (J,) int: -1 = clip centre, else joint index in the same frame
    scale_group: np.ndarray   # (J,) int: -1 = shoulder scale, k = scale pair k
    flip_perm: np.ndarray     # (J,) int involution
    part_id: np.ndarray       # (J,) int in [0, num_parts)
    num_parts: int
    scale_pairs: tuple[tuple[int, int], ...] = field(default=())


def canonical_spec(hand_scale: bool = False) -> PoseLayoutSpec:
    """Spec of the canonical layout (slpfast.layouts): body about the shoulder centre, each
    hand about its wrist, face and mouth about the nose tip; hands scaled by hand size
    (wrist to middle_mcp) when ``hand_scale``, else by the shoulder width like every part."""
    J = layouts.NUM_JOINTS
    anchor = np.full(J, -1, np.int64)
    group = np.full(J, -1, np.int64)
    pairs = []
    middle_mcp = layouts.HAND_JOINTS.index("middle_mcp")
    for part, wrist in (("left_hand", layouts.LEFT_WRIST), ("right_hand", layouts.RIGHT_WRIST)):
        sl = layouts.PART_SLICES[part]
        anchor[sl] = wrist
        if hand_scale:
            group[sl] = len(pairs)
            pairs.append((wrist, sl.start + middle_mcp))
    for part in ("face", "mouth"):
        anchor[layouts.PART_SLICES[part]] = layouts.FACE_NOSE_TIP
    return PoseLayoutSpec(J, (layouts.LEFT_SHOULDER, layouts.RIGHT_SHOULDER), anchor, group,
                          layouts.flip_permutation(), layouts.part_ids(), len(layouts.PART_NAMES), tuple(pairs))


def shoulder_spec(num_joints: int, left_shoulder: int, right_shoulder: int) -> PoseLayoutSpec:
    """Whole-body normalization of an arbitrary layout about two shoulder joints, exactly
    pose-format's ``Pose.normalize`` (one part, no flip permutation: flip only negates x)."""
    J = num_joints
    return PoseLayoutSpec(J, (left_shoulder, right_shoulder), np.full(J, -1, np.int64), np.full(J, -1, np.int64),
                          np.arange(J), np.zeros(J, np.int64), 1)


# ----------------------------------------------------------------------------- Philox
def philox4x32_10(ctr: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 of counters ``ctr`` (N, 4) uint32-valued with key (k0, k1) -> (N, 4) uint64."""
    c = [np.asarray(ctr[:, i], dtype=np.uint64) for i in range(4)]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    for _ in range(10):
        p0, p1 = m0 * c[0], m1 * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & _M32, (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & _M32]
        k0 = (k0 + np.uint64(0x9E3779B9)) & _M32
        k1 = (k1 + np.uint64(0xBB67AE85)) & _M32
    return np.stack(c, axis=1)


def draw(seed: int, clip: int, stream: int, index) -> np.ndarray:
    """Philox words for (seed, clip, stream, index array) -> (N, 4)."""
    seed, clip = int(seed) & (2**64 - 1), int(clip) & (2**64 - 1)
    index = np.atleast_1d(np.asarray(index, dtype=np.uint64))
    ctr = np.empty((index.size, 4), np.uint64)
    ctr[:, 0], ctr[:, 1], ctr[:, 2], ctr[:, 3] = clip & 0xFFFFFFFF, clip >> 32, stream, index
    return philox4x32_10(ctr, (seed & 0xFFFFFFFF, seed >> 32))


def u01(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float64) + 0.5) * 2.3283064365386963e-10


def box_muller(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.sqrt(-2.0 * np.log(u01(a)))
    theta = 6.283185307179586 * u01(b)
    return r * np.cos(theta), r * np.sin(theta)


def u01_23(x: np.ndarray) -> np.ndarray:
    """Uniform in (0, 1) from the top 23 bits: ``(k + 1/2) 2^-23`` (exact in float32)."""
    return ((x.astype(np.uint64) >> 9).astype(np.float64) + 0.5) * 1.1920928955078125e-07


def box_muller_jitter(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-joint jitter normals: Box-Muller on the 23-bit uniforms. The ops evaluate it in
    float32 (it runs for every output joint), here in float64: up to ~2e-6 apart in z (mostly
    the float rounding of the angle), i.e. 2e-6 * jitter_std in the output."""
    r = np.sqrt(-2.0 * np.log(u01_23(a)))
    theta = 6.283185307179586 * u01_23(b)
    return r * np.cos(theta), r * np.sin(theta)


# ----------------------------------------------------------------------------- normalization
def _valid(pose: np.ndarray, conf: np.ndarray, thr: float) -> np.ndarray:
    """(T, J) bool: confidence finite and > thr, coordinates finite (csrc: conf_valid, load_joint)."""
    c = conf.astype(np.float64)
    with np.errstate(invalid="ignore"):
        return (c > thr) & np.isfinite(c) & np.isfinite(pose).all(-1)


def clip_norm(pose: np.ndarray, conf: np.ndarray, spec: PoseLayoutSpec, thr: float = 0.0) -> dict:
    """Centre (C,), inverse scale and inverse pair scales of one clip ``pose (T, J, C)``."""
    C = pose.shape[-1]
    valid = _valid(pose, conf, thr)
    p = np.where(valid[..., None], pose.astype(np.float64), 0.0)
    a, b = spec.shoulders
    both = valid[:, a] & valid[:, b]
    n, d = float(both.sum()), float(np.linalg.norm(p[both, a] - p[both, b], axis=-1).sum())
    centre, inv_scale, fallback = np.zeros(C), 1.0, 2
    if n > 0 and d / n > MIN_SCALE:
        centre, inv_scale, fallback = (0.5 * (p[both, a] + p[both, b])).sum(0) / n, n / d, 0
    elif valid.any():
        pts = p[valid]
        lo, hi = pts.min(0), pts.max(0)
        size = max(hi[0] - lo[0], hi[1] - lo[1])
        centre, inv_scale, fallback = 0.5 * (lo + hi), (1.0 / size if size > MIN_SCALE else 1.0), 1
    inv_pair = []
    for pa, pb in spec.scale_pairs:
        ok = valid[:, pa] & valid[:, pb]
        pn, pd = float(ok.sum()), float(np.linalg.norm(p[ok, pa] - p[ok, pb], axis=-1).sum())
        inv_pair.append(pn / pd if pn > 0 and pd / pn > MIN_SCALE else inv_scale)
    return {"centre": centre, "inv_scale": inv_scale, "inv_pair": np.array(inv_pair), "fallback": fallback}


def normalize_clip64(pose: np.ndarray, conf: np.ndarray, spec: PoseLayoutSpec, thr: float = 0.0):
    """Normalized clip in float64 before rounding: ``(values (T, J, C), valid (T, J), info)``."""
    info = clip_norm(pose, conf, spec, thr)
    valid = _valid(pose, conf, thr)
    p = np.where(valid[..., None], pose.astype(np.float64), 0.0)
    anchor = spec.anchor
    has_anchor = anchor >= 0
    ref = np.broadcast_to(info["centre"], p.shape).copy()
    ref[:, has_anchor] = p[:, anchor[has_anchor]]
    ok = valid.copy()
    ok[:, has_anchor] &= valid[:, anchor[has_anchor]]
    inv = np.full(spec.num_joints, info["inv_scale"])
    grouped = spec.scale_group >= 0
    inv[grouped] = info["inv_pair"][spec.scale_group[grouped]]
    out = (p - ref) * inv[None, :, None]
    return np.where(ok[..., None], out, 0.0), ok, info


def round_to(values: np.ndarray, ok: np.ndarray, conf: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Round like the C++ store: float64 -> float32 (-> float16); a non-finite result or an
    invalid joint becomes zeros with confidence 0."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(np.float32)
        if dtype == np.float16:
            out = out.astype(np.float16)
    ok = ok & np.isfinite(out).all(-1)
    out = np.where(ok[..., None], out, 0).astype(dtype)
    return out, np.where(ok, conf, 0).astype(np.float32)


def normalize_clip(pose, conf, spec: PoseLayoutSpec, thr: float = 0.0, dtype=np.float32):
    """normalize_pose of one clip ``pose (T, J, C)``, ``conf (T, J)`` -> (pose, conf, info)."""
    values, ok, info = normalize_clip64(pose, conf, spec, thr)
    out, out_conf = round_to(values, ok, conf.astype(np.float32), dtype)
    return out, out_conf, info


# ----------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class AugmentConfig:
    """Distributions of the per-clip parameters and of the per-joint noise.

    rotation (rad), shear and scale are N(0, std) as in pose-format's ``augment2d``
    (scale_y = 1 + N(0, scale_std); scale_x = 1 like pose-format, or = scale_y when
    ``isotropic_scale``); translation N(0, translate_std) per axis; horizontal flip with
    probability ``flip_p``; speed ~ U(speed_min, speed_max) (output length round(T / speed);
    ``speed_min >= MIN_SPEED`` = 1/64);
    each part dropped for the whole clip with probability ``part_drop_p``; every frame with
    ``frame_drop_p``; every joint of every frame with ``joint_drop_p``; jitter N(0, jitter_std)
    on every coordinate.
    """

    rotation_std: float = 0.2
    shear_std: float = 0.2
    scale_std: float = 0.2
    isotropic_scale: bool = False
    translate_std: float = 0.0
    flip_p: float = 0.5
    speed_min: float = 1.0
    speed_max: float = 1.0
    jitter_std: float = 0.0
    joint_drop_p: float = 0.0
    frame_drop_p: float = 0.0
    part_drop_p: float = 0.0

    def sample_config(self) -> list[float]:
        """The op's ``sample_config`` (order of csrc/core/pose_augment.h SampleConfig)."""
        return [float(self.flip_p), float(self.rotation_std), float(self.shear_std), float(self.scale_std),
                1.0 if self.isotropic_scale else 0.0, float(self.translate_std), float(self.speed_min),
                float(self.speed_max), float(self.part_drop_p)]

    def elem_config(self) -> list[float]:
        return [float(self.jitter_std), float(self.joint_drop_p), float(self.frame_drop_p)]


def sample_params(seed: int, clip_id: int, cfg: AugmentConfig, num_parts: int) -> np.ndarray:
    """The (NUM_PARAMS,) float64 parameters of one clip (same draws as the C++ sampler)."""
    a = draw(seed, clip_id, STREAM_PARAMS, 0)[0]
    b = draw(seed, clip_id, STREAM_PARAMS, 1)[0]
    z_rot, z_shear = box_muller(a[0:1], a[1:2])
    z_scale, z_tx = box_muller(a[2:3], a[3:4])
    z_ty, _ = box_muller(b[0:1], b[1:2])
    sy = 1.0 + cfg.scale_std * float(z_scale[0])
    bits = 0
    for p in range(num_parts):
        w = draw(seed, clip_id, STREAM_PARAMS, 2 + p // 4)[0]
        if u01(w[p % 4:p % 4 + 1])[0] < cfg.part_drop_p:
            bits |= 1 << p
    return np.array([
        1.0 if u01(b[2:3])[0] < cfg.flip_p else 0.0,
        cfg.rotation_std * float(z_rot[0]),
        cfg.shear_std * float(z_shear[0]),
        sy if cfg.isotropic_scale else 1.0,
        sy,
        cfg.translate_std * float(z_tx[0]),
        cfg.translate_std * float(z_ty[0]),
        cfg.speed_min + (cfg.speed_max - cfg.speed_min) * float(u01(b[3:4])[0]),
        float(bits),
    ])


def check_speed(speed: float, name: str = "speed") -> None:
    """``speed`` must be finite and >= MIN_SPEED (1/64); ValueError naming ``name`` otherwise."""
    if not (np.isfinite(speed) and speed >= MIN_SPEED):
        raise ValueError(f"{name} must be finite and >= MIN_SPEED = 1/64 (a clip is resampled to at most "
                         f"64x its length), got {speed!r}")


def check_part_bits(bits: float, num_parts: int, name: str = "part-drop bit mask") -> int:
    """The part-drop bit mask as an int: an integer value in [0, 2**num_parts); ValueError otherwise."""
    if not (np.isfinite(bits) and bits == np.floor(bits) and 0 <= bits < 2.0 ** num_parts):
        raise ValueError(f"{name} must be an integer in [0, 2**num_parts) = [0, {2 ** num_parts}), got {bits!r}")
    return int(bits)


def resampled_length(length: int, speed: float) -> int:
    """round(length / speed), at least 1 for a non-empty clip; speed >= MIN_SPEED (ValueError)."""
    check_speed(speed)
    if length <= 0:
        return 0
    return max(1, int(np.floor(length / speed + 0.5)))


def affine_matrix(angle: float, shear: float, scale_x: float, scale_y: float) -> np.ndarray:
    """M = Shear @ Rot @ Scale (pose-format's augment2d order); points are row vectors: p @ M."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[(c + shear * s) * scale_x, (shear * c - s) * scale_y], [s * scale_x, c * scale_y]])


def augment_clip64(pose, conf, params, spec: PoseLayoutSpec, *, seed: int = 0, clip_id: int = 0,
                   out_len: int | None = None, cfg: AugmentConfig = AugmentConfig(), normalize: bool = False,
                   thr: float = 0.0):
    """Augmented clip before rounding: ``(values (L', J, C), valid (L', J), conf (L', J))``.

    ``params`` is a (NUM_PARAMS,) row; ``out_len`` defaults to round(L / speed).
    """
    L, J, C = pose.shape
    check_speed(params[7], "params[7] (speed)")
    bits = check_part_bits(params[8], spec.num_parts, "params[8] (part-drop bit mask)")
    if out_len is None:
        out_len = resampled_length(L, params[7])
    if normalize:
        src_v, src_ok, _ = normalize_clip64(pose, conf, spec, thr)
    else:
        src_ok = _valid(pose, conf, thr)
        src_v = np.where(src_ok[..., None], pose.astype(np.float64), 0.0)
    src_c = np.where(src_ok, conf.astype(np.float64), 0.0)
    values, ok, cf = np.zeros((out_len, J, C)), np.zeros((out_len, J), bool), np.zeros((out_len, J))
    if L == 0 or out_len == 0:
        return values, ok, cf
    i = np.arange(out_len)
    s = (i * (L - 1)) / (out_len - 1) if out_len > 1 else np.zeros(out_len)
    t0 = np.minimum(np.floor(s).astype(np.int64), L - 1)
    w = s - t0
    t1 = np.minimum(t0 + 1, L - 1)
    src = spec.flip_perm if params[0] != 0 else np.arange(J)
    v0, ok0, c0 = src_v[t0][:, src], src_ok[t0][:, src], src_c[t0][:, src]
    v1, ok1, c1 = src_v[t1][:, src], src_ok[t1][:, src], src_c[t1][:, src]
    has1 = ((w > 0) & (t0 + 1 < L))[:, None]
    wj = w[:, None]
    both = has1 & ok0 & ok1
    take1 = has1 & ~both & ok1 & (wj > 0.5)
    kill = has1 & ~both & ~take1 & (wj > 0.5)
    values = np.where(both[..., None], v0 + wj[..., None] * (v1 - v0), np.where(take1[..., None], v1, v0))
    cf = np.where(both, c0 + wj * (c1 - c0), np.where(take1, c1, c0))
    ok = (ok0 | take1) & ~kill
    # flip + affine (z unchanged)
    m = affine_matrix(params[1], params[2], params[3], params[4])
    x = -values[..., 0] if params[0] != 0 else values[..., 0]
    y = values[..., 1]
    values = values.copy()
    values[..., 0] = x * m[0, 0] + y * m[1, 0] + params[5]
    values[..., 1] = x * m[0, 1] + y * m[1, 1] + params[6]
    elem = (i[:, None] * J + np.arange(J)[None, :]).reshape(-1)
    if cfg.jitter_std > 0:
        r = draw(seed, clip_id, STREAM_JITTER, elem)
        z0, z1 = box_muller_jitter(r[:, 0], r[:, 1])
        z2, z3 = box_muller_jitter(r[:, 2], r[:, 3])
        z = np.stack([z0, z1, z2, z3], -1).reshape(out_len, J, 4)
        values = values + cfg.jitter_std * z[..., :C]
    ok &= ((bits >> spec.part_id) & 1 == 0)[None, :]
    if cfg.frame_drop_p > 0:
        ok &= ~(u01(draw(seed, clip_id, STREAM_FRAME_DROP, i)[:, 0]) < cfg.frame_drop_p)[:, None]
    if cfg.joint_drop_p > 0:
        ok &= ~(u01(draw(seed, clip_id, STREAM_JOINT_DROP, elem)[:, 0]) < cfg.joint_drop_p).reshape(out_len, J)
    return np.where(ok[..., None], values, 0.0), ok, np.where(ok, cf, 0.0)


def augment_clip(pose, conf, params, spec, *, dtype=np.float32, **kwargs):
    """augment_pose of one clip -> (pose (L', J, C) of ``dtype``, conf (L', J) float32)."""
    values, ok, cf = augment_clip64(pose, conf, params, spec, **kwargs)
    return round_to(values, ok, cf.astype(np.float32), dtype)


# ----------------------------------------------------------------------------- batches
def normalize_batch(pose: np.ndarray, conf: np.ndarray, lengths: np.ndarray, spec: PoseLayoutSpec,
                    thr: float = 0.0):
    """Padded batch ``pose (B, T, J, C)`` -> (pose, conf, info (B, 5)), one clip at a time."""
    out, out_conf = np.zeros_like(pose), np.zeros(conf.shape, np.float32)
    info = np.zeros((pose.shape[0], 5))
    for b, n in enumerate(lengths):
        out[b, :n], out_conf[b, :n], inf = normalize_clip(pose[b, :n], conf[b, :n], spec, thr, pose.dtype.type)
        info[b, :pose.shape[-1]] = inf["centre"]
        info[b, 3], info[b, 4] = 1.0 / inf["inv_scale"], inf["fallback"]
    return out, out_conf, info


def augment_batch(pose, conf, lengths, params, clip_ids, spec: PoseLayoutSpec, *, seed: int, out_len: int,
                  cfg: AugmentConfig = AugmentConfig(), normalize: bool = False, thr: float = 0.0):
    """Padded batch -> (pose (B, out_len, J, C), conf, out_lengths (B,)), one clip at a time."""
    B, _, J, C = pose.shape
    out, out_conf = np.zeros((B, out_len, J, C), pose.dtype), np.zeros((B, out_len, J), np.float32)
    out_lengths = np.zeros(B, np.int64)
    for b, n in enumerate(lengths):
        m = min(resampled_length(int(n), params[b, 7]), out_len)
        out_lengths[b] = m
        out[b, :m], out_conf[b, :m] = augment_clip(
            pose[b, :n], conf[b, :n], params[b], spec, dtype=pose.dtype.type, seed=seed, clip_id=int(clip_ids[b]),
            out_len=m, cfg=cfg, normalize=normalize, thr=thr)
    return out, out_conf, out_lengths
