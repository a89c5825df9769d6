// CPU implementation of csrc/core/pose_api.h: plain loops over clips, frames and joints
// calling the shared math of pose_math.h / pose_augment.h. No threads of its own (the torch
// binding parallelises over clips with at::parallel_for).
#include "pose_api.h"

#include <algorithm>
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

// ---- frame-at-a-time helpers: each source frame is converted and normalized once, every
// output row is computed into a double buffer and rounded in one tight loop. The arithmetic
// is that of norm_joint / augment_joint (shared with CUDA); only the order of work differs.

inline double to_double(float x) { return static_cast<double>(x); }
inline double to_double(uint16_t x) { return static_cast<double>(half_to_float(x)); }

// Rounds n doubles to the storage type (tight loop, vectorizable).
inline void round_out(const double* v, float* out, int64_t n) {
  for (int64_t e = 0; e < n; ++e) out[e] = static_cast<float>(v[e]);
}
inline void round_out(const double* v, uint16_t* out, int64_t n) {
  for (int64_t e = 0; e < n; ++e) out[e] = float_to_half(static_cast<float>(v[e]));
}
inline bool stored_finite(float x) { return finite(static_cast<double>(x)); }
inline bool stored_finite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

// Raw values (J*C) and validity (J) of the joints of `row`.
template <typename T, int C>
void load_frame(const Layout& L, const T* pose, const float* conf, int64_t row, double thr, double* raw,
                uint8_t* ok) {
  const T* src = pose + row * L.J * C;
  for (int e = 0; e < L.J * C; ++e) raw[e] = to_double(src[e]);
  const float* cr = conf + row * L.J;
  for (int j = 0; j < L.J; ++j) {
    unsigned good = static_cast<double>(cr[j]) > thr;
    for (int k = 0; k < C; ++k) good &= static_cast<unsigned>(finite(raw[j * C + k]));
    ok[j] = static_cast<uint8_t>(good);
  }
}

// norm_joint on a loaded frame.
template <int C>
__attribute__((always_inline)) inline bool norm_from_frame(const Layout& L, const ClipNorm& N, const double* raw, const uint8_t* ok, int j,
                     double out[kMaxC]) {
  if (!ok[j]) return false;
  const int a = L.anchor[j];
  const double* ref = N.centre;
  if (a >= 0) {
    if (!ok[a]) return false;
    ref = raw + a * C;
  }
  const int g = L.scale_group[j];
  const double inv = g < 0 ? N.inv_scale : N.inv_pair[g];
  for (int k = 0; k < C; ++k) out[k] = (raw[j * C + k] - ref[k]) * inv;
  return true;
}

// Writes one output row from v (J*C, zeros where !ok) and cf: rounds, then flags joints whose
// rounded value is not finite (rare: checked for the whole row first, branch-free).
template <typename T, int C>
void write_row(const double* v, const double* cf, const uint8_t* ok, int J, T* out, float* out_conf) {
  round_out(v, out, static_cast<int64_t>(J) * C);
  unsigned any_bad = 0;
  for (int e = 0; e < J * C; ++e) any_bad |= static_cast<unsigned>(!stored_finite(out[e]));
  for (int j = 0; j < J; ++j) out_conf[j] = ok[j] ? static_cast<float>(cf[j]) : 0.0f;
  if (!any_bad) return;
  for (int j = 0; j < J; ++j) {
    bool good = true;
    for (int k = 0; k < C; ++k) good = good && stored_finite(out[j * C + k]);
    if (good) continue;
    for (int k = 0; k < C; ++k) out[j * C + k] = T(0);
    out_conf[j] = 0.0f;
  }
}

struct RowBuffers {
  std::vector<double> raw, v, cf;
  std::vector<uint8_t> raw_ok, ok;
  RowBuffers(int J, int C)
      : raw(static_cast<size_t>(J) * C), v(static_cast<size_t>(J) * C), cf(J), raw_ok(J), ok(J) {}
};

template <typename T, int C>
void normalize_range(const NormalizeArgs& a, int64_t b0, int64_t b1) {
  const T* pose = static_cast<const T*>(a.pose);
  T* out = static_cast<T*>(a.out_pose);
  const Layout& L = a.layout;
  RowBuffers buf(L.J, C);
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t start = a.seqs.start(b), len = a.seqs.len(b), owned = a.seqs.rows_owned(b);
    const ClipNorm n = clip_norm(L, pose, a.conf, start, len, C, a.thr);
    write_info(a.info, b, n);
    for (int64_t t = 0; t < len; ++t) {
      const int64_t row = start + t;
      load_frame<T, C>(L, pose, a.conf, row, a.thr, buf.raw.data(), buf.raw_ok.data());
      for (int j = 0; j < L.J; ++j) {
        double* v = &buf.v[j * C];
        buf.ok[j] = norm_from_frame<C>(L, n, buf.raw.data(), buf.raw_ok.data(), j, v);
        if (!buf.ok[j])
          for (int k = 0; k < C; ++k) v[k] = 0.0;
        buf.cf[j] = a.conf[row * L.J + j];
      }
      write_row<T, C>(buf.v.data(), buf.cf.data(), buf.ok.data(), L.J, out + row * L.J * C, a.out_conf + row * L.J);
    }
    for (int64_t t = len; t < owned; ++t) {  // padding rows
      std::fill(out + (start + t) * L.J * C, out + (start + t + 1) * L.J * C, T(0));
      std::fill(a.out_conf + (start + t) * L.J, a.out_conf + (start + t + 1) * L.J, 0.0f);
    }
  }
}

