// Augmentation math shared by CPU and CUDA: per-clip parameter sampling and the per-output-
// joint transform. Header-only, torch-free, SLP_HD (see pose_math.h for conventions).
//
// Per clip (drawn once, shared by all frames), params row of kNumParams doubles:
//   [0] flip (0/1)  [1] rotation angle (rad)  [2] shear  [3] scale_x  [4] scale_y
//   [5] tx  [6] ty  [7] speed  [8] bit mask of dropped parts
// The 2-D affine follows pose-format's augment2d: row vectors times M = Shear @ Rot @ Scale,
//   Shear = [[1, shear], [0, 1]], Rot = [[cos, -sin], [sin, cos]], Scale = diag(sx, sy),
// then + (tx, ty); z is left unchanged. pose-format scales y only (sx = 1); the sampler does
// the same unless `isotropic` is set, in which case sx = sy.
//
// Output joint (i, j) of a clip with input length L and output length L':
//   1. temporal resampling: source position s = i (L-1) / (L'-1) (0 when L' = 1); linear
//      interpolation of frames floor(s) and floor(s)+1; when one of the two is invalid the
//      nearer frame is taken as is (ties go to the earlier frame);
//   2. horizontal flip: read joint flip_perm[j] and negate x (mirror about x = 0, i.e. about
//      the clip centre once normalized);
//   3. affine; 4. Gaussian jitter (every coordinate, std jitter_std);
//   5. dropout: the part of output joint j in the clip's part mask, frame i with probability
//      frame_drop_p, joint (i, j) with probability joint_drop_p.
// Invalid or dropped joints are written as zeros with confidence 0, so is any joint whose
// rounded output is not finite.
#pragma once

#include "pose_math.h"

