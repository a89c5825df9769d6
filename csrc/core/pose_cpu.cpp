// CPU implementation of csrc/core/pose_api.h: plain loops over clips, frames and joints
// calling the shared math of pose_math.h / pose_augment.h. No threads of its own (the torch
// binding parallelises over clips with at::parallel_for).
#include "pose_api.h"

namespace slpfast {
namespace pose {

const char* check_layout(const int32_t* t, int64_t numel) {
  if (numel < kHeader) return "layout table is shorter than its header";
  const int64_t J = t[0];
  if (J < 1) return "layout: J must be >= 1";
  if (numel != kHeader + 4 * J) return "layout: table size must be 16 + 4*J";
  if (t[1] < 0 || t[1] >= J || t[2] < 0 || t[2] >= J) return "layout: shoulder indices out of range";
  if (t[3] < 1 || t[3] > kMaxParts) return "layout: number of parts must be in [1, 16]";
  if (t[4] < 0 || t[4] > kMaxPairs) return "layout: number of scale pairs must be in [0, 4]";
  for (int k = 0; k < 2 * t[4]; ++k)
    if (t[5 + k] < 0 || t[5 + k] >= J) return "layout: scale pair index out of range";
  const int32_t* anchor = t + kHeader;
  const int32_t* group = anchor + J;
  const int32_t* perm = group + J;
  const int32_t* part = perm + J;
  for (int64_t j = 0; j < J; ++j) {
    if (anchor[j] < -1 || anchor[j] >= J) return "layout: anchor index out of range";
    if (group[j] < -1 || group[j] >= t[4]) return "layout: scale group out of range";
    if (perm[j] < 0 || perm[j] >= J) return "layout: flip permutation index out of range";
    if (perm[perm[j]] != j) return "layout: flip permutation must be an involution";
    if (part[j] < 0 || part[j] >= t[3]) return "layout: part id out of range";
  }
  return nullptr;
}

namespace {

// Clip statistics on one thread: sums over frames, then the bounding box only when needed.
template <typename T>
ClipNorm clip_norm(const Layout& L, const T* pose, const float* conf, int64_t start, int64_t len, int C,
                   double thr) {
  StatsAcc acc;
  stats_zero(&acc);
  for (int64_t t = 0; t < len; ++t) stats_add_frame(&acc, L, pose, conf, start + t, C, thr);
  if (!needs_box(acc)) return finalize_norm(acc, nullptr, C);
  BoxAcc box;
  box_zero(&box);
  for (int64_t t = 0; t < len; ++t)
    for (int j = 0; j < L.J; ++j) box_add_joint(&box, pose, conf, start + t, j, L.J, C, thr);
  return finalize_norm(acc, &box, C);
}

void write_info(double* info, int64_t b, const ClipNorm& n) {
  if (info == nullptr) return;
  double* row = info + b * 5;
  for (int k = 0; k < 3; ++k) row[k] = n.centre[k];
  row[3] = 1.0 / n.inv_scale;
  row[4] = static_cast<double>(n.fallback);
}

template <typename T>
void normalize_range(const NormalizeArgs& a, int64_t b0, int64_t b1) {
  const T* pose = static_cast<const T*>(a.pose);
  T* out = static_cast<T*>(a.out_pose);
  const Layout& L = a.layout;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t start = a.seqs.start(b), len = a.seqs.len(b), owned = a.seqs.rows_owned(b);
    const ClipNorm n = clip_norm(L, pose, a.conf, start, len, a.C, a.thr);
    write_info(a.info, b, n);
    for (int64_t t = 0; t < len; ++t)
      for (int j = 0; j < L.J; ++j)
        a.out_conf[(start + t) * L.J + j] = normalize_joint_out(L, n, pose, a.conf, start + t, j, a.C, a.thr, out);
    for (int64_t t = len; t < owned; ++t) {  // padding rows
      for (int64_t e = 0; e < L.J * a.C; ++e) store(out, (start + t) * L.J * a.C + e, 0.0);
      for (int j = 0; j < L.J; ++j) a.out_conf[(start + t) * L.J + j] = 0.0f;
    }
  }
}

template <typename T, bool kNormalize>
void augment_range(const AugmentArgs& a, int64_t b0, int64_t b1) {
  const T* pose = static_cast<const T*>(a.pose);
  T* out = static_cast<T*>(a.out_pose);
  const Layout& L = a.layout;
  for (int64_t b = b0; b < b1; ++b) {
    ClipPlan P;
    P.in_start = a.in.start(b);
    P.in_len = a.in.len(b);
    P.out_start = a.out.start(b);
    P.out_len = a.out.len(b);
    P.out_rows = a.out.rows_owned(b);
    if (P.out_len > P.out_rows) P.out_len = P.out_rows;
    P.clip_id = static_cast<uint64_t>(a.clip_ids[b]);
    plan_affine(&P, a.params + b * kNumParams);
    if (kNormalize) P.norm = clip_norm(L, pose, a.conf, P.in_start, P.in_len, a.C, a.thr);
    for (int64_t i = 0; i < P.out_rows; ++i) {
      const int64_t row = P.out_start + i;
      for (int j = 0; j < L.J; ++j)
        a.out_conf[row * L.J + j] = augment_joint<T, kNormalize>(L, P, a.elem, a.seed, pose, a.conf, i, j, a.C,
                                                                 a.thr, out, (row * L.J + j) * a.C);
    }
  }
}

}  // namespace

void normalize_cpu(const NormalizeArgs& a, int64_t b0, int64_t b1) {
  if (a.half) normalize_range<uint16_t>(a, b0, b1);
  else normalize_range<float>(a, b0, b1);
}

void sample_params_cpu(const int64_t* clip_ids, int64_t b0, int64_t b1, uint64_t seed, const double* cfg,
                       int num_parts, double* params) {
  const SampleConfig c = make_sample_config(cfg);
  for (int64_t b = b0; b < b1; ++b)
    sample_params(c, num_parts, seed, static_cast<uint64_t>(clip_ids[b]), params + b * kNumParams);
}

void augment_cpu(const AugmentArgs& a, int64_t b0, int64_t b1) {
  if (a.half) {
    if (a.normalize) augment_range<uint16_t, true>(a, b0, b1);
    else augment_range<uint16_t, false>(a, b0, b1);
  } else {
    if (a.normalize) augment_range<float, true>(a, b0, b1);
    else augment_range<float, false>(a, b0, b1);
  }
}

int64_t cuda_workspace_bytes(int64_t batch) { return batch * static_cast<int64_t>(sizeof(ClipPlan)); }

}  // namespace pose
}  // namespace slpfast