// Two source frames (t0 and t0 + 1 of the current output frame), normalized or raw.
template <typename T, int C, bool kNormalize>
struct FrameCache {
  struct Slot {
    int64_t t = -1;
    std::vector<double> v, cf;
    std::vector<uint8_t> ok;
  };
  Slot slot[2];
  std::vector<double> raw;
  std::vector<uint8_t> raw_ok;

  explicit FrameCache(int J) : raw(static_cast<size_t>(J) * C), raw_ok(static_cast<size_t>(J)) {
    for (Slot& s : slot) {
      s.v.resize(static_cast<size_t>(J) * C);
      s.cf.resize(static_cast<size_t>(J));
      s.ok.resize(static_cast<size_t>(J));
    }
  }
  void reset() { slot[0].t = slot[1].t = -1; }

  // Frame t of the clip; never evicts frame `keep`.
  const Slot& get(const Layout& L, const ClipPlan& P, const T* pose, const float* conf, double thr, int64_t t,
                  int64_t keep) {
    for (Slot& s : slot)
      if (s.t == t) return s;
    Slot& s = slot[0].t == keep ? slot[1] : slot[0];
    const int64_t row = P.in_start + t;
    load_frame<T, C>(L, pose, conf, row, thr, raw.data(), raw_ok.data());
    for (int j = 0; j < L.J; ++j) {
      bool good;
      if (kNormalize) {
        good = norm_from_frame<C>(L, P.norm, raw.data(), raw_ok.data(), j, &s.v[j * C]);
      } else {
        good = raw_ok[j] != 0;
        for (int k = 0; k < C; ++k) s.v[j * C + k] = raw[j * C + k];
      }
      s.ok[j] = good;
      s.cf[j] = good ? static_cast<double>(conf[row * L.J + j]) : 0.0;
    }
    s.t = t;
    return s;
  }
};

template <typename T, int C, bool kNormalize>
void augment_range(const AugmentArgs& a, int64_t b0, int64_t b1) {
  const T* pose = static_cast<const T*>(a.pose);
  T* out = static_cast<T*>(a.out_pose);
  const Layout& L = a.layout;
  FrameCache<T, C, kNormalize> cache(L.J);
  RowBuffers buf(L.J, C);
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
    if (kNormalize) P.norm = clip_norm(L, pose, a.conf, P.in_start, P.in_len, C, a.thr);
    cache.reset();
    for (int64_t i = 0; i < P.out_rows; ++i) {
      const int64_t row = P.out_start + i;
      if (i >= P.out_len || P.in_len <= 0) {
        std::fill(out + row * L.J * C, out + (row + 1) * L.J * C, T(0));
        std::fill(a.out_conf + row * L.J, a.out_conf + (row + 1) * L.J, 0.0f);
        continue;
      }
      const SourcePos sp = source_pos(P, i);
      const auto& f0 = cache.get(L, P, pose, a.conf, a.thr, sp.t0, sp.t0 + 1);
      const auto* f1 = sp.has1 ? &cache.get(L, P, pose, a.conf, a.thr, sp.t0 + 1, sp.t0) : nullptr;
      for (int j = 0; j < L.J; ++j) {
        double* v = &buf.v[j * C];
        for (int k = 0; k < C; ++k) v[k] = 0.0;
        buf.ok[j] = 0;
        buf.cf[j] = 0.0;
        if (dropped(L, P, a.elem, a.seed, i, j)) continue;
        const int src = P.flip ? L.flip_perm[j] : j;
        double w[kMaxC] = {0.0, 0.0, 0.0};
        for (int k = 0; k < C; ++k) w[k] = f0.v[src * C + k];
        double cf = f0.cf[src];
        bool ok = f0.ok[src] != 0;
        if (f1 != nullptr) {
          double w1[kMaxC] = {0.0, 0.0, 0.0};
          for (int k = 0; k < C; ++k) w1[k] = f1->v[src * C + k];
          ok = combine(w, &cf, ok, w1, f1->cf[src], f1->ok[src] != 0, sp.w, C);
        }
        if (!ok) continue;
        transform_joint(P, a.elem, a.seed, static_cast<uint32_t>(i * L.J + j), C, w);
        for (int k = 0; k < C; ++k) v[k] = w[k];
        buf.ok[j] = 1;
        buf.cf[j] = cf;
      }
      write_row<T, C>(buf.v.data(), buf.cf.data(), buf.ok.data(), L.J, out + row * L.J * C, a.out_conf + row * L.J);
    }
  }
}

template <typename T, int C>
void augment_dispatch(const AugmentArgs& a, int64_t b0, int64_t b1) {
  if (a.normalize) augment_range<T, C, true>(a, b0, b1);
  else augment_range<T, C, false>(a, b0, b1);
}

}  // namespace

void normalize_cpu(const NormalizeArgs& a, int64_t b0, int64_t b1) {
  if (a.half) {
    if (a.C == 2) normalize_range<uint16_t, 2>(a, b0, b1);
    else normalize_range<uint16_t, 3>(a, b0, b1);
  } else {
    if (a.C == 2) normalize_range<float, 2>(a, b0, b1);
    else normalize_range<float, 3>(a, b0, b1);
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
