// CPU implementation of csrc/core/pose_api.h. Per clip: statistics with the shared per-joint
// math (pose_math.h), then frame-at-a-time loops (pose_cpu_frames.h) with the same arithmetic,
// compiled twice (baseline and AVX2 + F16C, chosen at run time). No threads of its own: the
// torch binding parallelises over clips with at::parallel_for.
#include "pose_api.h"
#include "pose_cpu_frames.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

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
  // Latency-bound (a few joints per frame, each frame in other cache lines): prefetch the
  // lines of the joints it reads a few frames ahead.
  constexpr int64_t kAhead = 8;
  auto prefetch_joint = [&](int64_t row, int j) {
    __builtin_prefetch(conf + row * L.J + j, 0, 3);
    __builtin_prefetch(pose + (row * L.J + j) * C, 0, 3);
  };
  for (int64_t t = 0; t < len; ++t) {
    if (t + kAhead < len) {
      const int64_t row = start + t + kAhead;
      prefetch_joint(row, L.sa);
      prefetch_joint(row, L.sb);
      for (int k = 0; k < 2 * L.num_pairs; ++k) prefetch_joint(row, L.pairs[k]);
    }
    stats_add_frame(&acc, L, pose, conf, start + t, C, thr);
  }
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

// ---- frame-at-a-time paths (pose_cpu_frames.h): every source frame is converted and
// normalized once, every output frame computed with branch-free loops over the joints.

template <typename T, int C, bool kSimd>
SLP_CPU_INLINE void normalize_range(const NormalizeArgs& a, int64_t b0, int64_t b1) {
  const T* pose = static_cast<const T*>(a.pose);
  T* out = static_cast<T*>(a.out_pose);
  const Layout& L = a.layout;
  const int J = L.J;
  cpu::Frame raw(J), norm(J);  // norm is written by write_frame's scratch too
  cpu::ClipTables tb(J);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t start = a.seqs.start(b), len = a.seqs.len(b), owned = a.seqs.rows_owned(b);
    const ClipNorm n = clip_norm(L, pose, a.conf, start, len, C, a.thr);
    write_info(a.info, b, n);
    tb.set_norm(L, n);
    for (int64_t row = start; row < start + len; ++row) {
      cpu::load_frame<T, C, kSimd>(J, pose, a.conf, row, a.thr, n.centre, &raw);
      cpu::normalize_frame<C>(J, tb, raw, &norm);
      cpu::write_frame<T, C, kSimd>(J, norm, out + row * J * C, a.out_conf + row * J);
    }
    std::fill(out + (start + len) * J * C, out + (start + owned) * J * C, T(0));  // padding rows
    std::fill(a.out_conf + (start + len) * J, a.out_conf + (start + owned) * J, 0.0f);
  }
}

// Source frames t0 and t0 + 1 of the current output frame, normalized (or masked raw).
template <typename T, int C, bool kNormalize, bool kSimd>
struct SourceFrames {
  cpu::Frame raw, slot0, slot1;
  explicit SourceFrames(int J) : raw(J), slot0(J), slot1(J) {}
  void reset() { slot0.t = slot1.t = -1; }

  // Frame t of the clip; never evicts frame `keep`.
  SLP_CPU_INLINE const cpu::Frame& get(const AugmentArgs& a, const ClipPlan& P, const cpu::ClipTables& tb, int64_t t, int64_t keep) {
    if (slot0.t == t) return slot0;
    if (slot1.t == t) return slot1;
    cpu::Frame& s = slot0.t == keep ? slot1 : slot0;
    const int J = a.layout.J;
    const double zero[kMaxC] = {0.0, 0.0, 0.0};
    cpu::load_frame<T, C, kSimd>(J, static_cast<const T*>(a.pose), a.conf, P.in_start + t, a.thr,
                          kNormalize ? P.norm.centre : zero, &raw);
    if (kNormalize) cpu::normalize_frame<C>(J, tb, raw, &s);
    else cpu::mask_frame(J, raw, &s);
    s.t = t;
    return s;
  }
};