namespace slpfast {
namespace pose {

struct SampleConfig {  // the float[] `sample_config` of the op, in this order
  double flip_p, rotation_std, shear_std, scale_std, isotropic, translate_std, speed_min, speed_max,
      part_drop_p;
};

SLP_HD SampleConfig make_sample_config(const double* c) {
  SampleConfig s;
  s.flip_p = c[0];
  s.rotation_std = c[1];
  s.shear_std = c[2];
  s.scale_std = c[3];
  s.isotropic = c[4];
  s.translate_std = c[5];
  s.speed_min = c[6];
  s.speed_max = c[7];
  s.part_drop_p = c[8];
  return s;
}

// Draws the kNumParams parameters of clip `clip` (see the header comment for the layout).
SLP_HD void sample_params(const SampleConfig& cfg, int num_parts, uint64_t seed, uint64_t clip, double* out) {
  const U32x4 a = draw(seed, clip, kStreamParams, 0);
  const U32x4 b = draw(seed, clip, kStreamParams, 1);
  double z_rot, z_shear, z_scale, z_tx, z_ty, z_unused;
  box_muller(a.v[0], a.v[1], &z_rot, &z_shear);
  box_muller(a.v[2], a.v[3], &z_scale, &z_tx);
  box_muller(b.v[0], b.v[1], &z_ty, &z_unused);
  const double sy = 1.0 + cfg.scale_std * z_scale;
  out[0] = u01(b.v[2]) < cfg.flip_p ? 1.0 : 0.0;
  out[1] = cfg.rotation_std * z_rot;
  out[2] = cfg.shear_std * z_shear;
  out[3] = cfg.isotropic != 0.0 ? sy : 1.0;
  out[4] = sy;
  out[5] = cfg.translate_std * z_tx;
  out[6] = cfg.translate_std * z_ty;
  out[7] = cfg.speed_min + (cfg.speed_max - cfg.speed_min) * u01(b.v[3]);
  uint32_t bits = 0;
  for (int p = 0; p < num_parts; ++p) {
    const U32x4 w = draw(seed, clip, kStreamParams, 2u + static_cast<uint32_t>(p / 4));
    if (u01(w.v[p % 4]) < cfg.part_drop_p) bits |= 1u << p;
  }
  out[8] = static_cast<double>(bits);
}

// Output length of a clip of length `len` played at `speed` (> 0): round(len / speed), at
// least 1 for a non-empty clip. The Python side uses the same formula in float64.
SLP_HD int64_t resampled_length(int64_t len, double speed) {
  if (len <= 0) return 0;
  const double v = floor(static_cast<double>(len) / speed + 0.5);
  return v < 1.0 ? 1 : static_cast<int64_t>(v);
}

struct ElemConfig {  // the float[] `elem_config` of the op: jitter_std, joint_drop_p, frame_drop_p
  double jitter_std, joint_drop_p, frame_drop_p;
};

// Everything the per-joint transform needs about one clip.
struct ClipPlan {
  ClipNorm norm;
  double m00, m01, m10, m11, tx, ty;
  int64_t in_start, in_len, out_start, out_len, out_rows;
  uint64_t clip_id;
  uint32_t part_bits;
  int flip;
};

// The part-drop mask of params[8] (an integer in [0, 2^num_parts) from sample_params; the
// Python wrapper checks given params). The raw op may pass anything, and converting a double
// outside uint32's range to uint32 is undefined behaviour, so the conversion saturates as the
// GPU's does: NaN and negatives -> 0 (nothing dropped), >= 2^32 -> every bit set.
SLP_HD uint32_t part_bits_of(double v) {
  if (!(v > 0.0)) return 0u;
  if (v >= 4294967296.0) return 0xffffffffu;
  return static_cast<uint32_t>(v);
}

SLP_HD void plan_affine(ClipPlan* P, const double* params) {
  const double c = cos(params[1]), s = sin(params[1]), sh = params[2], sx = params[3], sy = params[4];
  P->m00 = (c + sh * s) * sx;
  P->m01 = (sh * c - s) * sy;
  P->m10 = s * sx;
  P->m11 = c * sy;
  P->tx = params[5];
  P->ty = params[6];
  P->flip = params[0] != 0.0;
  P->part_bits = part_bits_of(params[8]);
}

// Source joint at input frame t (0-based inside the clip), normalized or raw.
template <typename T, bool kNormalize>
SLP_HD bool source_joint(const Layout& L, const ClipPlan& P, const T* pose, const float* conf, int64_t t,
                         int j, int C, double thr, double out[kMaxC], double* c_out) {
  const int64_t row = P.in_start + t;
  const bool ok = kNormalize ? norm_joint(L, P.norm, pose, conf, row, j, C, thr, out)
                             : load_joint(pose, conf, row, j, L.J, C, thr, out);
  *c_out = ok ? static_cast<double>(conf[row * L.J + j]) : 0.0;
  return ok;
}

// Whether output joint (i, j) is dropped (past the clip, empty clip, part/frame/joint dropout).
SLP_HD bool dropped(const Layout& L, const ClipPlan& P, const ElemConfig& E, uint64_t seed, int64_t i, int j) {
  // i < 0: a row before the clip's first (only from unchecked cu_seqlens on the GPU, see clip_rows)
  if (i < 0 || i >= P.out_len || P.in_len <= 0 || ((P.part_bits >> L.part_id[j]) & 1u)) return true;
  if (E.frame_drop_p > 0.0 &&
      u01(draw(seed, P.clip_id, kStreamFrameDrop, static_cast<uint32_t>(i)).v[0]) < E.frame_drop_p)
    return true;
  const uint32_t elem = static_cast<uint32_t>(i * L.J + j);
  return E.joint_drop_p > 0.0 && u01(draw(seed, P.clip_id, kStreamJointDrop, elem).v[0]) < E.joint_drop_p;
}

// Source position of output frame i: frames t0 and t0 + 1 (when `has1`) with weight w on t0 + 1.
struct SourcePos {
  int64_t t0;
  double w;
  bool has1;
};
SLP_HD SourcePos source_pos(const ClipPlan& P, int64_t i) {
  SourcePos r;
  const double s = P.out_len > 1 ? static_cast<double>(i * (P.in_len - 1)) / static_cast<double>(P.out_len - 1)
                                 : 0.0;
  r.t0 = static_cast<int64_t>(floor(s));
  if (r.t0 > P.in_len - 1) r.t0 = P.in_len - 1;
  r.w = s - static_cast<double>(r.t0);
  r.has1 = r.w > 0.0 && r.t0 + 1 < P.in_len;
  return r;
}

// Linear interpolation of two source samples; with one invalid, the nearer one (ties: t0).
// (v, cf, ok) hold sample t0 on entry and the result on return.
SLP_HD bool combine(double v[kMaxC], double* cf, bool ok, const double v1[kMaxC], double c1, bool ok1, double w,
                    int C) {
  if (ok && ok1) {
    for (int k = 0; k < C; ++k) v[k] += w * (v1[k] - v[k]);
    *cf += w * (c1 - *cf);
    return true;
  }
  if (w > 0.5) {
    if (!ok1) return false;  // the nearer frame is invalid
    for (int k = 0; k < C; ++k) v[k] = v1[k];
    *cf = c1;
    return true;
  }
  return ok;
}

// Flip, affine and jitter of a valid resampled joint, in place.
SLP_HD void transform_joint(const ClipPlan& P, const ElemConfig& E, uint64_t seed, uint32_t elem, int C,
                            double v[kMaxC]) {
  const double x = P.flip ? -v[0] : v[0], y = v[1];
  v[0] = x * P.m00 + y * P.m10 + P.tx;
  v[1] = x * P.m01 + y * P.m11 + P.ty;
  if (E.jitter_std > 0.0) {
    const U32x4 r = draw(seed, P.clip_id, kStreamJitter, elem);
    float z[4];
    box_muller_f(r.v[0], r.v[1], &z[0], &z[1]);
    if (C == 3) box_muller_f(r.v[2], r.v[3], &z[2], &z[3]);  // z only
    for (int k = 0; k < C; ++k) v[k] += E.jitter_std * z[k];
  }
}

// transform_joint and rounding; returns the output confidence (0 when not finite).
template <typename T>
SLP_HD float finish_joint(const ClipPlan& P, const ElemConfig& E, uint64_t seed, uint32_t elem, int C, double v[kMaxC],
                          double cf, T* out_pose, int64_t out_base) {
  transform_joint(P, E, seed, elem, C, v);
  bool ok = true;
  for (int k = 0; k < C; ++k) ok = store(out_pose, out_base + k, v[k]) && ok;
  if (ok) return static_cast<float>(cf);
  for (int k = 0; k < C; ++k) store(out_pose, out_base + k, 0.0);
  return 0.0f;
}

template <typename T>
SLP_HD float zero_joint(T* out_pose, int64_t out_base, int C) {
  for (int k = 0; k < C; ++k) store(out_pose, out_base + k, 0.0);
  return 0.0f;
}

// Computes output joint (i, j) of the clip reading its sources directly (the CUDA path; the CPU
// path caches whole normalized source frames and calls the same pieces).
template <typename T, bool kNormalize>
SLP_HD float augment_joint(const Layout& L, const ClipPlan& P, const ElemConfig& E, uint64_t seed,
                           const T* pose, const float* conf, int64_t i, int j, int C, double thr,
                           T* out_pose, int64_t out_base) {
  if (dropped(L, P, E, seed, i, j)) return zero_joint(out_pose, out_base, C);
  const int src = P.flip ? L.flip_perm[j] : j;
  const SourcePos sp = source_pos(P, i);
  double v[kMaxC] = {0.0, 0.0, 0.0}, cf = 0.0;
  bool ok = source_joint<T, kNormalize>(L, P, pose, conf, sp.t0, src, C, thr, v, &cf);
  if (sp.has1) {
    double v1[kMaxC] = {0.0, 0.0, 0.0}, c1 = 0.0;
    const bool ok1 = source_joint<T, kNormalize>(L, P, pose, conf, sp.t0 + 1, src, C, thr, v1, &c1);
    ok = combine(v, &cf, ok, v1, c1, ok1, sp.w, C);
  }
  if (!ok) return zero_joint(out_pose, out_base, C);
  return finish_joint(P, E, seed, static_cast<uint32_t>(i * L.J + j), C, v, cf, out_pose, out_base);
}

// Output joint (row, j) of normalize_pose; returns its confidence (0: invalid, coords zero).
template <typename T>
SLP_HD float normalize_joint_out(const Layout& L, const ClipNorm& N, const T* pose, const float* conf,
                                 int64_t row, int j, int C, double thr, T* out_pose) {
  double v[kMaxC];
  const int64_t base = (row * L.J + j) * C;
  bool ok = norm_joint(L, N, pose, conf, row, j, C, thr, v);
  if (ok) {
    for (int k = 0; k < C; ++k) ok = store(out_pose, base + k, v[k]) && ok;
  }
  if (!ok) {
    for (int k = 0; k < C; ++k) store(out_pose, base + k, 0.0);
    return 0.0f;
  }
  return conf[row * L.J + j];
}

}  // namespace pose
}  // namespace slpfast