template <typename T, int C, bool kNormalize, bool kSimd>
SLP_CPU_INLINE void augment_range(const AugmentArgs& a, int64_t b0, int64_t b1) {
  const T* pose = static_cast<const T*>(a.pose);
  T* out = static_cast<T*>(a.out_pose);
  const Layout& L = a.layout;
  const int J = L.J;
  SourceFrames<T, C, kNormalize, kSimd> frames(J);
  cpu::Frame row_buf(J);
  cpu::ClipTables tb(J);
#if SLP_X86_SIMD
  cpu::DirectTables dt(kSimd && kNormalize ? J : 0);
  cpu::DirectScratch scratch(kSimd && kNormalize ? J : 0);
#endif
  for (int64_t b = b0; b < b1; ++b) {
    ClipPlan P;
    P.in_start = a.in.start(b);
    P.in_len = a.in.len(b);
    P.out_start = a.out.start(b);
    P.out_len = a.out.len(b);
    P.out_rows = a.out.rows_owned(b);
    if (P.out_len > P.out_rows) P.out_len = P.out_rows;
    if (P.in_len <= 0) P.out_len = 0;
    P.clip_id = static_cast<uint64_t>(a.clip_ids[b]);
    plan_affine(&P, a.params + b * kNumParams);
    if (kNormalize) {
      P.norm = clip_norm(L, pose, a.conf, P.in_start, P.in_len, C, a.thr);
      tb.set_norm(L, P.norm);
    }
    tb.set_augment(L, P);
    frames.reset();
    bool done = false;
#if SLP_X86_SIMD
    if constexpr (kSimd && kNormalize) {
      const bool extras = a.elem.frame_drop_p > 0.0 || a.elem.joint_drop_p > 0.0 || a.elem.jitter_std > 0.0;
      if (P.out_len == P.in_len && !extras) {  // fused single pass (same arithmetic, see pose_cpu_frames.h)
        dt.set(tb, C);
        for (int64_t i = 0; i < P.out_len; ++i) {
          const int64_t row = P.out_start + i, src_row = P.in_start + i;
          cpu::augment_row_fast<T, C>(J, dt, P, pose + src_row * J * C, a.conf + src_row * J, a.thr, &scratch,
                                      out + row * J * C, a.out_conf + row * J);
        }
        done = true;
      }
    }
#endif
    if (!done && P.out_len == P.in_len) {  // not resampled: source frame i -> output frame i, read once
      const double zero[kMaxC] = {0.0, 0.0, 0.0};
      for (int64_t i = 0; i < P.out_len; ++i) {
        const int64_t row = P.out_start + i;
        cpu::load_frame<T, C, kSimd>(J, pose, a.conf, P.in_start + i, a.thr, kNormalize ? P.norm.centre : zero,
                                     &frames.raw);
        cpu::augment_frame_direct<C, kNormalize>(L, P, tb, a.elem, a.seed, i, frames.raw, &row_buf);
        cpu::write_frame<T, C, kSimd>(J, row_buf, out + row * J * C, a.out_conf + row * J);
      }
    }
    for (int64_t i = done || P.out_len == P.in_len ? P.out_len : 0; i < P.out_len; ++i) {
      const int64_t row = P.out_start + i;
      const SourcePos sp = source_pos(P, i);
      const cpu::Frame& f0 = frames.get(a, P, tb, sp.t0, sp.t0 + 1);
      const cpu::Frame* f1 = sp.has1 ? &frames.get(a, P, tb, sp.t0 + 1, sp.t0) : nullptr;
      cpu::augment_frame(L, P, tb, a.elem, a.seed, i, sp, f0, f1, C, &row_buf);
      cpu::write_frame<T, C, kSimd>(J, row_buf, out + row * J * C, a.out_conf + row * J);
    }
    const int64_t end = P.out_start + P.out_rows, first_pad = P.out_start + P.out_len;
    std::fill(out + first_pad * J * C, out + end * J * C, T(0));
    std::fill(a.out_conf + first_pad * J, a.out_conf + end * J, 0.0f);
  }
}

// Entry points per instruction set: the baseline build and one compiled for AVX2 + F16C,
// picked at run time (SLPFAST_POSE_NO_SIMD=1 forces the baseline, e.g. to compare the two).
bool use_simd() {
#if SLP_X86_SIMD
  static const bool cpu_ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  const char* off = std::getenv("SLPFAST_POSE_NO_SIMD");
  return cpu_ok && !(off != nullptr && off[0] == '1');
#else
  return false;
#endif
}

template <typename T, int C>
void normalize_base(const NormalizeArgs& a, int64_t b0, int64_t b1) { normalize_range<T, C, false>(a, b0, b1); }
template <typename T, int C, bool kNormalize>
void augment_base(const AugmentArgs& a, int64_t b0, int64_t b1) {
  augment_range<T, C, kNormalize, false>(a, b0, b1);
}
#if SLP_X86_SIMD
template <typename T, int C>
SLP_AVX2 void normalize_simd(const NormalizeArgs& a, int64_t b0, int64_t b1) {
  normalize_range<T, C, true>(a, b0, b1);
}
template <typename T, int C, bool kNormalize>
SLP_AVX2 void augment_simd(const AugmentArgs& a, int64_t b0, int64_t b1) {
  augment_range<T, C, kNormalize, true>(a, b0, b1);
}
#endif

template <typename T, int C>
void normalize_dispatch(const NormalizeArgs& a, int64_t b0, int64_t b1) {
#if SLP_X86_SIMD
  if (use_simd()) return normalize_simd<T, C>(a, b0, b1);
#endif
  normalize_base<T, C>(a, b0, b1);
}

template <typename T, int C>
void augment_dispatch(const AugmentArgs& a, int64_t b0, int64_t b1) {
#if SLP_X86_SIMD
  if (use_simd()) {
    if (a.normalize) augment_simd<T, C, true>(a, b0, b1);
    else augment_simd<T, C, false>(a, b0, b1);
    return;
  }
#endif
  if (a.normalize) augment_base<T, C, true>(a, b0, b1);
  else augment_base<T, C, false>(a, b0, b1);
}

}  // namespace

void normalize_cpu(const NormalizeArgs& a, int64_t b0, int64_t b1) {
  if (a.half) {
    if (a.C == 2) normalize_dispatch<uint16_t, 2>(a, b0, b1);
    else normalize_dispatch<uint16_t, 3>(a, b0, b1);
  } else {
    if (a.C == 2) normalize_dispatch<float, 2>(a, b0, b1);
    else normalize_dispatch<float, 3>(a, b0, b1);
  }
}

void sample_params_cpu(const int64_t* clip_ids, int64_t b0, int64_t b1, uint64_t seed, const double* cfg,
                       int num_parts, double* params) {
  const SampleConfig c = make_sample_config(cfg);
  for (int64_t b = b0; b < b1; ++b)
    sample_params(c, num_parts, seed, static_cast<uint64_t>(clip_ids[b]), params + b * kNumParams);
}

void augment_cpu(const AugmentArgs& a, int64_t b0, int64_t b1) {
  if (a.half) {
    if (a.C == 2) augment_dispatch<uint16_t, 2>(a, b0, b1);
    else augment_dispatch<uint16_t, 3>(a, b0, b1);
  } else {
    if (a.C == 2) augment_dispatch<float, 2>(a, b0, b1);
    else augment_dispatch<float, 3>(a, b0, b1);
  }
}

int64_t cuda_workspace_bytes(int64_t batch) { return batch * static_cast<int64_t>(sizeof(ClipPlan)); }

}  // namespace pose
}  // namespace slpfast
